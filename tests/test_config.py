"""One configuration object: CLI option == ServeConfig field == SERVECORE_* variable.

``servecore serve`` builds its options from :class:`ServeConfig`'s fields; these tests keep the three
in step and check that values given either way reach the config the server is started with.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from typing import Any, Iterator

import click
import pytest
from click.testing import CliRunner

import servecore.server
from servecore import cli
from servecore.config import ServeConfig, config_fields, env_name, from_mapping, option_name
from servecore.errors import ConfigError

FIELDS = {f.name: f for f in config_fields()}
HINTS = typing.get_type_hints(ServeConfig)
PARAMS = {p.name: p for p in cli.serve.params}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SERVECORE_* variable of the test run (SERVECORE_PURE_PYTHON in CI) leaks into parsing."""
    for name in list(os.environ):
        if name.startswith("SERVECORE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ServeConfig]]:
    """Run ``servecore serve`` without a server: the configs it would have served with."""
    configs: list[ServeConfig] = []

    def fake_serve(config: ServeConfig, **kwargs: Any) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr(servecore.server, "serve", fake_serve)
    monkeypatch.setattr(cli, "_setup_logging", lambda level: None)
    yield configs


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, ["serve", *args], env=env, catch_exceptions=False)


def parse(started: list[ServeConfig], *args: str, env: dict[str, str] | None = None) -> ServeConfig:
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return started[-1]


def sample(name: str) -> tuple[Any, str]:
    """A valid non-default value for field *name*, and the same value as command-line text."""
    field, hint = FIELDS[name], HINTS[name]
    special: dict[str, tuple[Any, str]] = {
        "models": (("a.onnx", "b.onnx"), "a.onnx b.onnx"),
        "not_ready_status": (503, "503"),
        "port": (9123, "9123"),
        "host": ("0.0.0.0", "0.0.0.0"),
        "preferred_batch_sizes": ("4,8", "4,8"),
        "pad_inputs": ("x=0,mask=-1.5", "x=0,mask=-1.5"),
        "model_cpus": ("0", "0"),
    }
    if name in special:
        return special[name]
    args = typing.get_args(hint)
    if hint is bool:
        return (not field.default), ("1" if not field.default else "0")
    if typing.get_origin(hint) is typing.Literal:
        value = next(a for a in args if a != field.default)
        return value, value
    base = hint if hint in (int, float, str) else next(a for a in args if a is not type(None))
    if base is int:
        return field.default + 7, str(field.default + 7)
    if base is float:
        return field.default + 1.5, str(field.default + 1.5)
    return f"sample-{name.replace('_', '-')}", f"sample-{name.replace('_', '-')}"


# -- parity ------------------------------------------------------------------------------------


def test_cli_options_are_the_config_fields_in_order() -> None:
    assert list(PARAMS) == list(FIELDS)


def test_option_names_follow_the_fields() -> None:
    for name, param in PARAMS.items():
        if name == "models":
            assert isinstance(param, click.Argument) and param.nargs == -1
            continue
        assert isinstance(param, click.Option), name
        assert param.opts == [option_name(name)], name
        if HINTS[name] is bool:
            assert param.is_flag and param.secondary_opts == ["--no-" + option_name(name)[2:]], name


def test_env_vars_follow_the_fields() -> None:
    assert {name: p.envvar for name, p in PARAMS.items()} == {name: env_name(name) for name in FIELDS}
    assert all(env_name(name) == "SERVECORE_" + name.upper() for name in FIELDS)


def test_defaults_match() -> None:
    for name, param in PARAMS.items():
        if name == "models":
            continue
        assert param.default == FIELDS[name].default, name


def test_types_match() -> None:
    for name, param in PARAMS.items():
        hint = HINTS[name]
        if name == "models":
            continue
        if hint is bool:
            assert isinstance(param.type, click.types.BoolParamType), name
        elif typing.get_origin(hint) is typing.Literal:
            assert isinstance(param.type, click.Choice) and tuple(param.type.choices) == typing.get_args(hint)
        else:
            base = hint if hint in (int, float, str) else next(a for a in typing.get_args(hint) if a is not type(None))
            expected = {int: click.INT, float: click.FLOAT, str: click.STRING}[base]
            assert param.type == expected, name


def test_every_field_has_help_text() -> None:
    for name, field in FIELDS.items():
        text = field.metadata.get("help", "")
        assert len(text) > 5 and text.endswith("."), f"ServeConfig.{name} has no help text"
        param = PARAMS[name]
        if isinstance(param, click.Option):
            assert param.help == text
            assert param.show_envvar


def test_help_shows_every_option_and_env_var() -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--help"], terminal_width=400)
    assert result.exit_code == 0
    for name in FIELDS:
        if name == "models":
            assert "[MODELS]..." in result.output
            continue
        assert option_name(name) in result.output, name
        assert env_name(name) in result.output, name


def test_samples_cover_every_field() -> None:
    """Each field has a valid non-default sample, so the tests below cover new fields too."""
    values = {name: sample(name)[0] for name in FIELDS}
    values["model_name"] = None  # --model-name names a single model; sample() gives two
    config = ServeConfig(**values)
    for name in FIELDS:
        if name != "model_name":
            assert getattr(config, name) != FIELDS[name].default, name


# -- values reach the config -------------------------------------------------------------------


def test_no_options_give_the_defaults(started: list[ServeConfig]) -> None:
    assert parse(started) == ServeConfig()


@pytest.mark.parametrize("name", list(FIELDS))
def test_env_var_reaches_the_config(started: list[ServeConfig], name: str) -> None:
    value, text = sample(name)
    if name == "models":  # a list of paths and URIs (which hold ':'), separated by whitespace
        text = " ".join(value)
    config = parse(started, env={env_name(name): text})
    assert getattr(config, name) == value
    assert config == ServeConfig(**{name: value})


@pytest.mark.parametrize("name", list(FIELDS))
def test_option_reaches_the_config(started: list[ServeConfig], name: str) -> None:
    value, text = sample(name)
    if name == "models":
        args = text.split()
    elif HINTS[name] is bool:
        args = [option_name(name) if value else "--no-" + option_name(name)[2:]]
    else:
        args = [option_name(name), text]
    config = parse(started, *args)
    assert getattr(config, name) == value
    assert config == ServeConfig(**{name: value})


def test_option_beats_env_var(started: list[ServeConfig]) -> None:
    config = parse(started, "--port", "9001", "--no-access-log", env={"SERVECORE_PORT": "9002", "SERVECORE_ACCESS_LOG": "1"})
    assert (config.port, config.access_log) == (9001, False)


def test_bool_env_var_spellings(started: list[ServeConfig]) -> None:
    for text, expected in [("1", True), ("true", True), ("yes", True), ("0", False), ("false", False), ("off", False)]:
        assert parse(started, env={"SERVECORE_ACCESS_LOG": text}).access_log is expected, text


def test_derived_values() -> None:
    config = ServeConfig(disable_plugins=" api-keys, ,onnxruntime", providers="CUDAExecutionProvider, CPUExecutionProvider")
    assert config.disabled_plugins == frozenset({"api-keys", "onnxruntime"})
    assert config.provider_list == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert ServeConfig().provider_list is None
    assert ServeConfig(trt_cache_dir="/x").resolved_trt_cache_dir == "/x"
    assert ServeConfig().resolved_trt_cache_dir.endswith(os.path.join("servecore", "tensorrt"))


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "70000"], {}, "port must be within 0..65535, not 70000"),
        (["--port", "-1"], {}, "port must be within 0..65535"),
        ([], {"SERVECORE_PORT": "65536"}, "port must be within 0..65535"),
        (["--port", "eighty"], {}, "'eighty' is not a valid integer"),
        (["--model-name", "m", "a.onnx", "b.onnx"], {}, "--model-name names a single model"),
        (["--model-name", "a/b"], {}, "must be non-empty and contain no '/'"),
        (["--max-body-size", "0"], {}, "max_body_size must be positive"),
        (["--graceful-timeout", "-1"], {}, "graceful_timeout must be >= 0"),
        (["--not-ready-status", "404"], {}, "not_ready_status must be 400 or 503"),
        (["--log-level", "loud"], {}, "'loud' is not one of"),
        (["--intra-op-threads", "-2"], {}, "intra_op_threads must be >= 0"),
        (["--model-cpus", "0-x"], {}, "model_cpus: '0-x' is not a CPU number or range"),
        (["--gil-switch-interval-us", "0"], {}, "gil_switch_interval_us must be >= 1"),
    ],
)
def test_invalid_values_are_clean_usage_errors(
    started: list[ServeConfig], args: list[str], env: dict[str, str], message: str
) -> None:
    result = invoke(*args, env=env)
    assert result.exit_code == cli.USAGE == 2, result.output
    assert message in result.output
    assert "Usage: " in result.output and "Traceback" not in result.output
    assert started == [], "the server must not start"


def test_invalid_values_exit_2_from_a_shell() -> None:
    """The same through the installed entry point, as an operator sees it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVECORE_")}
    result = subprocess.run(
        [sys.executable, "-m", "servecore", "serve", "--port", "70000"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "Error: port must be within 0..65535, not 70000" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_is_frozen_and_keyword_only() -> None:
    config = ServeConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        ServeConfig(("a.onnx",))  # type: ignore[misc]
    assert config.replace(port=1).port == 1
    with pytest.raises(ConfigError):
        config.replace(port=-5)


def test_from_mapping_refuses_unknown_names() -> None:
    assert from_mapping({"port": 1}) == ServeConfig(port=1)
    with pytest.raises(ConfigError, match="unknown configuration fields: colour, size"):
        from_mapping({"port": 1, "size": 2, "colour": 3})
