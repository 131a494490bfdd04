"""PyTorch test models: small modules, scripted (``.pt``) or exported (``.pt2``) into a directory.

This directory has no ``__init__.py`` on purpose: with one, ``tests/`` on ``sys.path`` (see
tests/conftest.py) would make ``import torch`` find this directory instead of PyTorch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

WIDTH_IN = 4
WIDTH_OUT = 3


class Mlp(nn.Module):
    """x [batch, 4] -> relu(x @ W1 + b1) @ W2 + b2 [batch, 3], fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(WIDTH_IN, 8)
        self.out = nn.Linear(8, WIDTH_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class Pair(nn.Module):
    """Two inputs, a tuple of two outputs: (a + b, a * b)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a * b


class Named(nn.Module):
    """A dict of outputs: {"total": x.sum(-1), "doubled": x * 2}."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": x.sum(-1), "doubled": x * 2}


class Identity(nn.Module):
    """Returns its input unchanged (any dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Copy(nn.Module):
    """Returns a copy of its input (an exported program cannot return an input as it is)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class Raising(nn.Module):
    """x + 1, but raises when any element is negative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise RuntimeError("negative input refused")
        return x + 1


def script(module: nn.Module, path: Path) -> Path:
    """Save *module* as TorchScript (``torch.jit.script``; deprecated since torch 2.13, hence the filter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def export(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, *, batch: bool = True) -> Path:
    """Save *module* as a torch.export program, the first dimension of every input dynamic if *batch*."""
    dynamic: Any = None
    if batch:
        rows = torch.export.Dim("batch", min=0)
        dynamic = tuple({0: rows} for _ in example)
    program = torch.export.export(module.eval(), example, dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


def example(dtype: torch.dtype, rows: int = 2, width: int = 3) -> torch.Tensor:
    """A [rows, width] tensor of *dtype* for tracing."""
    if dtype == torch.bool:
        return torch.ones(rows, width, dtype=torch.bool)
    return torch.arange(rows * width).reshape(rows, width).to(dtype)
