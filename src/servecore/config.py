"""The one configuration object.

Every field of :class:`ServeConfig` is a ``servecore serve`` option of the same name (``max_body_size``
is ``--max-body-size``) and an environment variable ``SERVECORE_<FIELD>`` (``SERVECORE_MAX_BODY_SIZE``).
The CLI is generated from these fields, and ``tests/test_config.py`` keeps the three in step.
The object only stores and validates values; nothing here touches the process.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from servecore.affinity import parse_cpus
from servecore.errors import ConfigError

ENV_PREFIX = "SERVECORE_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


def _opt(default: Any, help: str, *, metavar: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "metavar": metavar})


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/servecore`` (``~/.cache/servecore``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "servecore")


def default_trt_cache_dir() -> str:
    """``$XDG_CACHE_HOME/servecore/tensorrt`` (``~/.cache/servecore/tensorrt``)."""
    return str(Path(default_cache_dir()) / "tensorrt")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Everything ``servecore serve`` can be told, with its default."""

    models: tuple[str, ...] = _opt(
        (),
        "What to serve: model files (named after the file's stem unless --model-name says otherwise), "
        "repository directories laid out DIR/<model>/<version>/<artefact> with an optional "
        "DIR/<model>/model.toml, or registry URIs such as mlflow:/models/<name>/<version or alias>. "
        "None: the bundled demo model. SERVECORE_MODELS separates them with spaces.",
    )
    model_name: str | None = _opt(None, "Serve a single model under this name instead of its file's stem.")
    model_control: Literal["none", "explicit", "poll"] = _opt(
        "none",
        "none: serve what is found at start-up; explicit: also load and unload through the repository "
        "API (POST /v2/repository/models/<m>/load|unload); poll: also watch the models every "
        "--poll-interval seconds and load, swap in and unload versions as they appear, change and go. "
        "In poll mode an artefact is only loaded once its size and modification time are the same at "
        "two polls in a row, so a file still being copied is never loaded.",
    )
    poll_interval: float = _opt(5.0, "Seconds between two looks at the models (--model-control poll).", metavar="SECONDS")
    model_admins: str = _opt(
        "",
        "Comma-separated principals (API key names) allowed to load and unload models through the "
        "repository API when authentication is on. Without authentication anybody may.",
        metavar="NAMES",
    )
    idle_unload_seconds: float = _opt(
        0.0,
        "Free a model version's sessions (and GPU memory) after this many seconds without a request; "
        "the next request loads it again (0: never).",
        metavar="SECONDS",
    )
    warmup: bool = _opt(
        True,
        "Run each model version on generated inputs (one run per batch size the scheduler forms) and on "
        "its model.toml warmup samples before it reports ready. model.toml [warmup] enabled overrides it.",
    )
    model_cache_dir: str = _opt(
        "",
        "Directory where registry plugins keep downloaded artefacts (default ~/.cache/servecore/models).",
        metavar="DIR",
    )
    trust_pickle: bool = _opt(
        False,
        "Load pickle-based artefacts (joblib, skops with untrusted types) whose sha256 is not pinned "
        "in model.toml. Pickles execute code when loaded: only for files you trust.",
    )
    reference_profile: str | None = _opt(
        None,
        "Monitor drift against this reference profile (servecore profile build): every executed "
        "request's inputs and outputs are binned off the request path, and each window is compared "
        "with the reference. A repository model names its own in model.toml.",
        metavar="FILE",
    )
    drift_window_seconds: float = _opt(60.0, "Drift and performance windows: seconds per window.", metavar="SECONDS")
    drift_window_rows: int = _opt(
        0, "Drift windows: also close a window once it holds this many rows (0: by time only).", metavar="ROWS"
    )
    drift_queue_rows: int = _opt(
        65536,
        "Rows waiting to be binned at most; beyond that rows are skipped and counted, so monitoring "
        "never slows serving.",
        metavar="ROWS",
    )
    monitor_task: Literal["auto", "classification", "regression"] = _opt(
        "auto",
        "What the prediction output holds, for label feedback: auto (classification for integer, "
        "string or bool outputs and for float scores of several columns, taking the argmax; "
        "regression for one float per row).",
    )
    monitor_prediction: str = _opt(
        "", "The output that holds the prediction, for label feedback (default: the first output).", metavar="OUTPUT"
    )
    positive_class: str = _opt(
        "", "Classification: the class whose sensitivity, specificity and precision are reported.", metavar="LABEL"
    )
    feedback_ttl_seconds: float = _opt(
        86400.0, "How long a prediction waits for its label (POST .../feedback).", metavar="SECONDS"
    )
    feedback_max_pending: int = _opt(
        100_000, "Most predictions waiting for a label per model version; the oldest go first.", metavar="N"
    )
    audit_dir: str | None = _opt(
        None,
        "Write a tamper-evident audit log of every inference and model change here (the built-in "
        "file sink; see 'servecore audit'). Needs --audit-keys.",
        metavar="DIR",
    )
    audit_keys: str | None = _opt(
        None,
        "Key directory made by 'servecore audit keygen DIR' (signing, pseudonym and per-subject "
        "keys); keep it away from the log.",
        metavar="DIR",
    )
    audit_fsync: Literal["always", "interval", "never"] = _opt(
        "interval",
        "always: an inference is answered only once its record is on disk; interval: fsync every "
        "second; never: leave it to the operating system.",
    )
    audit_on_failure: Literal["fail-closed", "fail-open"] = _opt(
        "fail-closed",
        "When the audit log cannot be written: fail-closed answers new inferences 503; fail-open "
        "keeps serving, counts the lost records and writes one audit_gap record once writing works.",
    )
    audit_checkpoint_every: int = _opt(10_000, "Sign a checkpoint every this many audit records.", metavar="N")
    audit_checkpoint_seconds: float = _opt(
        60.0, "... or this many seconds after the first unsigned record (and at shutdown).", metavar="SECONDS"
    )
    audit_anchor_dir: str | None = _opt(
        None, "A second directory (another disk) every signed checkpoint is also written to.", metavar="DIR"
    )
    audit_retention_months: int = _opt(
        6, "Remove whole audit segments this many calendar months after their last record (0: never).", metavar="N"
    )
    audit_payloads: bool = _opt(
        False,
        "Also keep each request and response body in the audit log, encrypted (AES-GCM) under a key "
        "of the request's data subject (--audit-subject-header), so erasing that subject's key makes "
        "them unreadable while the log still verifies. Requests without a subject keep no payload.",
    )
    audit_subject_header: str = _opt(
        "x-data-subject",
        "Request header naming the data subject of a request (for payload capture and erasure).",
        metavar="HEADER",
    )
    host: str = _opt("127.0.0.1", "Address to listen on (0.0.0.0 for every interface).")
    port: int = _opt(8000, "TCP port for HTTP.")
    providers: str | None = _opt(
        None,
        "Comma-separated onnxruntime execution providers in priority order, e.g. "
        "'CUDAExecutionProvider,CPUExecutionProvider'. Default: probe TensorRT, CUDA, then CPU.",
        metavar="LIST",
    )
    trt_cache_dir: str = _opt(
        "", "Directory for TensorRT engine caches (default ~/.cache/servecore/tensorrt).", metavar="DIR"
    )
    intra_op_threads: int = _opt(
        0, "Threads onnxruntime may use inside one operator (0: one per CPU the model threads may use when "
        "--model-cpus, taskset or a cpuset confines them, else onnxruntime's default).", metavar="N"
    )
    inline_compute_us: int = _opt(
        100,
        "Run a model on the event-loop thread when its measured execution takes at most this many "
        "microseconds per request, instead of handing it to its worker thread (a thread hand-off "
        "costs more than a small model's whole run). 0: always use the worker thread.",
        metavar="US",
    )
    model_cpus: str = _opt(
        "",
        "CPUs for the threads that run models, e.g. '0' or '2-7' (the event loop gets the others): "
        "keeps the model and the request handling off each other's cores. Empty: the kernel places "
        "every thread. Linux only.",
        metavar="LIST",
    )
    gil_switch_interval_us: int = _opt(
        200,
        "How long the event loop may keep the GIL from a model thread that is waiting for it "
        "(sys.setswitchinterval; Python's default is 5000). A model thread needs the GIL for a "
        "moment before and after every onnxruntime or PyTorch call: at 5 ms a busy loop keeps a "
        "model core or a GPU idle for up to twice that per call.",
        metavar="US",
    )
    max_batch_size: int = _opt(
        0,
        "Dynamic batching: most rows (first-dimension entries, not requests) one model execution "
        "takes. 0 turns batching off. Applies to models whose inputs all have a variable first dimension.",
        metavar="ROWS",
    )
    max_queue_delay_us: int = _opt(
        0,
        "Dynamic batching: longest a request waits for others to join its batch (0: a batch starts "
        "as soon as an instance is free, taking whatever is queued).",
        metavar="US",
    )
    preferred_batch_sizes: str = _opt(
        "", "Dynamic batching: comma-separated batch sizes (rows) to send at once when reached.", metavar="LIST"
    )
    max_queue_size: int = _opt(
        0, "Dynamic batching: most rows waiting per model; more is refused with 429 (0: no limit).", metavar="ROWS"
    )
    instances: int = _opt(1, "Dynamic batching: batches of one model that may run at the same time.", metavar="N")
    default_timeout_us: int = _opt(
        0,
        "Dynamic batching: queue timeout of requests without a 'timeout' parameter (0: none). A request "
        "still queued at its timeout is answered 504 without running.",
        metavar="US",
    )
    pad_inputs: str = _opt(
        "",
        "Dynamic batching: comma-separated 'input=pad_value[:mask_input]'. Requests whose shapes differ "
        "only in these inputs' variable dimensions share a batch, padded to the largest with pad_value; an "
        "output dimension the model declares variable and that has a padded input's size on the same "
        "axis is cut back to each request's own size. A mask input (same shape as the input) is padded "
        "with 0, and filled with 1 by the server when a request does not send it.",
        metavar="LIST",
    )
    api_keys_file: str | None = _opt(
        None,
        "File of API keys, one 'name:key' per line ('#' starts a comment). When given, every "
        "endpoint but the health probes requires 'Authorization: Bearer <key>', and the key's "
        "name becomes the request's principal.",
        metavar="FILE",
    )
    max_body_size: int = _opt(
        64 * 1024 * 1024,
        "Largest request body in bytes, checked before and after decompression (413 above it).",
        metavar="BYTES",
    )
    body_timeout: float = _opt(
        30.0,
        "Seconds a client may go without sending while its request body is incomplete (408 after; 0: no limit).",
        metavar="SECONDS",
    )
    graceful_timeout: float = _opt(
        30.0,
        "Seconds in-flight requests may take to finish after SIGTERM/SIGINT before the server exits.",
        metavar="SECONDS",
    )
    keep_alive_timeout: float = _opt(
        5.0,
        "Seconds an idle keep-alive connection stays open, and a request head may take to arrive (0: no limit).",
        metavar="SECONDS",
    )
    not_ready_status: int = _opt(
        400, "HTTP status of a negative readiness answer (the protocol says 400; some platforms want 503)."
    )
    pure_python: bool = _opt(False, "Use the pure-Python twins instead of the compiled core.")
    disable_plugins: str = _opt(
        "", "Comma-separated plugin names not to load (see 'servecore plugins').", metavar="LIST"
    )
    log_level: LogLevel = _opt("info", "Log level.")
    access_log: bool = _opt(False, "Log every HTTP request.")
    fast_path: bool = _opt(
        True,
        "Answer inference on batched models straight from the HTTP connection into the batch scheduler "
        "(no task or ASGI round trip per request); --no-fast-path sends every request through the ASGI app.",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be within 0..65535, not {self.port}")
        if self.max_body_size <= 0:
            raise ConfigError(f"max_body_size must be positive, not {self.max_body_size}")
        if self.body_timeout < 0:
            raise ConfigError(f"body_timeout must be >= 0, not {self.body_timeout}")
        if self.graceful_timeout < 0:
            raise ConfigError(f"graceful_timeout must be >= 0, not {self.graceful_timeout}")
        if self.keep_alive_timeout < 0:
            raise ConfigError(f"keep_alive_timeout must be >= 0, not {self.keep_alive_timeout}")
        for name in ("max_batch_size", "max_queue_delay_us", "max_queue_size", "default_timeout_us"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.instances < 1:
            raise ConfigError(f"instances must be >= 1, not {self.instances}")
        try:
            self.pad_values
        except ValueError:
            raise ConfigError(f"pad_inputs must be comma-separated 'input=number' pairs, not {self.pad_inputs!r}") from None
        try:
            self.preferred_batch_list
        except ValueError:
            raise ConfigError(f"preferred_batch_sizes must be comma-separated integers, not {self.preferred_batch_sizes!r}") from None
        try:
            parse_cpus(self.model_cpus)
        except ValueError as exc:
            raise ConfigError(f"model_cpus: {exc}") from None
        if self.gil_switch_interval_us < 1:
            raise ConfigError(f"gil_switch_interval_us must be >= 1, not {self.gil_switch_interval_us}")
        if self.inline_compute_us < 0:
            raise ConfigError(f"inline_compute_us must be >= 0, not {self.inline_compute_us}")
        if self.intra_op_threads < 0:
            raise ConfigError(f"intra_op_threads must be >= 0, not {self.intra_op_threads}")
        if self.not_ready_status not in (400, 503):
            raise ConfigError(f"not_ready_status must be 400 or 503, not {self.not_ready_status}")
        if self.drift_window_seconds <= 0 or self.feedback_ttl_seconds <= 0:
            raise ConfigError("drift_window_seconds and feedback_ttl_seconds must be > 0")
        for name in ("drift_window_rows", "drift_queue_rows", "feedback_max_pending"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.poll_interval <= 0:
            raise ConfigError(f"poll_interval must be > 0, not {self.poll_interval}")
        if self.idle_unload_seconds < 0:
            raise ConfigError(f"idle_unload_seconds must be >= 0, not {self.idle_unload_seconds}")
        if self.model_name is not None and len(self.models) > 1:
            raise ConfigError("--model-name names a single model; several model files were given")
        if self.model_name is not None and ("/" in self.model_name or not self.model_name):
            raise ConfigError(f"model name {self.model_name!r} must be non-empty and contain no '/'")

    @property
    def disabled_plugins(self) -> frozenset[str]:
        """The plugin names in :attr:`disable_plugins`."""
        return frozenset(p.strip() for p in self.disable_plugins.split(",") if p.strip())

    @property
    def pad_values(self) -> dict[str, float]:
        """The inputs in :attr:`pad_inputs` and their pad values."""
        values: dict[str, float] = {}
        for item in self.pad_inputs.split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            value, _, mask = value.partition(":")
            if not sep or not name.strip():
                raise ValueError(item)
            values[name.strip()] = float(value)
            if mask.strip():
                values.setdefault(mask.strip(), 0.0)
        return values

    @property
    def pad_masks(self) -> dict[str, str]:
        """Mask input by padded input, from :attr:`pad_inputs` (``input=value:mask``)."""
        masks: dict[str, str] = {}
        for item in self.pad_inputs.split(","):
            name, _, rest = item.partition("=")
            mask = rest.partition(":")[2].strip()
            if mask:
                masks[name.strip()] = mask
        return masks

    @property
    def preferred_batch_list(self) -> tuple[int, ...]:
        """The sizes in :attr:`preferred_batch_sizes`, ascending."""
        return tuple(sorted({int(p) for p in self.preferred_batch_sizes.split(",") if p.strip()}))

    @property
    def provider_list(self) -> tuple[str, ...] | None:
        """The providers asked for with --providers, or None to probe."""
        if not self.providers:
            return None
        return tuple(p.strip() for p in self.providers.split(",") if p.strip())

    @property
    def resolved_trt_cache_dir(self) -> str:
        return self.trt_cache_dir or default_trt_cache_dir()

    @property
    def resolved_model_cache_dir(self) -> Path:
        return Path(self.model_cache_dir) if self.model_cache_dir else Path(default_cache_dir()) / "models"

    @property
    def model_admin_names(self) -> frozenset[str]:
        """The principals in :attr:`model_admins`."""
        return frozenset(p.strip() for p in self.model_admins.split(",") if p.strip())

    def replace(self, **changes: Any) -> ServeConfig:
        """A copy with *changes* applied (and validated)."""
        return dataclasses.replace(self, **changes)


def config_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The fields of :class:`ServeConfig`, in declaration order."""
    return dataclasses.fields(ServeConfig)


def env_name(field_name: str) -> str:
    """The environment variable of a config field: ``max_body_size`` -> ``SERVECORE_MAX_BODY_SIZE``."""
    return ENV_PREFIX + field_name.upper()


def option_name(field_name: str) -> str:
    """The CLI option of a config field: ``max_body_size`` -> ``--max-body-size``."""
    return "--" + field_name.replace("_", "-")


def from_mapping(values: Mapping[str, Any]) -> ServeConfig:
    """Build a config from already-typed values (as the CLI does), rejecting unknown names."""
    known = {f.name for f in config_fields()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown configuration fields: {', '.join(unknown)}")
    return ServeConfig(**values)
