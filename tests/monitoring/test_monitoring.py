"""Drift and performance monitoring against a real server: `servecore profile build`, drift
windows and alerts, the /drift report, label feedback, the metrics and the HTML report."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models import row_sum
from checks import eventually
from server_process import ServerProcess
from servecore.dataplane import demo_model_path

DEMO = demo_model_path()
WIDTH = 64
ROWS_PER_WINDOW = 400


def servecore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servecore", *args], capture_output=True, text=True, timeout=120)


def demo_logits(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(DEMO), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"input": x})[0])


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo MLP profiled on standard normal inputs."""
    root = tmp_path_factory.mktemp("profile")
    np.savez(root / "ref.npz", input=np.random.default_rng(0).standard_normal((4000, WIDTH)).astype(np.float32))
    result = servecore("profile", "build", str(DEMO), "--data", str(root / "ref.npz"), "-o", str(root / "p.json"), "--bins", "16")
    assert result.returncode == 0, result.stderr
    assert "profiled 4000 rows: 74 features (74 numeric, 0 categorical)" in result.stdout
    return root / "p.json"




def send(url: str, x: np.ndarray, request_id: str | None = None, model: str = "mlp", name: str = "input") -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    if request_id:
        body["id"] = request_id
    response = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def drift(url: str, model: str = "mlp") -> dict[str, Any]:
    response = httpx.get(f"{url}/v2/models/{model}/drift", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()




def samples(url: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(httpx.get(url + "/metrics").text) for s in f.samples]


def monitored(serve: Callable[..., ServerProcess], profile: Path, *extra: str) -> ServerProcess:
    return serve(
        str(DEMO), "--reference-profile", str(profile), "--drift-window-rows", str(ROWS_PER_WINDOW),
        "--drift-window-seconds", "3600", *extra,
    )


def test_profile_build_reads_npy_csv_and_refuses_bad_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, WIDTH)).astype(np.float32)
    np.save(tmp_path / "ref.npy", x)
    header = ",".join(f"f{j}" for j in range(WIDTH))
    (tmp_path / "ref.csv").write_text(header + "\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    for data in ("ref.npy", "ref.csv"):
        result = servecore("profile", "build", str(DEMO), "--data", str(tmp_path / data), "-o", str(tmp_path / f"{data}.json"))
        assert result.returncode == 0, result.stderr
        assert "profiled 300 rows" in result.stdout
    (tmp_path / "bad.txt").write_text("nope")
    result = servecore("profile", "build", str(DEMO), "--data", str(tmp_path / "bad.txt"), "-o", str(tmp_path / "x.json"))
    assert result.returncode == 1 and "must be .npy, .npz, .csv or .parquet" in result.stderr
    np.savez(tmp_path / "wrong.npz", other=x)
    result = servecore("profile", "build", str(DEMO), "--data", str(tmp_path / "wrong.npz"), "-o", str(tmp_path / "x.json"))
    assert result.returncode == 1 and "no data for input(s) input" in result.stderr
    assert "Traceback" not in result.stderr


def test_same_distribution_no_drift_then_a_shift_opens_alerts(serve: Callable[..., ServerProcess], profile: Path) -> None:
    server = monitored(serve, profile)
    url = server.url
    rng = np.random.default_rng(2)
    # under n_min: nothing closes, and the open window is not a verdict
    send(url, rng.standard_normal((10, WIDTH)).astype(np.float32))
    eventually(lambda: drift(url)["rows"]["seen"] == 10, "the rows to be binned")
    report = drift(url)
    assert report["windows"] == [] and report["alerts"] == []
    assert report["reference_profile"]["sha256"] and len(report["reference_profile"]["features"]) == 74
    # two windows like the reference: no drift
    for _ in range(2 * ROWS_PER_WINDOW // 50):
        send(url, rng.standard_normal((50, WIDTH)).astype(np.float32))
    eventually(lambda: len(drift(url)["windows"]) >= 2, "two windows to close")
    for window in drift(url)["windows"]:
        share = len(window["drifted"]) / len(window["features"])
        assert share < 0.1, f"{window['drifted']} drifted on reference-like data"
    assert drift(url)["alerts"] == []
    # inputs shifted by one standard deviation: two drifted windows open the alerts
    for _ in range(2 * ROWS_PER_WINDOW // 50 + 1):
        send(url, (rng.standard_normal((50, WIDTH)) + 1.0).astype(np.float32))
    eventually(lambda: len(drift(url)["windows"]) >= 4, "two more windows")
    report = drift(url)
    last = report["windows"][-1]
    assert len(last["drifted"]) > 40 and "input[0]" in last["drifted"]
    assert "input[0]" in report["alerts"]
    feature = next(f for f in last["features"] if f["name"] == "input[0]")
    assert feature["psi"]["value"] > 0.25 and feature["p_value"] < 1e-6 and feature["status"] == "drift"
    metrics = samples(url)
    alert = [s for s in metrics if s.name == "servecore_drift_alert" and s.labels["feature"] == "input[0]"]
    assert alert and alert[0].value == 1
    psi = [s for s in metrics if s.name == "servecore_drift_psi" and s.labels["feature"] == "input[0]"]
    assert psi and psi[0].value > 0.25
    assert any(s.name == "servecore_drift_rows_total" and s.value >= 4 * ROWS_PER_WINDOW for s in metrics)
    # the HTML report a person reads: drifting features first, both histograms drawn
    out = Path(server.log_dir) / "report.html"
    result = servecore("drift", "report", "--url", url, "--model", "mlp", "-o", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.count("<svg") == 74 and "input[0]" in page
    first = page[page.index("<section"):].split(">", 1)[0]
    assert 'class="alert"' in first, f"the first feature shown is not an alert: {first}"


def test_label_feedback_gives_accuracy_sensitivity_and_specificity(
    serve: Callable[..., ServerProcess], profile: Path
) -> None:
    server = monitored(serve, profile, "--positive-class", "3")
    url = server.url
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, WIDTH)).astype(np.float32) for _ in range(60)]
    predicted = [int(np.argmax(demo_logits(x))) for x in xs]
    for i, x in enumerate(xs):
        send(url, x, request_id=f"req-{i}")
    # the first 45 labels agree with the model, the last 15 say class 3 when it said otherwise
    labels = [{"id": f"req-{i}", "label": p if i < 45 else (3 if p != 3 else 4)} for i, p in enumerate(predicted)]
    response = httpx.post(url + "/v2/models/mlp/feedback", json=labels, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outcomes"] == {"joined": 60}
    figures = drift(url)["performance"][-1]
    assert figures["task"] == "classification" and figures["n"] == 60
    assert figures["accuracy"]["value"] == pytest.approx(45 / 60)
    low, high = figures["accuracy"]["low"], figures["accuracy"]["high"]
    assert low < 0.75 < high and 0.6 < low and high < 0.87
    truth = [p if i < 45 else (3 if p != 3 else 4) for i, p in enumerate(predicted)]
    tp = sum(1 for t, p in zip(truth, predicted) if t == 3 and p == 3)
    fn = sum(1 for t, p in zip(truth, predicted) if t == 3 and p != 3)
    assert figures["confusion"]["tp"] == tp and figures["confusion"]["fn"] == fn
    assert figures["sensitivity"]["n"] == tp + fn
    # a second label, an unknown id, a single label (one object) and bad bodies
    again = httpx.post(url + "/v2/models/mlp/feedback", json={"id": "req-0", "label": 1}).json()
    assert again["outcomes"] == {"duplicate": 1}
    assert httpx.post(url + "/v2/models/mlp/feedback", json={"id": "never", "label": 1}).json()["outcomes"] == {"unknown": 1}
    for bad in ({"label": 1}, [], {"id": "x"}, [{"id": True, "label": 1}], {"id": "x", "label": {"a": 1}}):
        response = httpx.post(url + "/v2/models/mlp/feedback", json=bad)
        assert response.status_code == 400 and "error" in response.json(), bad
    response = httpx.post(url + "/v2/models/mlp/feedback", content=b"{not json")
    assert response.status_code == 400
    metrics = samples(url)
    accuracy = [s for s in metrics if s.name == "servecore_model_accuracy"]
    assert accuracy and accuracy[0].value == pytest.approx(0.75)
    outcomes = {s.labels["outcome"]: s.value for s in metrics if s.name == "servecore_feedback_labels_total"}
    assert outcomes["joined"] == 60 and outcomes["duplicate"] == 1 and outcomes["unknown"] == 1


def test_regression_feedback_gives_mae_and_rmse(serve: Callable[..., ServerProcess], tmp_path: Path) -> None:
    model = row_sum(tmp_path / "row_sum.onnx")
    np.savez(tmp_path / "ref.npz", x=np.random.default_rng(4).standard_normal((500, 3)).astype(np.float32))
    assert servecore("profile", "build", str(model), "--data", str(tmp_path / "ref.npz"), "-o", str(tmp_path / "p.json")).returncode == 0
    server = serve(str(model), "--reference-profile", str(tmp_path / "p.json"), "--monitor-prediction", "total")
    x = np.array([[1, 2, 3], [0, 0, 1]], dtype=np.float32)  # totals 6 and 1
    send(server.url, x, request_id="a", model="row_sum", name="x")
    response = httpx.post(server.url + "/v2/models/row_sum/feedback", json={"id": "a", "label": [7, 1]}).json()
    assert response["outcomes"] == {"joined": 1}
    figures = drift(server.url, "row_sum")["performance"][-1]
    assert figures["task"] == "regression" and figures["n"] == 2
    assert figures["mae"] == pytest.approx(0.5) and figures["rmse"] == pytest.approx(np.sqrt(0.5))
    mismatch = httpx.post(server.url + "/v2/models/row_sum/feedback", json={"id": "a", "label": 1}).json()
    assert mismatch["outcomes"] == {"duplicate": 1}


def test_monitoring_never_blocks_serving(serve: Callable[..., ServerProcess], profile: Path) -> None:
    """A queue of one row: a 50-row request is served and its rows are counted as skipped."""
    server = monitored(serve, profile, "--drift-queue-rows", "1")
    rng = np.random.default_rng(5)
    send(server.url, rng.standard_normal((50, WIDTH)).astype(np.float32))
    rows = drift(server.url)["rows"]
    assert rows["skipped"] == 50
    skipped = [s for s in samples(server.url) if s.name == "servecore_drift_skipped_rows_total"]
    assert skipped and skipped[0].value == 50


def test_a_bad_profile_leaves_the_model_serving_unmonitored(serve: Callable[..., ServerProcess], tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"format": "nope"}')
    server = serve(str(DEMO), "--reference-profile", str(tmp_path / "broken.json"))
    send(server.url, np.zeros((1, WIDTH), dtype=np.float32))
    response = httpx.get(server.url + "/v2/models/mlp/drift")
    assert response.status_code == 404 and "not monitored" in response.json()["error"]
    assert "drift monitoring is off" in server.stderr()
    response = httpx.post(server.url + "/v2/models/mlp/feedback", json={"id": "a", "label": 1})
    assert response.status_code == 404


def test_a_profile_of_another_model_is_reported_not_applied(
    serve: Callable[..., ServerProcess], profile: Path, tmp_path: Path
) -> None:
    """The demo MLP's profile on the row_sum model: no feature matches, monitoring is off with
    the reason, and the model serves."""
    model = row_sum(tmp_path / "row_sum.onnx")
    server = serve(str(model), "--reference-profile", str(profile))
    send(server.url, np.ones((2, 3), dtype=np.float32), model="row_sum", name="x")
    response = httpx.get(server.url + "/v2/models/row_sum/drift")
    assert response.status_code == 404
    assert "does not match the model" in server.stderr()
