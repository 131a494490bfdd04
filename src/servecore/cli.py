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
