"""Fixtures: the plugin must be installed (its entry point is what is under test), estimators
trained here, model repositories on disk, and real ``servecore serve`` processes (see
``sklearn_support``).
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import pytest
from sklearn_support import HERE, Failed, Repository, ServerProcess, Trained, environ, start

SOURCE = HERE.parent / "src" / "servecore_sklearn"
DISTRIBUTION = "servecore-sklearn"


@pytest.fixture(scope="session")
def installed() -> metadata.Distribution:
    """The installed distribution; fails (not skips) when it is missing or is another checkout."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{DISTRIBUTION} is not installed: pip install -e plugins/servecore-sklearn")
    points = [ep for ep in dist.entry_points if ep.group == "servecore"]
    assert [(ep.name, ep.value) for ep in points] == [("sklearn", "servecore_sklearn")]
    import servecore_sklearn

    # Installed like a user would (a copy in site-packages) or editable: either way the code that
    # runs must be this checkout's, not a stale install of another version.
    module_file = Path(servecore_sklearn.__file__).resolve()
    if module_file.read_bytes() != (SOURCE / "__init__.py").read_bytes():
        pytest.fail(f"{DISTRIBUTION} at {module_file} differs from this checkout's {SOURCE}; reinstall it")
    return dist


@pytest.fixture(scope="session")
def trained() -> dict[str, Trained]:
    """Small estimators, trained once per session."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris, make_regression
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn_test_estimators import PredictProbaOnly, ProbaPropertyFails

    iris = load_iris()
    X, y = iris.data, iris.target
    labels = np.asarray(iris.target_names)[y]  # strings: 'setosa', ...
    Xr, yr = make_regression(n_samples=60, n_features=5, noise=0.5, random_state=0)
    Y2 = np.column_stack([yr, -2 * yr + 1])
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = pd.DataFrame(X, columns=columns)
    scaled_by_name = make_pipeline(
        ColumnTransformer([("petals", StandardScaler(), ["petal_length", "petal_width"])], remainder="passthrough"),
        LogisticRegression(max_iter=1000),
    )
    rows = X[::7]  # 22 rows, some of each class
    return {
        "iris": Trained(LogisticRegression(max_iter=1000).fit(X, y), rows),
        "pipeline": Trained(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), rows),
        "labels": Trained(LogisticRegression(max_iter=1000).fit(X, labels), rows),
        "regressor": Trained(Ridge(alpha=0.5).fit(Xr, yr), Xr[:9]),
        "two_targets": Trained(LinearRegression().fit(Xr, Y2), Xr[:9]),
        "forest": Trained(RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), rows),
        "frame": Trained(scaled_by_name.fit(frame, y), rows),
        "proba_only": Trained(PredictProbaOnly(max_iter=1000).fit(X, y), rows),
        "proba_property_fails": Trained(ProbaPropertyFails(max_iter=1000).fit(X, y), rows),
    }


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    return Repository(tmp_path / "repo")


# -- servers -----------------------------------------------------------------------------------------


@pytest.fixture
def serve(installed: metadata.Distribution, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``serve(*args, env={...})``: a ready ``servecore serve``, stopped after the test."""
    servers: list[ServerProcess] = []

    def run(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = start(list(args), tmp_path / "logs", env)
        servers.append(server)
        return server

    yield run
    for server in servers:
        server.stop()


@pytest.fixture
def serve_fails(installed: metadata.Distribution, tmp_path: Path) -> Callable[..., Failed]:
    """``serve_fails(*args, env={...})``: a ``servecore serve`` expected to exit; its code and stderr."""

    def run(*args: str, env: dict[str, str] | None = None) -> Failed:
        server = ServerProcess(list(args), log_dir=tmp_path / "logs")
        server.env = environ(env)
        server.start(expect_ready=False)
        try:
            code = server.wait(120)
        except subprocess.TimeoutExpired:
            server.stop()
            pytest.fail(f"servecore serve {' '.join(args)} did not exit:\n{server.stderr()}")
        return Failed(code, server.stderr())

    return run


@pytest.fixture
def run_cli(installed: metadata.Distribution) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, env={...})``: a ``servecore`` command, its output captured."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servecore", *args],
            env=environ(env), capture_output=True, text=True, timeout=120, check=False,
        )

    return run
