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
    modules = [
        Extension(
            "servecore._native.codec",
            ["src/servecore/_native/codec.pyx"],
            define_macros=macros,
            extra_compile_args=["-O3"],
        ),
        Extension(
            "servecore._native.jsondata",
            ["src/servecore/_native/jsondata.pyx"],
            include_dirs=[numpy.get_include()],  # cimports numpy's C API
            define_macros=[*macros, ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "servecore._native.batching",
            ["src/servecore/_native/batching.pyx"],
            define_macros=macros,
            extra_compile_args=["-O3"],
        ),
        Extension(
            "servecore._native.gather",
            ["src/servecore/_native/gather.pyx"],
            include_dirs=[numpy.get_include()],  # cimports numpy's C API
            define_macros=[*macros, ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "servecore._native.drift",
            ["src/servecore/_native/drift.pyx"],
            define_macros=macros,
            extra_compile_args=["-O3"],
        ),
    ]
    print("servecore: building the compiled core:", ", ".join(m.name for m in modules))
    return cythonize(modules, compiler_directives=directives)


setup(ext_modules=_extensions())
