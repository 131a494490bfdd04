"""servecore-sklearn through the plugin contract: estimators trained here, saved with joblib and
skops, served by real ``servecore serve`` processes and asked through real clients (tritonclient
and httpx); plus the loader called directly for the cases a server cannot show."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest
import servecore_sklearn
import sklearn
import tritonclient.http as triton
from servecore_sklearn import load_sklearn_model
from sklearn_support import Failed, Repository, Trained, environ, sha256, start
from sklearn_test_estimators import MakesDirectory
from tritonclient.utils import InferenceServerException

from servecore.config import ServeConfig
from servecore.errors import InvalidInputError, ModelLoadError
from servecore.plugins import get_plugin_manager, list_plugins
from servecore.types import ModelSettings, ModelSource, TensorSpec

FP32_TOML = """
[[inputs]]
name = "features"
datatype = "FP32"
shape = [-1, 4]

[[outputs]]
name = "predict_proba"
datatype = "FP32"
shape = [-1, 3]
"""

BATCHING_TOML = """
[batching]
max_batch_size = 32
max_queue_delay_us = 20000
"""


# -- one server serving a repository of every kind of model ---------------------------------------


@dataclass
class Served:
    server: Any
    repo: Repository
    trained: dict[str, Trained]

    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.server.address)


@pytest.fixture(scope="module")
def served(
    installed: metadata.Distribution, trained: dict[str, Trained], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One server (``--model-control none``) over a repository where every model loads."""
    repo = Repository(tmp_path_factory.mktemp("served") / "repo")
    for name in ("iris", "labels", "regressor", "two_targets", "frame"):
        repo.add(name, trained[name].estimator)
    repo.add("pipeline", trained["pipeline"].estimator, toml=BATCHING_TOML)
    repo.add("fp32", trained["iris"].estimator, toml=FP32_TOML)
    repo.add("skops_iris", trained["iris"].estimator, fmt="skops", pin=False)  # default-trusted types only
    repo.add("skops_forest", trained["forest"].estimator, fmt="skops")  # sklearn.tree._tree.Tree: pinned
    repo.add("pickled", trained["pipeline"].estimator, fmt="pkl", toml='backend = "sklearn"')
    repo.add("proba_only", trained["proba_only"].estimator, toml="[warmup]\nenabled = false")
    server = start([str(repo.root)], tmp_path_factory.mktemp("logs"))
    try:
        yield Served(server, repo, trained)
    finally:
        server.stop()


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.server.url, timeout=30) as client:
        yield client


def infer(served: Served, model: str, X: Any, *, datatype: str = "FP64", input_name: str = "input",
          outputs: tuple[str, ...] | None = None, binary: bool = True) -> triton.InferResult:
    data = np.asarray(X, dtype=np.float32 if datatype == "FP32" else np.float64)
    tensor = triton.InferInput(input_name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    wanted = [triton.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs is not None else None
    with served.client() as client:
        return client.infer(model, [tensor], outputs=wanted)


def test_servecore_plugins_lists_it(installed: metadata.Distribution, run_cli: Callable[..., Any]) -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    entry = f"sklearn {installed.version} (servecore-sklearn)"
    assert entry in lines
    assert lines[lines.index(entry) + 1].strip() == "servecore_register_backends"
    payload = json.loads(run_cli("plugins", "--json").stdout)
    [plugin] = [p for p in payload["plugins"] if p["name"] == "sklearn"]
    assert plugin == {
        "name": "sklearn",
        "version": installed.version,
        "distribution": "servecore-sklearn",
        "hooks": ["servecore_register_backends"],
        "builtin": False,
    }


def test_registers_the_sklearn_backend_for_joblib_and_skops(installed: metadata.Distribution) -> None:
    from servecore.models import BackendRegistry

    pm = get_plugin_manager()
    assert "sklearn" in {i.name for i in list_plugins(pm)}
    registry = BackendRegistry.from_plugins(pm)
    assert registry.named("sklearn").suffixes == (".joblib", ".skops")
    assert registry.for_path(Path("m/1/model.joblib")).name == "sklearn"
    assert registry.for_path(Path("m/1/model.skops")).name == "sklearn"
    with pytest.raises(ModelLoadError):  # a .pkl is not claimed by its suffix (see the README)
        registry.for_path(Path("m/1/model.pkl"))


def test_metadata_describes_the_estimator(served: Served, http: httpx.Client) -> None:
    meta = http.get("/v2/models/iris").json()
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    props = meta["properties"]
    assert props["backend"] == "sklearn"
    assert props["estimator"] == "LogisticRegression"
    assert props["sklearn_version"] == sklearn.__version__
    assert props["n_features"] == "4"
    assert props["classes"] == "0,1,2"
    assert props["format"] == "joblib"
    assert props["trust"] == "sha256 pinned in model.toml"
    assert props["sha256"] == sha256(served.repo.artefacts["iris"])
    pipeline = http.get("/v2/models/pipeline").json()["properties"]
    assert pipeline["estimator"] == "Pipeline(StandardScaler, LogisticRegression)"
    labels = http.get("/v2/models/labels").json()
    assert labels["outputs"][0] == {"name": "predict", "datatype": "BYTES", "shape": [-1]}
    assert labels["properties"]["classes"] == "setosa,versicolor,virginica"
    config = http.get("/v2/models/iris/config").json()
    assert config["platform"] == "sklearn" and config["backend"] == "sklearn"
    assert config["max_batch_size"] == 0  # as the onnxruntime backend: the batch dimension is in the shape
    assert config["input"][0]["dims"] == [-1, 4]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(
    ("model", "estimator"),
    [("iris", "iris"), ("pipeline", "pipeline"), ("skops_iris", "iris"), ("skops_forest", "forest"), ("pickled", "pipeline")],
)
def test_classifiers_answer_as_the_estimator_does(served: Served, model: str, estimator: str, binary: bool) -> None:
    trained = served.trained[estimator]
    result = infer(served, model, trained.X, binary=binary)
    predicted = result.as_numpy("predict")
    assert predicted.dtype == np.int64
    np.testing.assert_array_equal(predicted, trained.estimator.predict(trained.X))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), trained.estimator.predict_proba(trained.X), rtol=1e-12)
    assert result.get_output("predict")["datatype"] == "INT64"
    assert result.get_output("predict_proba") == {
        **result.get_output("predict_proba"), "datatype": "FP64", "shape": [len(trained.X), 3]
    }


def test_concurrent_requests_are_batched_and_answered_row_by_row(served: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    trained = served.trained["pipeline"]
    before = _batch_stats(served)

    def one(i: int) -> np.ndarray:
        return infer(served, "pipeline", trained.X[i : i + 1 + i % 2]).as_numpy("predict_proba")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(16)))
    for i, got in enumerate(answers):
        np.testing.assert_allclose(got, trained.estimator.predict_proba(trained.X[i : i + 1 + i % 2]), rtol=1e-12)
    after = _batch_stats(served)
    assert after["inference_count"] - before["inference_count"] == sum(1 + i % 2 for i in range(16))
    assert after["execution_count"] - before["execution_count"] < 16  # some requests shared a run


def _batch_stats(served: Served) -> dict[str, int]:
    stats = httpx.get(f"{served.server.url}/v2/models/pipeline/versions/1/stats", timeout=30).json()
    [model] = stats["model_stats"]
    return {"inference_count": model["inference_count"], "execution_count": model["execution_count"]}


def test_string_labels_are_bytes(served: Served) -> None:
    trained = served.trained["labels"]
    result = infer(served, "labels", trained.X)
    assert result.get_output("predict")["datatype"] == "BYTES"
    got = [v.decode() for v in result.as_numpy("predict")]
    assert got == list(trained.estimator.predict(trained.X))
    assert set(got) == {"setosa", "versicolor", "virginica"}
    np.testing.assert_allclose(result.as_numpy("predict_proba"), trained.estimator.predict_proba(trained.X), rtol=1e-12)


def test_regressors_answer_fp64(served: Served, http: httpx.Client) -> None:
    meta = http.get("/v2/models/regressor").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 5]}]
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]  # no predict_proba
    trained = served.trained["regressor"]
    result = infer(served, "regressor", trained.X)
    np.testing.assert_allclose(result.as_numpy("predict"), trained.estimator.predict(trained.X), rtol=1e-12)

    assert http.get("/v2/models/two_targets").json()["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": [-1, 2]}
    ]
    trained = served.trained["two_targets"]
    predicted = infer(served, "two_targets", trained.X).as_numpy("predict")
    assert predicted.shape == (len(trained.X), 2)
    np.testing.assert_allclose(predicted, trained.estimator.predict(trained.X), rtol=1e-12)


def test_an_estimator_fitted_on_a_dataframe_gets_its_column_names(served: Served, http: httpx.Client) -> None:
    props = http.get("/v2/models/frame").json()["properties"]
    assert props["feature_names"] == "sepal_length,sepal_width,petal_length,petal_width"
    trained = served.trained["frame"]
    import pandas as pd

    expected = trained.estimator.predict_proba(pd.DataFrame(trained.X, columns=list(trained.estimator.feature_names_in_)))
    np.testing.assert_allclose(infer(served, "frame", trained.X).as_numpy("predict_proba"), expected, rtol=1e-12)


def test_a_declared_signature_is_used(served: Served, http: httpx.Client) -> None:
    meta = http.get("/v2/models/fp32").json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["properties"]["signature"] == "declared in model.toml"
    trained = served.trained["iris"]
    x32 = trained.X.astype(np.float32)
    result = infer(served, "fp32", x32, datatype="FP32", input_name="features")
    assert result.get_output("predict_proba")["datatype"] == "FP32"
    expected = trained.estimator.predict_proba(x32.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), expected)
    # the declared datatype is the one requests must send
    refused = http.post("/v2/models/fp32/infer", json={
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]
    })
    assert refused.status_code == 400 and "FP32" in refused.json()["error"]


def test_only_the_requested_outputs_are_computed(served: Served) -> None:
    # proba_only's predict() raises: asking for predict_proba alone must not call it
    trained = served.trained["proba_only"]
    result = infer(served, "proba_only", trained.X, outputs=("predict_proba",))
    assert result.as_numpy("predict") is None
    np.testing.assert_allclose(result.as_numpy("predict_proba"), trained.estimator.predict_proba(trained.X), rtol=1e-12)
    with pytest.raises(InferenceServerException, match="predict was called"):
        infer(served, "proba_only", trained.X, outputs=("predict",))
    only_predict = infer(served, "iris", served.trained["iris"].X, outputs=("predict",))
    assert only_predict.as_numpy("predict_proba") is None
    assert [o["name"] for o in only_predict.get_response()["outputs"]] == ["predict"]


def test_bad_inputs_are_refused_and_the_server_keeps_serving(served: Served, http: httpx.Client) -> None:
    def body(shape: list[int], data: list[Any], datatype: str = "FP64") -> dict[str, Any]:
        return {"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]}

    wrong_width = http.post("/v2/models/iris/infer", json=body([2, 3], [1.0] * 6))
    assert wrong_width.status_code == 400
    error = wrong_width.json()["error"]
    assert "'input'" in error and "[2, 3]" in error and "[-1, 4]" in error
    wrong_type = http.post("/v2/models/iris/infer", json=body([1, 4], [1, 2, 3, 4], "INT64"))
    assert wrong_type.status_code == 400 and "'input'" in wrong_type.json()["error"]
    # values the estimator itself refuses: 400 with its message, not a server error
    nan = http.post("/v2/models/iris/infer", json=body([1, 4], [1.0, "NaN", 1.0, 1.0]))
    assert nan.status_code == 400, nan.text
    assert "'input'" in nan.json()["error"] and "NaN" in nan.json()["error"]
    with pytest.raises(InferenceServerException, match="input"):
        infer(served, "iris", np.ones((3, 5)))

    ok = http.post("/v2/models/iris/infer", json=body([1, 4], [5.1, 3.5, 1.4, 0.2]))
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0] == {"name": "predict", "datatype": "INT64", "shape": [1], "data": [0]}
    assert http.get("/v2/health/ready").status_code == 200


def test_an_empty_batch_has_an_empty_answer(served: Served) -> None:
    result = infer(served, "iris", np.zeros((0, 4)))
    assert result.as_numpy("predict").shape == (0,)
    assert result.as_numpy("predict_proba").shape == (0, 3)


# -- what is loaded, what is refused -----------------------------------------------------------------


def test_an_unpinned_pickle_is_refused_without_being_loaded(
    serve_fails: Callable[..., Failed], tmp_path: Path
) -> None:
    import joblib

    marker = tmp_path / "pickle-code-ran"
    path = tmp_path / "evil.joblib"
    joblib.dump(MakesDirectory(str(marker)), path)
    failed = serve_fails(str(path))
    assert failed.returncode == 1
    assert "evil.joblib is a pickle (joblib) file" in failed.stderr
    assert "[sha256]" in failed.stderr and "--trust-pickle" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not marker.exists()  # joblib never opened it

    # with --trust-pickle it is loaded, and so its code runs: exactly what the rule is about
    trusted = serve_fails("--trust-pickle", str(path))
    assert trusted.returncode == 1
    assert marker.is_dir()
    assert "holds a builtins.NoneType, not an estimator with predict()" in trusted.stderr


def test_trust_pickle_serves_unpinned_files(
    serve: Callable[..., Any], trained: dict[str, Trained], tmp_path: Path
) -> None:
    import joblib
    import skops.io

    lr, forest = tmp_path / "lr.joblib", tmp_path / "forest.skops"
    joblib.dump(trained["iris"].estimator, lr)
    skops.io.dump(trained["forest"].estimator, forest)
    server = serve("--trust-pickle", str(lr), str(forest))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v2/models/lr").json()["properties"]["trust"] == "--trust-pickle"
        props = http.get("/v2/models/forest").json()["properties"]
        assert (props["format"], props["trust"], props["trusted_types"]) == ("skops", "--trust-pickle", "sklearn.tree._tree.Tree")
        for model, est in (("lr", "iris"), ("forest", "forest")):
            x = trained[est].X
            response = http.post(f"/v2/models/{model}/infer", json={
                "inputs": [{"name": "input", "datatype": "FP64", "shape": list(x.shape), "data": x.ravel().tolist()}]
            })
            assert response.status_code == 200, response.text
            [predict] = [o for o in response.json()["outputs"] if o["name"] == "predict"]
            assert predict["data"] == trained[est].estimator.predict(x).tolist()
    assert "because of --trust-pickle" in server.stderr()  # a warning names what was trusted


def test_a_wrong_pinned_digest_is_refused(serve_fails: Callable[..., Failed], repository: Repository, tmp_path: Path) -> None:
    marker = tmp_path / "pickle-code-ran"
    repository.add("evil", MakesDirectory(str(marker)), pin="0" * 64)
    failed = serve_fails(str(repository.root))
    assert failed.returncode == 1
    assert "model.toml expects " + "0" * 64 in failed.stderr
    assert sha256(repository.artefacts["evil"]) in failed.stderr
    assert not marker.exists()


def test_skops_types_beyond_the_defaults_need_a_pin(
    serve_fails: Callable[..., Failed], trained: dict[str, Trained], tmp_path: Path
) -> None:
    import skops.io

    path = tmp_path / "forest.skops"
    skops.io.dump(trained["forest"].estimator, path)
    failed = serve_fails(str(path))
    assert failed.returncode == 1
    assert "holding types skops does not trust by default (sklearn.tree._tree.Tree)" in failed.stderr
    assert "--trust-pickle" in failed.stderr


def test_a_failed_load_is_reported_while_other_models_serve(
    serve: Callable[..., Any], repository: Repository, trained: dict[str, Trained]
) -> None:
    repository.add("unpinned", trained["iris"].estimator, pin=False)
    repository.add("skops_iris", trained["iris"].estimator, fmt="skops", pin=False)
    server = serve("--model-control", "explicit", str(repository.root))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        index = {e["name"]: e for e in http.post("/v2/repository/index", json={}).json()}
        assert index["skops_iris"]["state"] == "READY"
        assert index["unpinned"]["state"] == "FAILED"
        assert "--trust-pickle" in index["unpinned"]["reason"]
        assert http.get("/v2/models/skops_iris").json()["properties"]["trust"] == "skops default types only"


def test_bad_files_are_clean_start_up_errors(serve_fails: Callable[..., Failed], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.skops"
    garbage.write_bytes(b"not a zip file")
    failed = serve_fails(str(garbage))
    assert failed.returncode == 1 and "garbage.skops is not a readable skops file" in failed.stderr
    assert "Traceback" not in failed.stderr

    disabled = serve_fails(str(garbage), env={"SERVECORE_DISABLE_PLUGINS": "sklearn"})
    assert disabled.returncode == 1 and "no backend serves 'garbage.skops'" in disabled.stderr


# -- the loader, called directly ------------------------------------------------------------------------


def _saved(estimator: Any, path: Path) -> Path:
    import joblib

    joblib.dump(estimator, path)
    return path


TRUSTING = ServeConfig(trust_pickle=True)


def test_a_file_changed_after_the_servers_check_is_refused(trained: dict[str, Trained], tmp_path: Path) -> None:
    path = _saved(trained["iris"].estimator, tmp_path / "model.joblib")
    # the server verified a digest, and the bytes the loader reads have another one
    source = ModelSource("m", "1", path, sha256="f" * 64, verified=True)
    with pytest.raises(ModelLoadError, match="changed after its sha256 was checked"):
        load_sklearn_model(source, TRUSTING)
    good = ModelSource("m", "1", path, sha256=sha256(path), verified=True)
    assert load_sklearn_model(good, ServeConfig()).properties["trust"] == "sha256 pinned in model.toml"


def test_a_predict_proba_that_cannot_be_looked_up_is_not_served(trained: dict[str, Trained], tmp_path: Path) -> None:
    path = _saved(trained["proba_property_fails"].estimator, tmp_path / "model.joblib")
    backend = load_sklearn_model(ModelSource("m", "1", path), TRUSTING)
    assert [s.name for s in backend.outputs] == ["predict"]
    rows = trained["iris"].X
    np.testing.assert_array_equal(backend.infer({"input": rows}, ["predict"])["predict"], trained["iris"].estimator.predict(rows))


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ((TensorSpec("x", "FP32", (-1, 3)),), (), r"declared \[-1, 3\], but the estimator takes 4 features"),
        ((TensorSpec("x", "FP32", (-1, 4)), TensorSpec("y", "FP32", (-1, 4))), (), "declares 2 inputs"),
        ((TensorSpec("x", "BF16", (-1, 4)),), (), "declared BF16"),
        ((), (TensorSpec("scores", "FP64", (-1, 3)),), "declares output 'scores'"),
        ((), (TensorSpec("predict", "BYTES", (-1,)),), "'predict' is declared BYTES but is INT64"),
        ((), (TensorSpec("predict_proba", "FP32", (-1, 4)),), r"declared \[-1, 4\] but is \[-1, 3\]"),
    ],
)
def test_a_declared_signature_that_does_not_fit_is_refused(
    trained: dict[str, Trained], tmp_path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], message: str
) -> None:
    path = _saved(trained["iris"].estimator, tmp_path / "model.joblib")
    source = ModelSource("m", "1", path, ModelSettings(inputs=inputs, outputs=outputs))
    with pytest.raises(ModelLoadError, match=message):
        load_sklearn_model(source, TRUSTING)


def test_a_declared_feature_dimension_may_be_open(trained: dict[str, Trained], tmp_path: Path) -> None:
    path = _saved(trained["iris"].estimator, tmp_path / "model.joblib")
    source = ModelSource("m", "1", path, ModelSettings(inputs=(TensorSpec("x", "INT32", (-1, -1)),)))
    backend = load_sklearn_model(source, TRUSTING)
    assert backend.inputs == [TensorSpec("x", "INT32", (-1, 4))]
    rows = np.array([[5, 3, 1, 0], [7, 3, 6, 2]], dtype=np.int32)
    np.testing.assert_array_equal(
        backend.infer({"x": rows}, ["predict"])["predict"], trained["iris"].estimator.predict(rows.astype(np.float64))
    )
    with pytest.raises(InvalidInputError, match="'x'"):  # the estimator's own validation, as a 400
        backend.infer({"x": np.array([[1, 2, 3, 4, 5]], dtype=np.int32)}, ["predict"])


def test_not_an_estimator(tmp_path: Path) -> None:
    path = _saved({"weights": [1, 2, 3]}, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError, match="holds a builtins.dict, not an estimator"):
        load_sklearn_model(ModelSource("m", "1", path), TRUSTING)


def test_the_module_imports_no_backend_library() -> None:
    """`servecore plugins` and servers without sklearn models do not pay for importing scikit-learn."""
    import subprocess
    import sys

    code = "import servecore_sklearn, sys; print(sorted(m for m in ('sklearn', 'joblib', 'skops', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ(), check=True)
    assert out.stdout.strip() == "[]"
    assert servecore_sklearn.SUFFIXES == (".joblib", ".skops")
