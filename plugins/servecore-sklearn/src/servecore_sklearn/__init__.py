"""servecore-sklearn: a backend for scikit-learn estimators saved with joblib or skops.

Artefacts: ``*.joblib`` (``joblib.dump``; plain pickles load too) and ``*.skops``
(``skops.io.dump``). ``*.pkl`` is not claimed: a ``.pkl`` file can be any pickled object, so the
suffix alone says nothing about which backend should open it; serve one by naming the backend in
its ``model.toml`` (``backend = "sklearn"``), or rename it ``model.joblib``.

Security. Loading a pickle runs whatever code it contains, before anything can look at the object.
So a joblib (pickle) file is loaded only when

* its sha256 is pinned in ``model.toml`` (``[sha256] "1" = "..."``) and the server found it to
  match (:attr:`servecore.types.ModelSource.verified`), or
* the server runs with ``--trust-pickle`` (``SERVECORE_TRUST_PICKLE=1``).

Otherwise the load is refused with :class:`~servecore.errors.ModelLoadError` and the file is not
opened by joblib at all. A skops file is audited first (:func:`skops.io.get_untrusted_types`): one
holding only the types skops trusts by default loads without a pin; one holding other types (a
decision tree's ``sklearn.tree._tree.Tree``, custom classes) needs the same pin or
``--trust-pickle``, and is then loaded trusting exactly the types the audit listed.

The file is read once; the audit, the digest check and the load all use those bytes, so a file
replaced on disk between the server's sha256 check and the load is refused rather than loaded.

Signature:

* one input, ``input``, shape ``[-1, n_features_in_]``, FP64 (scikit-learn computes in float64).
  A ``model.toml`` ``[[inputs]]`` entry replaces it (one entry: its name, datatype and shape, whose
  feature dimension must be ``n_features_in_`` or ``-1``); numeric inputs are converted to float64
  and BYTES inputs to ``str`` before the estimator sees them. An estimator without
  ``n_features_in_`` (a text pipeline) must declare its input.
* estimators fitted on a pandas DataFrame (``feature_names_in_``) are given a DataFrame with those
  column names (pandas must be installed), so ``ColumnTransformer`` column selectors work.
* outputs: ``predict`` (``[-1]``, or ``[-1, k]`` for k outputs; INT64/INT32/... for integer
  predictions, FP64 for floating-point ones, BYTES for strings and other objects) and, when the
  estimator has ``predict_proba`` returning one array, ``predict_proba`` (``[-1, n_classes]``,
  FP64). Their datatypes and shapes are found by running the estimator on one all-zero row at load
  time (falling back to ``classes_`` when that run fails). ``[[outputs]]`` in ``model.toml`` may
  select some of them and change their numeric datatype (FP32 probabilities, say).
* only the requested outputs are computed.

Requests whose values the estimator rejects (NaN, unknown categories, ...) are answered 400 with
the estimator's message.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from servecore import hookimpl
from servecore.datatypes import NUMPY_DTYPES, v2_datatype
from servecore.errors import BackendError, InvalidInputError, ModelLoadError
from servecore.hookspecs import RegisterBackend
from servecore.types import ModelSource, TensorSpec

if TYPE_CHECKING:
    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.sklearn")

NAME = "sklearn"
PLATFORM = "sklearn"
JOBLIB_SUFFIX = ".joblib"
SKOPS_SUFFIX = ".skops"
SUFFIXES = (JOBLIB_SUFFIX, SKOPS_SUFFIX)

INPUT = "input"
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

#: Most classes shown in the ``classes`` property, and the longest text shown for each.
MAX_CLASSES_SHOWN = 10
MAX_LABEL_CHARS = 32

#: Declared input datatypes this backend can hand to scikit-learn (BF16 has no numpy type).
INPUT_DATATYPES = tuple(d for d in NUMPY_DTYPES if d != "BF16")
_NUMERIC_OUTPUTS = frozenset(d for d in NUMPY_DTYPES if d not in ("BYTES", "BF16"))


@hookimpl
def servecore_register_backends(register: RegisterBackend) -> None:
    register(NAME, load_sklearn_model, suffixes=SUFFIXES)


# -- the backend ----------------------------------------------------------------------------------


@dataclass
class SklearnBackend:
    """A loaded estimator. ``predict`` and ``predict_proba`` only read it, so concurrent calls are safe."""

    estimator: Any
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    properties: Mapping[str, str]
    max_batch_size: int = 0
    name: str = NAME
    platform: str = PLATFORM
    #: column names to hand the estimator a DataFrame with (estimators fitted on a DataFrame)
    feature_names: tuple[str, ...] | None = None
    _specs: dict[str, TensorSpec] = field(init=False)

    def __post_init__(self) -> None:
        self._specs = {s.name: s for s in self.outputs}

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        spec = self.inputs[0]
        x = to_estimator_input(spec, inputs[spec.name])
        rows = x.shape[0] if x.ndim else 1
        results: dict[str, np.ndarray] = {}
        for output in outputs:
            out = self._specs.get(output)
            if out is None:
                raise BackendError(f"the sklearn backend has no output {output!r}")
            if rows == 0:  # scikit-learn refuses empty arrays; an empty batch has an empty answer
                shape = (0, *(max(d, 0) for d in out.shape[1:]))
                results[output] = np.empty(shape, dtype=NUMPY_DTYPES[out.datatype])
                continue
            method = getattr(self.estimator, output)
            try:
                value = method(as_frame(x, self.feature_names))
            except ValueError as exc:  # scikit-learn's input validation: NaN, unknown categories...
                where = f"{type(self.estimator).__name__}.{output}"
                raise InvalidInputError(f"input {spec.name!r}: {where}: {exc}") from exc
            except Exception as exc:
                raise BackendError(f"{type(self.estimator).__name__}.{output} failed: {exc}") from exc
            results[output] = to_output(out, value)
        return results

    def close(self) -> None:
        self.estimator = None


def as_frame(x: np.ndarray, feature_names: tuple[str, ...] | None) -> Any:
    """*x* as a DataFrame with the columns the estimator was fitted with, or *x* when it has none."""
    if feature_names is None or x.ndim != 2:
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=list(feature_names))


def to_estimator_input(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """A request tensor as scikit-learn expects it: float64 for numbers, ``str`` for BYTES."""
    if array.dtype == object:
        flat = array.ravel()
        text = np.empty(flat.shape, dtype=object)
        for i, value in enumerate(flat):
            try:
                text[i] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                raise InvalidInputError(f"input {spec.name!r}: element {i} is not valid UTF-8") from None
        return text.reshape(array.shape)
    return array.astype(np.float64, copy=False)


def to_output(spec: TensorSpec, value: Any) -> np.ndarray:
    """An estimator's result as the array *spec* describes (its datatype, its rank)."""
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:
            raise BackendError(f"output {spec.name!r}: the estimator returned {type(value).__name__}: {exc}") from None
    if value.ndim == 2 and len(spec.shape) == 1 and value.shape[1] == 1:
        value = value[:, 0]  # a single-output estimator fitted on a one-column y
    if value.ndim != len(spec.shape):
        raise BackendError(
            f"output {spec.name!r}: the estimator returned shape {list(value.shape)}, declared {list(spec.shape)}"
        )
    if spec.datatype == "BYTES":
        return as_bytes(value)
    try:
        converted: np.ndarray = value.astype(NUMPY_DTYPES[spec.datatype], copy=False)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"output {spec.name!r}: cannot convert {value.dtype} to {spec.datatype}: {exc}") from None
    return converted


def as_bytes(value: np.ndarray) -> np.ndarray:
    """An object array of ``bytes`` (UTF-8) from labels of any type."""
    flat = value.ravel()
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        out[i] = item if isinstance(item, bytes) else str(item).encode("utf-8")
    return out.reshape(value.shape)


def output_datatype(dtype: np.dtype) -> str:
    """The V2 datatype of predictions of *dtype*: integers keep their width, floats are FP64."""
    if dtype.kind == "f":
        return "FP64"
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return v2_datatype(dtype)
    except Exception:
        return "BYTES"  # complex, datetimes...: sent as text


# -- loading ---------------------------------------------------------------------------------------


def _where(source: ModelSource) -> str:
    return f"model {source.name!r} version {source.version}"


def _read(source: ModelSource) -> bytes:
    """The artefact's bytes, checked against the digest the server verified (when it verified one)."""
    path = source.path
    if not path.is_file():
        raise ModelLoadError(f"{_where(source)}: {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{_where(source)}: cannot read {path}: {exc.strerror}") from exc
    if source.verified and hashlib.sha256(data).hexdigest() != source.sha256:
        raise ModelLoadError(
            f"{_where(source)}: {path.name} changed after its sha256 was checked against model.toml; not loaded"
        )
    return data


def _refusal(source: ModelSource, what: str) -> ModelLoadError:
    path = source.path
    suffix = path.name.split(".", 1)[1] if "." in path.name else "joblib"
    return ModelLoadError(
        f"{_where(source)}: {path.name} {what}, and loading it can run code from the file; refused because "
        f"its sha256 is not pinned and --trust-pickle is off. Either pin its sha256 in the model's "
        f"model.toml: [sha256] \"{source.version}\" = \"<digest>\" (what `sha256sum {path}` prints, for a "
        f"file you made or checked; a file served on its own has no model.toml: lay it out as "
        f"DIR/{source.name}/{source.version}/model.{suffix} beside DIR/{source.name}/model.toml), or start "
        f"the server with --trust-pickle (SERVECORE_TRUST_PICKLE=1) to load every such file unchecked."
    )


def _load_pickle(source: ModelSource, config: ServeConfig, data: bytes) -> tuple[Any, dict[str, str]]:
    if not source.verified and not config.trust_pickle:
        raise _refusal(source, "is a pickle (joblib) file")
    import joblib

    if not source.verified:
        logger.warning("%s: loading the unpinned pickle %s because of --trust-pickle", _where(source), source.path)
    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelLoadError(f"{_where(source)}: joblib cannot load {source.path}: {exc}") from exc
    trust = "sha256 pinned in model.toml" if source.verified else "--trust-pickle"
    return estimator, {"format": "joblib", "trust": trust}


def _load_skops(source: ModelSource, config: ServeConfig, data: bytes) -> tuple[Any, dict[str, str]]:
    import skops.io

    if not data:
        raise ModelLoadError(f"{_where(source)}: {source.path} is empty")
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelLoadError(f"{_where(source)}: {source.path} is not a readable skops file: {exc}") from exc
    listed = ", ".join(untrusted)
    if untrusted and not source.verified and not config.trust_pickle:
        raise _refusal(source, f"is a skops file holding types skops does not trust by default ({listed})")
    if untrusted and not source.verified:
        logger.warning("%s: trusting %s in %s because of --trust-pickle", _where(source), listed, source.path)
    try:
        estimator = skops.io.loads(data, trusted=untrusted)
    except Exception as exc:
        raise ModelLoadError(f"{_where(source)}: skops cannot load {source.path}: {exc}") from exc
    if not untrusted:
        trust = "skops default types only"
    else:
        trust = "sha256 pinned in model.toml" if source.verified else "--trust-pickle"
    properties = {"format": "skops", "trust": trust}
    if untrusted:
        properties["trusted_types"] = ",".join(untrusted)
    return estimator, properties


def _attribute(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)``, also when the attribute raises something else than AttributeError
    (properties of unfitted meta-estimators do)."""
    try:
        return getattr(obj, name)
    except Exception:
        return None


def _has_method(obj: Any, name: str) -> bool:
    # hasattr() only swallows AttributeError (available_if raises it when the method does not
    # apply, e.g. SVC(probability=False).predict_proba); anything else also means "not usable"
    return callable(_attribute(obj, name))


def describe(estimator: Any) -> str:
    """``LogisticRegression``; ``Pipeline(StandardScaler, LogisticRegression)`` for a pipeline."""
    name = type(estimator).__name__
    steps = _attribute(estimator, "steps")
    if isinstance(steps, list) and all(isinstance(s, tuple) and len(s) == 2 for s in steps):
        return f"{name}({', '.join(describe(step) for _, step in steps)})"
    return name


def short_list(values: Sequence[Any]) -> str:
    """At most :data:`MAX_CLASSES_SHOWN` values, comma-separated, each cut to :data:`MAX_LABEL_CHARS`."""
    shown = []
    for value in values[:MAX_CLASSES_SHOWN]:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        shown.append(text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 3] + "...")
    if len(values) > MAX_CLASSES_SHOWN:
        shown.append(f"... ({len(values)} in all)")
    return ",".join(shown)


def _input_spec(source: ModelSource, n_features: int | None) -> TensorSpec:
    declared = source.settings.inputs
    if len(declared) > 1:
        raise ModelLoadError(
            f"{_where(source)}: model.toml declares {len(declared)} inputs; a scikit-learn estimator takes one"
        )
    if not declared:
        if n_features is None:
            raise ModelLoadError(
                f"{_where(source)}: the estimator does not say how many features it takes (no n_features_in_); "
                "declare its input in model.toml ([[inputs]] with name, datatype and shape)"
            )
        return TensorSpec(INPUT, "FP64", (-1, n_features))
    spec = declared[0]
    if spec.datatype not in INPUT_DATATYPES:
        raise ModelLoadError(
            f"{_where(source)}: input {spec.name!r} is declared {spec.datatype}; the sklearn backend takes "
            f"{', '.join(INPUT_DATATYPES)}"
        )
    if n_features is None:
        if not 1 <= len(spec.shape) <= 2:
            raise ModelLoadError(
                f"{_where(source)}: input {spec.name!r} must have 1 or 2 dimensions, not {list(spec.shape)}"
            )
        return spec
    if len(spec.shape) != 2 or spec.shape[1] not in (-1, n_features):
        raise ModelLoadError(
            f"{_where(source)}: input {spec.name!r} is declared {list(spec.shape)}, but the estimator takes "
            f"{n_features} features: declare [-1, {n_features}]"
        )
    return TensorSpec(spec.name, spec.datatype, (spec.shape[0], n_features))


@dataclass(frozen=True)
class _Prober:
    """Runs an estimator's methods on one all-zero row (one empty string for BYTES)."""

    estimator: Any
    spec: TensorSpec
    feature_names: tuple[str, ...] | None

    def __call__(self, method: str) -> Any:
        """The result of *method*, or the exception it raised."""
        shape = [1 if d < 0 else d for d in self.spec.shape]
        shape[0] = 1
        sample = np.full(shape, "", dtype=object) if self.spec.datatype == "BYTES" else np.zeros(shape)
        try:
            return getattr(self.estimator, method)(as_frame(sample, self.feature_names))
        except Exception as exc:
            return exc


def _derived_outputs(source: ModelSource, probe_run: _Prober) -> list[TensorSpec]:
    """``predict`` and (when it gives one array) ``predict_proba``, as a one-row run shows them."""
    estimator = probe_run.estimator
    classes = _attribute(estimator, "classes_")
    outputs = []
    probe = probe_run(PREDICT)
    if isinstance(probe, Exception):
        logger.info(
            "%s: predict failed on an all-zero row (%s); its signature is taken from classes_", _where(source), probe
        )
        if isinstance(classes, np.ndarray):
            outputs.append(TensorSpec(PREDICT, output_datatype(classes.dtype), (-1,)))
        elif isinstance(classes, list):  # multi-output classifier
            datatype = output_datatype(np.asarray(classes[0]).dtype)
            outputs.append(TensorSpec(PREDICT, datatype, (-1, len(classes))))
        else:
            outputs.append(TensorSpec(PREDICT, "FP64", (-1,)))
    else:
        value = np.asarray(probe)
        if value.ndim == 2 and value.shape[1] == 1 and _attribute(estimator, "n_outputs_") in (None, 1):
            value = value[:, 0]
        if value.ndim not in (1, 2):
            raise ModelLoadError(f"{_where(source)}: predict returns shape {list(value.shape)} for one row")
        shape = (-1,) if value.ndim == 1 else (-1, value.shape[1])
        outputs.append(TensorSpec(PREDICT, output_datatype(value.dtype), shape))
    if _has_method(estimator, PREDICT_PROBA):
        probe = probe_run(PREDICT_PROBA)
        if isinstance(probe, np.ndarray) and probe.ndim == 2:
            outputs.append(TensorSpec(PREDICT_PROBA, "FP64", (-1, probe.shape[1])))
        elif isinstance(probe, Exception) and isinstance(classes, np.ndarray):
            outputs.append(TensorSpec(PREDICT_PROBA, "FP64", (-1, len(classes))))
        else:
            logger.info("%s: predict_proba is not served (it gives %s)", _where(source), type(probe).__name__)
    return outputs


def _select_outputs(source: ModelSource, derived: list[TensorSpec]) -> list[TensorSpec]:
    """The ``[[outputs]]`` of model.toml checked against what the estimator gives, or *derived*."""
    declared = source.settings.outputs
    if not declared:
        return derived
    by_name = {s.name: s for s in derived}
    selected = []
    for spec in declared:
        have = by_name.get(spec.name)
        if have is None:
            raise ModelLoadError(
                f"{_where(source)}: model.toml declares output {spec.name!r}; this estimator gives {', '.join(by_name)}"
            )
        if (spec.datatype == "BYTES") != (have.datatype == "BYTES") or spec.datatype == "BF16":
            hint = "" if have.datatype == "BYTES" else f"; it may be declared {', '.join(sorted(_NUMERIC_OUTPUTS))}"
            raise ModelLoadError(
                f"{_where(source)}: output {spec.name!r} is declared {spec.datatype} but is {have.datatype}{hint}"
            )
        compatible = len(spec.shape) == len(have.shape) and all(
            d == -1 or h == -1 or d == h for d, h in zip(spec.shape, have.shape)
        )
        if not compatible:
            raise ModelLoadError(
                f"{_where(source)}: output {spec.name!r} is declared {list(spec.shape)} but is {list(have.shape)}"
            )
        selected.append(TensorSpec(spec.name, spec.datatype, have.shape))
    return selected


def load_sklearn_model(source: ModelSource, config: ServeConfig) -> SklearnBackend:
    """The backend loader registered for ``*.joblib`` and ``*.skops``."""
    data = _read(source)
    if source.path.name.lower().endswith(SKOPS_SUFFIX):
        estimator, properties = _load_skops(source, config, data)
    else:  # .joblib, or any other file model.toml gives to this backend: a pickle
        estimator, properties = _load_pickle(source, config, data)
    if not _has_method(estimator, PREDICT):
        kind = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
        raise ModelLoadError(f"{_where(source)}: {source.path.name} holds a {kind}, not an estimator with predict()")
    import sklearn

    n_features = _attribute(estimator, "n_features_in_")
    n_features = int(n_features) if isinstance(n_features, (int, np.integer)) else None
    names = _attribute(estimator, "feature_names_in_")
    feature_names = tuple(str(n) for n in names) if names is not None and len(names) == n_features else None
    if feature_names is not None:
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ModelLoadError(
                f"{_where(source)}: the estimator was fitted on a pandas DataFrame (it has feature_names_in_); "
                "install pandas to serve it"
            ) from None
    spec = _input_spec(source, n_features)
    outputs = _select_outputs(source, _derived_outputs(source, _Prober(estimator, spec, feature_names)))
    properties.update(
        estimator=describe(estimator),
        sklearn_version=sklearn.__version__,
        signature="declared in model.toml" if source.settings.inputs else "from the estimator",
        sha256=source.sha256 or hashlib.sha256(data).hexdigest(),
        size_bytes=str(len(data)),
    )
    if n_features is not None:
        properties["n_features"] = str(n_features)
    if feature_names is not None:
        properties["feature_names"] = short_list(feature_names)
    classes = _attribute(estimator, "classes_")
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        properties["classes"] = short_list(list(classes))
    return SklearnBackend(estimator, [spec], outputs, properties, feature_names=feature_names)
