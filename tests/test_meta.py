"""The plugin contract is complete: every hook is documented, specified and tested.

Adding a hook to ``servecore.hookspecs`` without a section in ``docs/plugin_hooks.md``, a
``:param:`` for each argument or a ``test_hook_<name>`` test fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pluggy
import pytest

from servecore import hookspecs
from servecore.plugins import DEFAULT_PLUGINS, get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugin_hooks.md"
TESTS = ROOT / "tests"


def hook_callers() -> dict[str, pluggy.HookCaller]:
    """Every hook the plugin manager has a spec for, by name."""
    pm = get_plugin_manager(load_entrypoints=False)
    callers = {}
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None:
            callers[name] = caller
    return callers


def signature(caller: pluggy.HookCaller) -> str:
    """``name(arg1, arg2)``, as the docs heading must spell it."""
    assert caller.spec is not None
    return f"{caller.name}({', '.join(caller.spec.argnames)})"


def documented_signatures() -> set[str]:
    """The ``name(args)`` of every hook heading in the docs."""
    return set(re.findall(r"^#+ (servecore_\w+\([^)]*\))\s*$", DOCS.read_text(encoding="utf-8"), re.M))


def hook_test_names() -> set[str]:
    """Every ``test_hook_*`` function defined anywhere under tests/."""
    names: set[str] = set()
    for path in TESTS.rglob("*.py"):
        names.update(re.findall(r"^\s*(?:async\s+)?def (test_hook_\w+)\(", path.read_text(encoding="utf-8"), re.M))
    return names


def has_test(hook: str, test_names: set[str]) -> bool:
    return any(name == f"test_hook_{hook}" or name.startswith(f"test_hook_{hook}_") for name in test_names)


CALLERS = hook_callers()
HOOKS = sorted(CALLERS)


def test_hooks_are_found() -> None:
    assert HOOKS, "no hookspecs found"
    assert all(name.startswith("servecore_") for name in HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hook_is_documented(hook: str) -> None:
    expected = signature(CALLERS[hook])
    assert expected in documented_signatures(), f"docs/plugin_hooks.md has no heading '{expected}'"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hook_has_test(hook: str) -> None:
    assert has_test(hook, hook_test_names()), f"no test function named test_hook_{hook} under tests/"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hookspec_documents_every_parameter(hook: str) -> None:
    spec = CALLERS[hook].spec
    assert spec is not None
    doc = spec.function.__doc__ or ""
    assert doc.strip(), f"hookspec {hook} has no docstring"
    missing = [arg for arg in spec.argnames if f":param {arg}:" not in doc]
    assert not missing, f"hookspec {hook} has no ':param name:' for {', '.join(missing)}"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hookspec_is_typed(hook: str) -> None:
    spec = CALLERS[hook].spec
    assert spec is not None
    annotations = spec.function.__annotations__
    assert set(spec.argnames) <= set(annotations), f"hookspec {hook} has untyped arguments"
    assert "return" in annotations


def test_docs_document_no_stale_hooks() -> None:
    """Every hook heading in the docs is a real hook with that exact signature."""
    current = {signature(c) for c in CALLERS.values()}
    assert documented_signatures() <= current


def test_every_hookspec_is_registered() -> None:
    """Each function in hookspecs.py marked as a spec is known to the plugin manager."""
    marked = {
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")
    }
    assert marked == set(HOOKS)


def test_docs_cover_plugin_authoring() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for needle in (
        "[project.entry-points.servecore]",
        "from servecore import hookimpl",
        "DEFAULT_PLUGINS",
        "SERVECORE_DISABLE_PLUGINS",
        "SERVECORE_TRACE_PLUGINS",
        "servecore plugins",
    ):
        assert needle in text, needle
    for name, module in DEFAULT_PLUGINS:
        assert f"`{name}`" in text and module in text, f"built-in plugin {name} is not documented"


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOCS.read_text(encoding="utf-8"), re.M | re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_docs_examples_run(index: int) -> None:
    """Every Python example in the docs runs, and its hook implementations are valid plugins."""
    source = _python_blocks()[index]
    namespace: dict[str, object] = {"__name__": f"docs_example_{index}"}
    exec(compile(source, f"docs/plugin_hooks.md example {index}", "exec"), namespace)  # noqa: S102
    impls = {name for name, value in namespace.items() if hasattr(value, f"{hookspecs.PROJECT}_impl")}
    if impls:
        plugin = type("Example", (), {name: staticmethod(namespace[name]) for name in impls})  # type: ignore[misc]
        # registers and validates against the specs (check_pending catches a misspelled name)
        get_plugin_manager(load_entrypoints=False, extra_plugins=[(f"example-{index}", plugin)])
