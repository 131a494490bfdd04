"""Build the compiled core (``src/servecore/_native``).

Set ``SERVECORE_NO_EXTENSIONS=1`` to build a pure-Python package; set
``SERVECORE_CYTHON_DEBUG=1`` to turn bounds checking and line tracing back on.
Everything else lives in ``pyproject.toml``.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
    if os.environ.get("SERVECORE_NO_EXTENSIONS"):
        print("servecore: SERVECORE_NO_EXTENSIONS set, building the pure-Python package")
        return []
    import numpy
    from Cython.Build import cythonize

    debug = bool(os.environ.get("SERVECORE_CYTHON_DEBUG"))
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
        "linetrace": debug,
    }
    macros = [("CYTHON_TRACE_NOGIL", "1")] if debug else []

    def extension(name: str, *, numpy_api: bool = False) -> Extension:
        """``servecore._native.<name>`` from its .pyx; *numpy_api*: it cimports numpy's C API."""
        return Extension(
            f"servecore._native.{name}",
            [f"src/servecore/_native/{name}.pyx"],
            include_dirs=[numpy.get_include()] if numpy_api else [],
            define_macros=[*macros, ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")] if numpy_api else macros,
            extra_compile_args=["-O3"],
        )

    modules = [
        extension("codec"),
        extension("jsondata", numpy_api=True),
        extension("batching"),
        extension("gather", numpy_api=True),
        extension("drift"),
        extension("headscan"),
    ]
    print("servecore: building the compiled core:", ", ".join(m.name for m in modules))
    return cythonize(modules, compiler_directives=directives)


setup(ext_modules=_extensions())
