"""The ``servecore`` command as an operator uses it: --version, info, plugins, serve."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from click.testing import CliRunner

from servecore import __version__, cli
from servecore.codec import pure_python_requested
from servecore.dataplane import demo_model_path
from servecore.plugins import DEFAULT_PLUGINS

DEMO = demo_model_path()


def expected_core(environ: dict[str, str] | None = None) -> str:
    """What the active core must be: python when asked for or when the extension is not built."""
    if pure_python_requested(environ):
        return "python"
    return "native" if importlib.util.find_spec("servecore._native.codec") else "python"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m servecore ARGS`` in a child process."""
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "servecore", *args], env=environ, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)


# -- --version -----------------------------------------------------------------------------------


def test_version_names_the_active_core() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"servecore {__version__} (core: {expected_core()}, Python ")
    assert line.endswith(f"Python {sys.version.split()[0]})")


@pytest.mark.parametrize("pure", ["1", "0"])
def test_version_follows_servecore_pure_python(pure: str) -> None:
    environ = {"SERVECORE_PURE_PYTHON": pure}
    result = run("--version", env=environ)
    assert f"(core: {expected_core(environ)}," in result.stdout
    if pure == "1":
        assert "(core: python," in result.stdout


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("serve", "info", "plugins"):
        assert command in result.output


# -- info ------------------------------------------------------------------------------------------


def test_info_text() -> None:
    result = invoke("info", str(DEMO))
    assert result.exit_code == 0, result.output
    text = result.output
    lines = text.splitlines()
    assert lines[0] == f"{DEMO}  (onnxruntime, onnxruntime_onnx)"
    assert "inputs:" in lines and "outputs:" in lines
    assert any(line.split() == ["input", "FP32", "[?,", "64]"] for line in lines), text
    assert any(line.split() == ["logits", "FP32", "[?,", "10]"] for line in lines), text
    facts = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines if line[:1].isalpha() and ":" in line}
    assert facts["opset"] == "ai.onnx:17"
    assert facts["size_bytes"] == str(DEMO.stat().st_size)
    assert facts["sha256"] == hashlib.sha256(DEMO.read_bytes()).hexdigest()
    assert "CPUExecutionProvider" in facts["providers"]
    assert "? marks a dynamic dimension" in text


def test_info_every_dynamic_dimension_is_marked(model_paths: dict[str, Path]) -> None:
    """identity models are [batch, n]: both dims dynamic; fixed.onnx is [2, 3]."""
    dynamic = invoke("info", str(model_paths["identity_int8"])).output
    assert any(line.split() == ["INPUT0", "INT8", "[?,", "?]"] for line in dynamic.splitlines()), dynamic
    fixed = invoke("info", str(model_paths["fixed"])).output
    assert any(line.split() == ["INPUT0", "INT32", "[2,", "3]"] for line in fixed.splitlines()), fixed
    scalar = invoke("info", str(model_paths["scalar"])).output
    assert any(line.split() == ["x", "FP32", "[]"] for line in scalar.splitlines()), scalar


def test_info_json() -> None:
    result = invoke("info", "--json", str(DEMO))
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["path"] == str(DEMO)
    assert (info["backend"], info["platform"]) == ("onnxruntime", "onnxruntime_onnx")
    assert info["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert info["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    props = info["properties"]
    assert props["opset"] == "ai.onnx:17"
    assert props["size_bytes"] == str(DEMO.stat().st_size)
    assert props["sha256"] == hashlib.sha256(DEMO.read_bytes()).hexdigest()
    assert "providers" not in props  # where it could run, not where `info` happened to load it
    assert "CPUExecutionProvider" in info["available_providers"]


def test_info_errors_are_clean(tmp_path: Path) -> None:
    missing = invoke("info", str(tmp_path / "nope.onnx"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    unknown = run("info", str(text))
    assert unknown.returncode == 1
    assert "error: no backend serves 'notes.txt'" in unknown.stderr and "Traceback" not in unknown.stderr
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf")
    broken = run("info", str(corrupt))
    assert broken.returncode == 1
    assert broken.stderr.startswith("error: ") and "Traceback" not in broken.stderr


# -- plugins ---------------------------------------------------------------------------------------


def test_plugins_lists_the_builtins_and_their_hooks() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"core: {expected_core()}"
    for name, hook in [("onnxruntime", "servecore_register_backends"), ("api-keys", "servecore_register_authenticators")]:
        entry = f"{name} {__version__} (built-in)"
        assert entry in lines
        assert lines[lines.index(entry) + 1] == f"    {hook}"


def test_plugins_json() -> None:
    result = invoke("plugins", "--json")
    payload = json.loads(result.output)
    assert payload["core"] == expected_core()
    assert payload["disabled"] == [] or "SERVECORE_DISABLE_PLUGINS" in os.environ
    plugins = {p["name"]: p for p in payload["plugins"]}
    for name, _ in DEFAULT_PLUGINS:
        assert plugins[name]["builtin"] is True
        assert plugins[name]["distribution"] == "servecore"
        assert plugins[name]["version"] == __version__
    assert plugins["onnxruntime"]["hooks"] == ["servecore_register_backends"]


def test_plugins_shows_disabled_ones() -> None:
    result = invoke("plugins", env={"SERVECORE_DISABLE_PLUGINS": "api-keys"})
    lines = result.output.splitlines()
    assert "api-keys (disabled)" in lines
    assert not any(line.startswith("api-keys ") and "(disabled)" not in line for line in lines)
    payload = json.loads(invoke("plugins", "--json", env={"SERVECORE_DISABLE_PLUGINS": "api-keys"}).output)
    assert payload["disabled"] == ["api-keys"]


# -- serve -------------------------------------------------------------------------------------------


def curl_example(stdout: str) -> tuple[str, dict[str, str], bytes]:
    """URL, headers and body of the curl command ``serve`` prints."""
    [line] = [line for line in stdout.splitlines() if line.strip().startswith("curl ")]
    argv = shlex.split(line)
    url = next(a for a in argv if a.startswith("http://"))
    headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
    body = argv[argv.index("-d") + 1].encode()
    return url, headers, body


def test_serve_without_a_model_serves_the_demo(start_server: Callable[..., Any]) -> None:
    server = start_server([])
    out = server.stdout()
    assert f"servecore is serving 1 model(s) on {server.url}" in out
    url, headers, body = curl_example(out)
    assert url == f"{server.url}/v2/models/mlp/infer"
    assert headers == {"Content-Type": "application/json"}
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert (output["name"], output["shape"]) == ("logits", [1, 10])
    metadata = httpx.get(f"{server.url}/v2/models/mlp", timeout=30).json()
    assert metadata["properties"]["sha256"] == hashlib.sha256(DEMO.read_bytes()).hexdigest()


def test_serve_model_name_renames(start_server: Callable[..., Any]) -> None:
    server = start_server(["--model-name", "digits"])
    url, headers, body = curl_example(server.stdout())
    assert url == f"{server.url}/v2/models/digits/infer"
    assert httpx.post(url, content=body, headers=headers, timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/v2/models/digits/ready", timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/v2/models/mlp", timeout=30).status_code == 404


def test_serve_curl_example_with_api_keys(start_server: Callable[..., Any], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("ops:k-42\n")
    server = start_server(["--api-keys-file", str(keys)])
    url, headers, body = curl_example(server.stdout())
    assert headers["Authorization"] == "Bearer <key>"
    assert httpx.post(url, content=body, headers=headers, timeout=30).status_code == 401
    headers["Authorization"] = "Bearer k-42"
    assert httpx.post(url, content=body, headers=headers, timeout=30).status_code == 200


def test_serve_missing_model_file_is_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    result = run("serve", "--port", "0", str(missing))
    assert result.returncode == cli.FAILURE == 1
    assert result.stderr.strip().endswith(f"error: {missing}: no such model file or directory")
    assert "Traceback" not in result.stderr


def test_serve_unknown_file_type_is_a_clean_error(tmp_path: Path) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(b"not a model")
    result = run("serve", "--port", "0", str(model))
    assert result.returncode == 1
    assert "error: no backend serves 'model.h5'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_port_in_use_fails(start_server: Callable[..., Any]) -> None:
    server = start_server([])
    result = run("serve", "--port", str(server.port), timeout=60)
    assert result.returncode != 0


# -- import cost -------------------------------------------------------------------------------------


def test_import_servecore_imports_nothing_heavy() -> None:
    code = (
        "import servecore, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'onnxruntime','starlette','uvicorn','torch','numpy','prometheus_client'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_import_servecore_loads_no_plugins() -> None:
    code = "import servecore, sys; print(sorted(m for m in sys.modules if m.startswith('servecore')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = ast.literal_eval(result.stdout)
    assert not [m for m in loaded if m.startswith(("servecore.builtins", "servecore.plugins", "servecore_"))]
