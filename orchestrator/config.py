"""The frozen configuration of one run, built once by the CLI (or the Python API) and passed down explicitly."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.model_source import ShapeOverrides
from speedster_run.shared import catalog, measure

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TUNED = "tuned"  # the variant of backends that tune for the model (minutes): planned only with a tuning budget
DEVICE_KINDS = ("cpu", "cuda", "gpu", "tpu", "neuron")
SANDBOXES = ("local", "docker", "remote", "auto")
# Where runners live unless the caller says: the CLI, the Python API and a RunConfig built by hand all start here.
DEFAULT_SANDBOX = "auto"


@dataclasses.dataclass(frozen=True)
class TimingConfig:
    """How each candidate is measured: `rounds` interleaved rounds, each with this share of the budget. The warm-up,
    the windows and their stability test are the measurement's own notions: their defaults are the shared layer's
    (speedster_run.shared.measure), the same the runner applies, not a second copy of the numbers."""

    warmup_iterations: int = measure.WARMUP_ITERATIONS
    iterations: int | None = None  # a fixed count per candidate instead of the time budget
    time_budget_s: float = 3.0  # per candidate, over all rounds
    rounds: int = 3
    window_iterations: int = measure.WINDOW_ITERATIONS
    stability_pct: float = measure.STABILITY_PCT
    stable_windows: int = measure.STABLE_WINDOWS
    # After a round, a candidate over `hopeless_factor` times slower than the fastest, and slower than
    # `hopeless_min_ms` (so that dropping it saves real time), is not timed again: more rounds cannot make it win.
    hopeless_factor: float = 10.0
    hopeless_min_ms: float = 100.0


@dataclasses.dataclass(frozen=True)
class RunnerSecurity:
    """How the orchestrator reaches runners given with --runner: TLS trusting `tls_ca` (plus a client certificate for
    mutual TLS), a bearer token, and `insecure` to allow a non-loopback address without them."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    server_name: str | None = None  # the name the runner's certificate carries, when it differs from the address
    token: str | None = dataclasses.field(default=None, repr=False)  # never written to the report
    insecure: bool = False

    def client_options(self) -> dict:
        """Keyword arguments of RunnerClient and wait_until_serving."""
        return {"tls_ca": self.tls_ca, "token": self.token, "server_name": self.server_name,
                "tls_cert": self.tls_cert, "tls_key": self.tls_key}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: Path
    device: str = "cpu"
    backends: tuple[str, ...] | None = None  # None: every registered backend
    ignore_backends: tuple[str, ...] = ()
    precisions: tuple[str, ...] | None = None  # None: fp32, plus fp16/bf16/int8 when metric_drop_ths is set
    metric_drop_ths: float | None = None
    input_shapes: ShapeOverrides = dataclasses.field(default_factory=dict)
    input_files: tuple[Path, ...] = ()
    samples: int = 8  # random input sets: calibration and accuracy check
    seed: int = 0
    threads: int = 0  # 0: every core this process may use
    timing: TimingConfig = TimingConfig()
    # --timeout: the deadline of every runner call (a benchmark round adds its budget). None: each backend's own,
    # from the catalog (call_timeout_s).
    timeout_s: float | None = None
    report_path: Path | None = None
    save_dir: Path | None = None
    sandbox: str = DEFAULT_SANDBOX  # one of SANDBOXES
    # --runner NAME=ADDR: (backend, address) of runners already running elsewhere (the remote sandbox)
    runner_addresses: tuple[tuple[str, str], ...] = ()
    runner_security: RunnerSecurity = RunnerSecurity()  # TLS and token for those runners
    exclude: tuple[tuple[str, str | None], ...] = ()  # (backend, variant or None: all) left out of the plan
    original_may_win: bool = True  # False: the original is the baseline only (the Python API returns a compiled model)
    tune_budget_s: float | None = None  # set: also plan the "tuned" variants, each tuning within this budget
    backend_options: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # backend -> its options
    trust_model: bool = False  # --trust-model: a torch file is opened only in a contained runner (trusted_torch.py)

    def load_options(self, backend: str, variant: str, contained: bool = False) -> dict[str, str]:
        """The options of one candidate's Load: the user's for its backend, plus the tuning budget for "tuned", plus
        trust in the model file for a torch runner in a container or on another host (`contained`) with
        --trust-model."""
        from speedster_run.shared.torch_io import TRUST_OPTION

        options = dict(self.backend_options.get(backend, {}))
        options.pop(TRUST_OPTION, None)  # only --trust-model grants it, and only to a contained runner
        if variant == TUNED and self.tune_budget_s is not None:
            options.setdefault("tune_budget_s", f"{self.tune_budget_s:g}")
        if self.trust_model and contained and backend == "torch":  # the one backend whose load honours it
            options[TRUST_OPTION] = "true"
        return options

    def call_timeout_s(self, backend: str) -> float:
        """The deadline of one call to the backend's runner: --timeout when given, else the backend's compile deadline
        from the catalog (a backend whose compiler may take half an hour gets that long; a first inference that
        compiles lazily fits in it too)."""
        return self.timeout_s if self.timeout_s is not None else catalog.compile_timeout_s(backend)

    @property
    def effective_threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        security = {key: (str(value) if isinstance(value, Path) else value)
                    for key, value in data["runner_security"].items()}
        security["token"] = "(set)" if self.runner_security.token else None
        data["runner_security"] = security
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in data.items()} | {
            "input_files": [str(p) for p in self.input_files],
            "effective_threads": self.effective_threads,
        }


def check_threads(threads: int, sandbox: str, setting: str) -> None:
    """UserError for more threads than this process may use: they would measure contention, not the model. Remote
    runners' cores are their hosts', not ours."""
    usable = len(os.sched_getaffinity(0))
    if threads > usable and sandbox != "remote":
        raise UserError(f"{setting} {threads}: only {usable} cores are usable here; give at most {usable}, or 0 for "
                        "all of them (more threads than cores would measure contention, not the model)")


def parse_device(text: str) -> str:
    """"cpu", "cuda", "cuda:1", "gpu:0", "tpu:0", "neuron:1" -> canonical form ("cuda:0" for a bare "cuda");
    ValueError if bad."""
    kind, sep, index = text.strip().lower().partition(":")
    if kind not in DEVICE_KINDS or (sep and not index.isdigit()) or (kind == "cpu" and sep):
        raise ValueError(f"unknown device {text!r}; use cpu, cuda[:N], gpu[:N], tpu[:N] or neuron[:N]")
    return kind if kind == "cpu" else f"{kind}:{int(index or 0)}"
