"""The ``servecore`` command. ``serve``'s options are generated from :class:`ServeConfig`'s fields,
so an option, its config field and its ``SERVECORE_*`` variable cannot drift apart."""

from __future__ import annotations

import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import click

from servecore._version import __version__
from servecore.config import ServeConfig, config_fields, env_name, from_mapping, option_name
from servecore.errors import ServecoreError

#: Exit codes.
OK, FAILURE, USAGE = 0, 1, 2


def _core() -> str:
    from servecore.codec import load_codec

    return load_codec().implementation


def _version_message() -> str:
    return f"servecore {__version__} (core: {_core()}, Python {sys.version.split()[0]})"


def _field_decorators() -> list[Any]:
    """One click parameter per config field, with its env var shown in ``--help``."""
    hints = typing.get_type_hints(ServeConfig)
    decorators = []
    for f in config_fields():
        hint = hints[f.name]
        help_text = f.metadata.get("help", "")
        envvar = env_name(f.name)
        if f.name == "models":
            decorators.append(click.argument("models", nargs=-1, envvar=envvar, type=str))
            continue
        kwargs: dict[str, Any] = {"envvar": envvar, "show_envvar": True, "help": help_text}
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        args = typing.get_args(hint)
        if hint is bool:
            flag = option_name(f.name)
            decorators.append(click.option(f"{flag}/--no-{flag[2:]}", f.name, default=f.default, **kwargs))
            continue
        if typing.get_origin(hint) is typing.Literal:
            kwargs["type"] = click.Choice(list(args))
        elif hint in (int, float, str):
            kwargs["type"] = hint
        else:  # X | None
            kwargs["type"] = next(a for a in args if a is not type(None))
        decorators.append(click.option(option_name(f.name), f.name, default=f.default, show_default=f.default not in (None, ""), **kwargs))
    return decorators


def _serve_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(_field_decorators()):
        func = decorator(func)
    return func


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", message="%(version)s", prog_name="servecore")
@click.pass_context
def main(ctx: click.Context) -> None:
    """servecore: models behind the Open Inference Protocol (KServe V2 / Triton HTTP)."""


# click's version_option prints the version only; replace its callback to add the active core.
def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit()


for _param in main.params:
    if isinstance(_param, click.Option) and "--version" in _param.opts:
        _param.callback = _print_version


@main.command()
@_serve_options
def serve(**values: Any) -> None:
    """Serve MODELS (ONNX files) over HTTP; with none, serve the bundled demo model.

    Every option can also be set with the environment variable shown next to it.
    """
    values["models"] = tuple(values["models"])
    try:
        config = from_mapping(values)
    except (ServecoreError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    _setup_logging(config.log_level)
    from servecore.server import ABANDONED
    from servecore.server import serve as run_server

    try:
        code = run_server(config, print_fn=click.echo)
    except ServecoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(FAILURE)
    if code == ABANDONED:
        # A model call outlived --graceful-timeout; a normal exit would join its worker thread
        # and so wait for it after all. Leave without running exit handlers.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(model: Path, as_json: bool) -> None:
    """Show MODEL's signature, opset, size, sha256 and the execution providers available here."""
    from servecore.info import describe_model, format_description

    _setup_logging("warning")
    try:
        description = describe_model(model)
    except ServecoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(FAILURE)
    if as_json:
        import orjson

        click.echo(orjson.dumps(description, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_description(description))


def _audit_group() -> click.Group:
    from servecore.audit_cli import audit

    return audit


main.add_command(_audit_group(), "audit")


@main.group()
def profile() -> None:
    """Reference profiles for drift monitoring."""


@profile.command("build")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data", "data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reference data: .npz (one array per input), .npy (one input), .csv or .parquet (columns).",
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Profile JSON to write.")
@click.option("--bins", default=64, show_default=True, help="Quantile bins per numeric feature (ties collapse them).")
@click.option("--top-k", default=256, show_default=True, help="Vocabulary size per categorical feature.")
def profile_build(model: Path, data: Path, output: Path, bins: int, top_k: int) -> None:
    """Run MODEL over reference data and profile its inputs and outputs (serve it with --reference-profile)."""
    from servecore.drift.build import profile_model

    _setup_logging("warning")
    try:
        built, summary = profile_model(model, data, bins=bins, top_k=top_k)
    except ServecoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(FAILURE)
    built.save(output)
    click.echo(
        f"profiled {summary['rows']} rows: {summary['features']} features "
        f"({summary['numeric']} numeric, {summary['categorical']} categorical); sha256 {summary['sha256']}; "
        f"wrote {output}"
    )


@main.group()
def drift() -> None:
    """Drift reports from a running server."""


@drift.command("report")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The server's base URL.")
@click.option("--model", "model_name", required=True, help="The model.")
@click.option("--version", "model_version", default=None, help="A model version (default: the served one).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write.")
@click.option("--api-key", envvar="SERVECORE_API_KEY", default=None, help="Bearer key, when the server wants one.")
def drift_report(url: str, model_name: str, model_version: str | None, output: Path, api_key: str | None) -> None:
    """Write an HTML page of MODEL's latest drift window: each feature's reference and current
    histograms over each other and its statistics, drifting features first."""
    import urllib.error
    import urllib.request

    import orjson

    from servecore.drift.html import render

    path = f"/v2/models/{model_name}" + (f"/versions/{model_version}" if model_version else "") + "/drift"
    request = urllib.request.Request(url.rstrip("/") + path)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            report = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        click.echo(f"error: {url}{path} answered {exc.code}: {detail}", err=True)
        sys.exit(FAILURE)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"error: cannot reach {url}: {exc}", err=True)
        sys.exit(FAILURE)
    output.write_text(render(report), encoding="utf-8")
    click.echo(f"wrote {output}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def plugins(as_json: bool) -> None:
    """List every plugin with its distribution, version and hooks (honours SERVECORE_DISABLE_PLUGINS)."""
    from servecore.plugins import blocked_plugins, get_plugin_manager, list_plugins

    pm = get_plugin_manager()
    infos = list_plugins(pm)
    blocked = blocked_plugins(pm)
    if as_json:
        import dataclasses

        import orjson

        payload = {
            "core": _core(),
            "plugins": [dataclasses.asdict(i) for i in infos],
            "disabled": blocked,
        }
        click.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"core: {_core()}")
    for i in infos:
        kind = "built-in" if i.builtin else i.distribution
        click.echo(f"{i.name} {i.version} ({kind})")
        for hook in i.hooks:
            click.echo(f"    {hook}")
    for name in blocked:
        click.echo(f"{name} (disabled)")
