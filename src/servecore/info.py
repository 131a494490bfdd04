"""``servecore info``: what a model file holds and where it could run, without serving it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servecore.config import ServeConfig
from servecore.models import BackendRegistry
from servecore.plugins import get_plugin_manager
from servecore.types import ModelSource


def describe_model(path: Path) -> dict[str, Any]:
    """Signature and facts of the model at *path*, loaded on the CPU by the backend that claims it."""
    pm = get_plugin_manager()
    registry = BackendRegistry.from_plugins(pm)
    registration = registry.for_path(path)
    config = ServeConfig(providers="CPUExecutionProvider")
    backend = registration.loader(ModelSource(path.name.split(".", 1)[0], "1", path), config)
    try:
        properties = dict(backend.properties)
        properties.pop("providers", None)
        available: list[str] = []
        if registration.name == "onnxruntime":
            from servecore.builtins.onnx_backend import available_providers

            available = available_providers()
        return {
            "path": str(path),
            "backend": registration.name,
            "platform": backend.platform,
            "inputs": [s.as_metadata() for s in backend.inputs],
            "outputs": [s.as_metadata() for s in backend.outputs],
            "properties": properties,
            "available_providers": available,
        }
    finally:
        backend.close()


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def format_description(description: dict[str, Any]) -> str:
    props = description["properties"]
    lines = [f"{description['path']}  ({description['backend']}, {description['platform']})"]
    for title in ("inputs", "outputs"):
        lines.append(f"{title}:")
        for t in description[title]:
            lines.append(f"  {t['name']:<24} {t['datatype']:<6} {_shape(t['shape'])}")
    for key in ("opset", "ir_version", "size_bytes", "sha256", "producer", "description"):
        if key in props:
            lines.append(f"{key + ':':<12} {props[key]}")
    lines.append(f"{'providers:':<12} {', '.join(description['available_providers']) or '-'} (available here)")
    lines.append("? marks a dynamic dimension (-1 in model metadata)")
    return "\n".join(lines)
