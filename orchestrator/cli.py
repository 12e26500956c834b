"""speedster-run: find the fastest way to run a model on a device, with every backend in its own runner.

    speedster-run --model model.onnx --device cpu [options]
    speedster-run backends [--json]             what each backend offers on this machine
    speedster-run compare BASE.json NEW.json    two runs side by side; exit 1 when the winner got slower (a CI gate)
    speedster-run images build|list|push|pull|compose   the backends' runner images
    speedster-run example-model NAME OUTPUT     a model with random weights (resnet18/50, bert-base...), saved as a
                                                torch.export .pt2 or, with --format torchscript, a TorchScript file
    speedster-run --version                     this version and each backend's installed library versions

Exit status: 0 with a winner, 1 when no candidate qualified, 2 for a user error, 3 for an internal error (a bug),
130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM); runners and work directories are removed either way.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from orchestrator.config import (DEFAULT_SANDBOX, PRECISIONS, SANDBOXES, RunConfig, TimingConfig, check_threads,
                                 parse_device)
from orchestrator.errors import UserError
from speedster_run.shared import catalog
from speedster_run.shared.catalog import DEFAULT_COMPILE_TIMEOUT_S

EXIT_WINNER, EXIT_NO_WINNER, EXIT_USER_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a process SIGTERM ended


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _precisions(text: str) -> tuple[str, ...]:
    values = _names(text)
    bad = [v for v in values if v not in PRECISIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(bad)}; use {', '.join(PRECISIONS)}")
    return values


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than zero")
        return value

    return parse


_RUN = RunConfig(model=Path())  # the CLI's defaults are a RunConfig's own, not a second copy
_TIMING = TimingConfig()


def _longer_deadlines() -> str:
    """"tensorrt 1800 s, neuron 1800 s": the backends whose compile deadline is not the default."""
    return ", ".join(f"{entry.name} {entry.compile_timeout_s:g} s" for entry in catalog.CATALOG
                     if entry.compile_timeout_s != DEFAULT_COMPILE_TIMEOUT_S)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other user error."""

    def error(self, message: str):
        raise UserError(f"{message} (see speedster-run --help)")


def run_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="speedster-run", description=__doc__.split("\n\n")[0],
                usage="speedster-run --model MODEL [--device DEVICE] [options]\n"
                      "       speedster-run {backends,compare,images,example-model} ... | --version",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, type=Path, help="an .onnx file, a TorchScript file or a torch.export .pt2")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N], gpu[:N], tpu[:N] or neuron[:N] (default: cpu)")
    p.add_argument("--backends", type=_names, default=None, help="comma-separated backends to try (default: all)")
    p.add_argument("--ignore-backends", type=_names, default=(), help="comma-separated backends to skip")
    p.add_argument("--precision", type=_precisions, default=None,
                   help="comma-separated precisions to try (default: fp32, plus fp16/bf16/int8 with --metric-drop-ths)")
    p.add_argument("--metric-drop-ths", type=float, default=None,
                   help="largest accepted drop (mean |diff| / mean |reference|); allows fp16/bf16/int8 candidates")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224[:dtype]",
                   help="concrete shape (and dtype) of an input with symbolic dimensions; repeatable")
    p.add_argument("--inputs", action="append", type=Path, default=[], metavar="FILE.npz",
                   help="one input set per .npz (arrays named as the model's inputs); repeatable")
    p.add_argument("--samples", type=_positive(int), default=_RUN.samples,
                   help=f"random input sets when no --inputs (default {_RUN.samples})")
    p.add_argument("--seed", type=int, default=_RUN.seed, help=f"seed of the random inputs (default {_RUN.seed})")
    p.add_argument("--threads", type=int, default=0,
                   help="threads per model (default: every usable core); more than the usable cores is refused")
    p.add_argument("--warmup", type=int, default=_TIMING.warmup_iterations,
                   help=f"warm-up iterations per benchmark round (default {_TIMING.warmup_iterations})")
    p.add_argument("--iterations", type=_positive(int), default=None,
                   help="timed iterations per candidate, instead of the time budget")
    p.add_argument("--time-budget", type=_positive(float), default=_TIMING.time_budget_s,
                   help="a cap on the seconds of timed runs per candidate, over all rounds: each round stops "
                        "sooner once its timings are stable (default "
                        f"{_TIMING.time_budget_s:g})")
    p.add_argument("--rounds", type=_positive(int), default=_TIMING.rounds,
                   help=f"interleaved benchmark rounds: each candidate measures once per round (default "
                        f"{_TIMING.rounds})")
    p.add_argument("--tune-budget", type=_positive(float), default=None, metavar="SECONDS",
                   help="also try the candidates that tune for this model (TVM's MetaSchedule), within this many "
                        "seconds each; tuning records are cached, so a rerun does not tune again")
    p.add_argument("--backend-option", action="append", default=[], metavar="BACKEND:KEY=VALUE",
                   help="an option passed to one backend's compiler, e.g. onnxruntime:graph_optimization_level=basic, "
                        "tvm:tune_trials=256; repeatable")
    p.add_argument("--timeout", type=_positive(float), default=None, metavar="SECONDS",
                   help="deadline of every runner call (a compile, an inference), in seconds (default: each "
                        f"backend's own compile deadline, {DEFAULT_COMPILE_TIMEOUT_S:g} s unless it needs longer: "
                        f"{_longer_deadlines()})")
    p.add_argument("--report", type=Path, default=None, metavar="report.json", help="write the full report here")
    p.add_argument("--junit", type=Path, default=None, metavar="FILE.xml",
                   help="write a JUnit XML report (one test case per candidate) for CI report viewers")
    p.add_argument("--summary-md", type=Path, default=None, metavar="FILE.md",
                   help="append the table and verdict as Markdown (e.g. to $GITHUB_STEP_SUMMARY)")
    p.add_argument("--html", type=Path, default=None, metavar="FILE.html",
                   help="write a self-contained HTML report: latency plot, speedups, failures, environment")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr (results still on stdout)")
    p.add_argument("--save", type=Path, default=None, metavar="DIR", help="write the winner's artifact and manifest")
    p.add_argument("--sandbox", choices=SANDBOXES, default=None,
                   help="where runners live: auto (a backend's Docker image where the engine answers and the image "
                        "exists, else a local process), local processes, docker containers (hardened, one image per "
                        f"backend), remote (already running, given with --runner); default: {DEFAULT_SANDBOX}")
    p.add_argument("--runner", action="append", default=[], metavar="NAME=ADDR",
                   help="an already-running runner for backend NAME at host:port or unix:///path (repeatable); "
                        "implies --sandbox remote, and the backends tried are those given (unless --backends narrows)")
    p.add_argument("--runner-tls-ca", type=Path, default=None, metavar="PATH",
                   help="PEM CA that signed the runners' certificates: connect over TLS (required off loopback)")
    p.add_argument("--runner-tls-server-name", default=None, metavar="NAME",
                   help="the name in the runners' certificates, when it differs from the host in ADDR")
    p.add_argument("--runner-tls-cert", type=Path, default=None, metavar="PATH",
                   help="client certificate for runners that require mutual TLS (with --runner-tls-key)")
    p.add_argument("--runner-tls-key", type=Path, default=None, metavar="PATH", help="key of --runner-tls-cert")
    p.add_argument("--runner-token-file", type=Path, default=None, metavar="PATH",
                   help="file with the runners' bearer token (default: $SPEEDSTER_RUN_TOKEN; required off loopback)")
    p.add_argument("--runner-insecure", action="store_true",
                   help="allow non-loopback runners without TLS and a token (a trusted private network only)")
    p.add_argument("--trust-model", action="store_true",
                   help="a torch file that holds more than weights and a graph (pickled objects, code) is refused "
                        "unless you trust it: then it is opened only by the torch runner in its container (--sandbox "
                        "docker or auto with the torch image) or on another host (--runner torch=ADDR), never here")
    return p


def _remote_settings(args: argparse.Namespace):
    """(sandbox, runner addresses, backends, security) from --sandbox, --runner and the TLS/token options; UserError
    for an option that cannot be read. Whether the remote settings can work together (a runner for every backend,
    TLS and a token off loopback) is checked where the remote sandbox is made (sandboxes.remote.check_settings)."""
    from orchestrator.config import RunnerSecurity
    from orchestrator.sandboxes.remote import parse_runner
    from speedster_run.shared.security import SecurityConfigError, read_token

    try:
        addresses = tuple(parse_runner(text) for text in args.runner)
    except ValueError as error:
        raise UserError(str(error)) from None
    sandbox = args.sandbox or ("remote" if addresses else DEFAULT_SANDBOX)
    if addresses and sandbox != "remote":
        raise UserError(f"--runner needs --sandbox remote (or no --sandbox), not --sandbox {sandbox}")
    if sandbox != "remote":
        return sandbox, addresses, args.backends, RunnerSecurity()
    for option in ("runner_tls_ca", "runner_tls_cert", "runner_tls_key", "runner_token_file"):
        path = getattr(args, option)
        if path is not None and not path.is_file():
            raise UserError(f"--{option.replace('_', '-')} {path}: no such file")
    if (args.runner_tls_cert is None) != (args.runner_tls_key is None):
        raise UserError("--runner-tls-cert and --runner-tls-key go together")
    try:
        token = read_token(args.runner_token_file)
    except SecurityConfigError as error:
        raise UserError(str(error)) from None
    security = RunnerSecurity(tls_ca=args.runner_tls_ca, tls_cert=args.runner_tls_cert, tls_key=args.runner_tls_key,
                              server_name=args.runner_tls_server_name, token=token, insecure=args.runner_insecure)
    # The backends tried are those given with --runner, unless --backends narrows them.
    given = tuple(dict.fromkeys(name for name, _ in addresses))
    return sandbox, addresses, args.backends or given or None, security


def build_config(args: argparse.Namespace) -> RunConfig:
    from orchestrator.inputs import parse_shape_override

    try:
        device = parse_device(args.device)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.threads < 0:
        raise UserError("--threads must be 0 (every core) or more")
    _check_outputs(args)
    sandbox, runner_addresses, backends, runner_security = _remote_settings(args)
    check_threads(args.threads, sandbox, "--threads")
    return RunConfig(
        model=args.model, device=device, backends=backends, ignore_backends=args.ignore_backends,
        precisions=args.precision, metric_drop_ths=args.metric_drop_ths,
        input_shapes=dict(parse_shape_override(text) for text in args.input_shape),
        input_files=tuple(args.inputs), samples=args.samples, seed=args.seed, threads=args.threads,
        timing=TimingConfig(warmup_iterations=args.warmup, iterations=args.iterations,
                            time_budget_s=args.time_budget, rounds=args.rounds),
        timeout_s=args.timeout, report_path=args.report, save_dir=args.save,
        sandbox=sandbox, runner_addresses=runner_addresses, runner_security=runner_security,
        tune_budget_s=args.tune_budget, backend_options=_backend_options(args.backend_option),
        trust_model=args.trust_model,
    )


def _check_outputs(args: argparse.Namespace) -> None:
    """--report and --save, before anything starts: never over the model or an input file, and writable."""
    from orchestrator.output_paths import OUTPUT_KINDS, check_report_path

    if args.save is not None:
        from orchestrator.artifacts import check_save_dir

        check_save_dir(args.save)
    protected = [("the model given with --model", args.model)] + [("an --inputs file", p) for p in args.inputs]
    outputs = {option: path for option, path in (("--report", args.report), ("--junit", args.junit),
                                                 ("--summary-md", args.summary_md), ("--html", args.html))
               if path is not None}
    for option, path in outputs.items():
        check_report_path(path, option, protected, OUTPUT_KINDS[option])
        if args.save is not None and path.resolve().is_relative_to(args.save.resolve()):
            raise UserError(f"{option} {path} is inside --save {args.save}, which holds the saved model only; "
                            "write it elsewhere")
        protected.append((f"the file given with {option}", path))


def _backend_options(items: list[str]) -> dict[str, dict[str, str]]:
    """--backend-option BACKEND:KEY=VALUE ... -> {backend: {key: value}}; UserError if malformed."""
    options: dict[str, dict[str, str]] = {}
    for item in items:
        backend, colon, pair = item.partition(":")
        key, equals, value = pair.partition("=")
        if not (colon and equals and backend and key):
            raise UserError(f"--backend-option {item!r}: expected BACKEND:KEY=VALUE, e.g. tvm:tune_trials=256")
        options.setdefault(backend, {})[key] = value
    return options


class Progress:
    """One line per step on stderr, with the time since the start. A step can take minutes with nothing to say (a
    compile, a benchmark round): after `quiet_s` seconds without a line, a ticker says the step is still running and
    for how long, so that a slow run does not look like a hung one."""

    def __init__(self, quiet_s: float = 10.0) -> None:
        self.started = time.perf_counter()
        self.quiet_s = quiet_s
        self._lock = threading.Lock()  # steps are said from several threads (runners start in parallel)
        self._step = ""
        self._step_started = self._last_line = self.started
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress-ticker", daemon=True)
        self._ticker.start()

    def __call__(self, message: str) -> None:
        with self._lock:
            now = time.perf_counter()
            self._step, self._step_started = message, now
            self._write(message, now)

    def _write(self, message: str, now: float) -> None:
        print(f"[{now - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)
        self._last_line = now

    def _tick(self) -> None:
        while not self._closed.wait(min(1.0, self.quiet_s / 4)):
            with self._lock:
                now = time.perf_counter()
                if self._step and now - self._last_line >= self.quiet_s:
                    self._write(f"... {self._step} still running ({now - self._step_started:.0f} s)", now)

    def close(self) -> None:
        self._closed.set()
        self._ticker.join()


def optimize_command(argv: list[str]) -> int:
    import textwrap

    from orchestrator.report import table, terminal_width
    from orchestrator.run import optimize

    args = run_parser().parse_args(argv)
    config = build_config(args)
    progress = None if args.quiet else Progress()
    try:
        report = optimize(config, progress=progress or _quiet)
    finally:
        if progress is not None:
            progress.close()
    print()
    print(table(report))
    print()
    print(textwrap.fill(report.verdict, width=terminal_width(), break_on_hyphens=False))
    if config.report_path is not None:
        report.write_json(config.report_path)
        print(f"Report: {config.report_path}")
    _write_other_outputs(args, report.to_dict())
    if report.save_error:
        print(f"speedster-run: error: {report.save_error}", file=sys.stderr)
        return EXIT_NO_WINNER
    if config.save_dir is not None and report.winner is not None:
        print(f"Saved: {config.save_dir} (load it with orchestrator.loader.load_saved)")
    return EXIT_WINNER if report.winner is not None else EXIT_NO_WINNER


def _quiet(message: str) -> None:
    pass


def _write_other_outputs(args: argparse.Namespace, report: dict) -> None:
    """--junit, --summary-md and --html, each from the same data as report.json."""
    if args.junit is not None:
        from orchestrator.junit import write_junit

        write_junit(report, args.junit)
        print(f"JUnit: {args.junit}")
    if args.summary_md is not None:
        from orchestrator.markdown import write_summary

        write_summary(report, args.summary_md)
    if args.html is not None:
        from orchestrator.html_report import write_html

        write_html(report, args.html)
        print(f"HTML: {args.html}")


def version_command() -> int:
    """This version, the protocol's, and the version of each backend's main library installed here (read from the
    installed packages' metadata: nothing is imported, no runner started). Images carry their own in their labels
    (speedster-run images list)."""
    from importlib import metadata

    from speedster_run.runner.v1 import PROTOCOL_VERSION

    print(f"speedster-run {metadata.version('speedster-run')} (runner protocol {PROTOCOL_VERSION})")
    for entry in catalog.CATALOG:
        try:
            installed = f"{entry.main_package} {metadata.version(entry.main_package)}"
        except metadata.PackageNotFoundError:
            installed = f"{entry.main_package} not installed here"
        print(f"  {entry.name:<22} {installed}")
    return EXIT_WINNER


class TerminatedError(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the same path as Ctrl-C, so that every finally block runs (runners stopped,
    work directories removed). Python's default for SIGTERM is to die on the spot and leave both behind."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut short the cleanup
    raise TerminatedError()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        if argv[:1] in (["--version"], ["-V"]):
            code = version_command()
        elif argv[:1] == ["compare"]:
            from orchestrator.compare_command import compare_command

            code = compare_command(argv[1:])
        elif argv[:1] == ["backends"]:
            from orchestrator.backends_command import backends_command

            code = backends_command(argv[1:])
        elif argv[:1] == ["images"]:
            from orchestrator.images_command import images_command

            code = images_command(argv[1:])
        elif argv[:1] == ["example-model"]:
            from orchestrator.zoo import main as zoo_main

            code = zoo_main(argv[1:])
        else:
            code = optimize_command(argv)
    except UserError as error:
        print(f"speedster-run: error: {error}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except TerminatedError:
        print("speedster-run: terminated (SIGTERM); runners stopped", file=sys.stderr)
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        print("speedster-run: interrupted; runners stopped", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2)
        code = exit_.code if isinstance(exit_.code, int) else EXIT_USER_ERROR
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        print(f"speedster-run: internal error (a bug, please report it): {type(error).__name__}: {error} "
              f"at {where.filename}:{where.lineno}", file=sys.stderr)
        code = EXIT_INTERNAL
    finally:
        if in_main_thread and previous is not None:  # None: a handler installed outside Python, left alone
            signal.signal(signal.SIGTERM, previous)
    return code


if __name__ == "__main__":
    sys.exit(main())
