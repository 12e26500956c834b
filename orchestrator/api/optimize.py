"""optimize_model with Speedster's signature, on top of the orchestrator: export, run every candidate in its
runner, check outputs with the chosen metric, return the fastest accurate compiled model behind the original's
interface."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.api import compilers, dynamic, metrics, summary
from orchestrator.api import input_data as data_forms
from orchestrator.api.as_returned import AsReturned, measure_as_returned
from orchestrator.api.baseline import TorchCaller
from orchestrator.api.export import call_options, evaluating, export, forward_parameters, is_huggingface
from orchestrator.api.optimized_model import OptimizedModel, write_meta
from orchestrator.config import DEFAULT_SANDBOX, RunConfig, TimingConfig, check_threads, parse_device
from orchestrator.errors import UserError

OPTIMIZATION_TIMES = {
    # Every compiler once, each allowed precision, a short measurement.
    "constrained": TimingConfig(time_budget_s=2.0, rounds=2),
    # The same candidates measured longer, plus the tuning ones (TVM's MetaSchedule, within a budget).
    "unconstrained": TimingConfig(time_budget_s=6.0, rounds=3),
}
UNCONSTRAINED_TUNE_BUDGET_S = 600.0  # per tuning candidate (TVM's MetaSchedule), unless tune_budget_s= says
THREAD_VARIABLES = ("SPEEDSTER_RUN_THREADS_PER_MODEL", "NEBULLVM_THREADS_PER_MODEL")


def _say(message: str) -> None:
    print(f"speedster-run: {message}", file=sys.stderr, flush=True)


def _threads() -> int:
    """Threads per model from the environment (Speedster's NEBULLVM_THREADS_PER_MODEL too); 0: every core."""
    for variable in THREAD_VARIABLES:
        value = os.environ.get(variable)
        if value:
            if not value.isdigit():
                raise ValueError(f"{variable}={value!r}: expected a whole number of threads")
            try:
                check_threads(int(value), "local", variable)
            except UserError as error:
                raise ValueError(str(error)) from None
            return int(value)
    return 0


def _device(device: str | None) -> tuple[str, str]:
    """(the run's device, the torch device outputs go to). Default: the accelerator if there is one."""
    if device is None:
        try:
            import torch

            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
    canonical = parse_device(device)
    kind, _, index = canonical.partition(":")
    # Outputs come back as torch tensors on the GPU asked for; TPU and Neuron results come back on the CPU.
    return canonical, f"cuda:{index}" if kind in ("cuda", "gpu") else "cpu"


def _onnx_inputs(path: Path) -> dict[str, str]:
    """The ONNX file's inputs: name -> dtype."""
    from orchestrator.model_source import inspect_onnx

    if not path.is_file():
        raise ValueError(f"model {str(path)!r}: no such file (pass a torch.nn.Module or an ONNX file path)")
    try:
        return {i.name: i.dtype for i in inspect_onnx(path)[0]}
    except UserError as error:
        raise ValueError(str(error)) from None


def _source_model(model: Any, samples: data_forms.Samples, axes: dynamic.DynamicAxes, workdir: Path
                  ) -> tuple[Path, dict, int | None]:
    """(model file for the orchestrator, output structure, original size in bytes)."""
    if isinstance(model, (str, Path)):  # an ONNX model returns its outputs as a list, as ONNX Runtime does
        from orchestrator.model_source import inspect_onnx

        outputs = inspect_onnx(Path(model))[1]
        leaves = {"sequence": "list", "items": [{"leaf": i} for i in range(len(outputs))]}
        return Path(model), leaves, Path(model).stat().st_size
    path, output_structure = export(model, samples, axes, workdir)
    size = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    return path, output_structure, size


def _npz_files(samples: list[dict[str, np.ndarray]], workdir: Path) -> tuple[Path, ...]:
    paths = []
    for index, sample in enumerate(samples):
        path = workdir / f"sample_{index}.npz"
        np.savez(path, **sample)
        paths.append(path)
    return tuple(paths)


def _samples(model: Any, input_data: Any, tokenizer: Any, tokenizer_args: dict | None) -> data_forms.Samples:
    """input_data as named samples, checked against the ONNX file's inputs or the module's forward()."""
    if isinstance(model, (str, Path)):
        onnx_inputs = _onnx_inputs(Path(model))
        names = list(onnx_inputs)
        samples = data_forms.normalize(input_data, names)
        data_forms.check_arity(samples, names, names)
        for name, array in samples.arrays[0].items():  # converting silently would check data the user never gave
            if array.dtype.name != onnx_inputs.get(name, array.dtype.name):
                raise data_forms.InputDataError(
                    f"input_data: input {name!r} is {array.dtype.name}, the model takes {onnx_inputs[name]}; pass "
                    f"arrays of that dtype (array.astype({onnx_inputs[name]!r}))")
        return samples
    if not hasattr(model, "forward") or not callable(model):
        raise ValueError(f"model is a {type(model).__name__}; pass a torch.nn.Module, a HuggingFace model or an ONNX "
                         "file path")
    required, accepted, variadic = forward_parameters(model)
    samples = data_forms.normalize(input_data, accepted, tokenizer, tokenizer_args)
    data_forms.check_arity(samples, required, None if variadic else accepted)
    return samples


def _dynamic_axes(dynamic_info: dict | None, samples: data_forms.Samples, say) -> dynamic.DynamicAxes:
    """The user's dynamic_info, or the axes whose size varies across the samples; every sample fits them."""
    axes = dynamic.parse(dynamic_info, samples) or dynamic.infer(samples)
    if axes and dynamic_info is None:
        say("input_data's shapes vary: dynamic axes " + ", ".join(
            f"{name}[{axis}]={a.name} {a.min}..{a.max}" for name, per in axes.items() for axis, a in per.items()))
    dynamic.check_consistent(axes, samples)
    return axes


def optimize_model(model: Any, input_data: Any, metric_drop_ths: float | None = None, metric: Any = None,
                   optimization_time: str = "constrained", dynamic_info: dict | None = None,
                   config_file: str | None = None, ignore_compilers: list[str] | None = None,
                   ignore_compressors: list[str] | None = None, store_latencies: bool = False,
                   device: str | None = None, **kwargs: Any) -> OptimizedModel | None:
    """Speedster's optimize_model: the fastest accurate compiled version of `model`, called like `model`.

    Extra keyword arguments: tokenizer= and tokenizer_args= (HuggingFace with strings as input_data),
    sandbox= ("auto", "local", "docker"), execution= ("auto", "in-process", "runner": where the returned model
    runs), backends= (a list of speedster-run backend names), measure_s= (seconds of measurement per candidate,
    instead of optimization_time's), tune_budget_s= (seconds of tuning per tuning candidate; "unconstrained"
    tunes for 600 s by default, "constrained" does not tune), quiet=True (no progress), report_path= (the run's
    report.json).
    Returns None, with a warning, when no compiled candidate matches the original's outputs.
    """
    tokenizer = kwargs.pop("tokenizer", None)
    tokenizer_args = kwargs.pop("tokenizer_args", None)
    sandbox = kwargs.pop("sandbox", DEFAULT_SANDBOX)
    execution = kwargs.pop("execution", "auto")
    backends = kwargs.pop("backends", None)
    quiet = kwargs.pop("quiet", False)
    report_path = kwargs.pop("report_path", None)
    measure_s = kwargs.pop("measure_s", None)
    tune_budget_s = kwargs.pop("tune_budget_s", UNCONSTRAINED_TUNE_BUDGET_S if optimization_time == "unconstrained"
                               else None)
    if kwargs:
        raise TypeError(f"optimize_model() got unexpected keyword argument(s): {', '.join(kwargs)}")
    if config_file is not None:
        raise ValueError("config_file is not supported: pass the options as arguments")
    if optimization_time not in OPTIMIZATION_TIMES:
        raise ValueError(f"optimization_time={optimization_time!r}: use {' or '.join(OPTIMIZATION_TIMES)}")
    say = (lambda message: None) if quiet else _say
    run_device, torch_device = _device(device)
    exclude = compilers.excluded(ignore_compilers, ignore_compressors)
    if report_path:  # before anything starts: never over the model, and a place that can be written
        from orchestrator.output_paths import check_report_path

        model_file = [("the model", Path(model))] if isinstance(model, (str, Path)) else []
        try:
            check_report_path(Path(report_path), "report_path", model_file)
        except UserError as error:
            raise ValueError(str(error)) from None

    from_file = isinstance(model, (str, Path))
    samples = _samples(model, input_data, tokenizer, tokenizer_args)
    axes = _dynamic_axes(dynamic_info, samples, say)
    # The samples checked: the user's, then (dynamic models) every dynamic axis at its min and at its max.
    extra = [dynamic.resized(samples.arrays[0], axes, pick) for pick in ("min", "max")] if axes else []
    labels = samples.labels + [None] * len(extra)

    workdir = Path(tempfile.mkdtemp(prefix="speedster-run-api-"))
    workdir.chmod(0o755)  # runners in containers read it as another user
    keep = tempfile.TemporaryDirectory(prefix="speedster-run-optimized-")
    try:
        say("exporting the model" if not from_file else f"reading {model}")
        source, output_structure, original_size = _source_model(model, samples, axes, workdir)
        config = RunConfig(
            model=source, device=run_device, backends=tuple(backends) if backends else None,
            ignore_backends=tuple(b for b, variant in exclude if variant is None and b in _registered()),
            exclude=exclude, metric_drop_ths=metric_drop_ths,
            input_files=_npz_files(samples.arrays + extra, workdir), threads=_threads(),
            timing=_timing(optimization_time, measure_s), sandbox=sandbox, tune_budget_s=tune_budget_s,
            # The answer is a compiled model: a torch model's eager baseline never wins; an ONNX file's baseline (a
            # plain ONNX Runtime session) is Speedster's onnxruntime compiler, and may unless that is ignored.
            original_may_win=from_file and "onnxruntime" not in (ignore_compilers or ()),
            save_dir=Path(keep.name) / "model", report_path=Path(report_path) if report_path else None)
        judge = metrics.make_metric(metric, labels, output_structure, samples.framework)
        baseline = None if from_file else _baseline(model, samples, torch_device)
        from orchestrator.run import optimize

        with contextlib.nullcontext() if from_file else evaluating(baseline.model):
            report = optimize(config, say, metric=judge, baseline=baseline)
    except UserError as error:
        keep.cleanup()
        raise ValueError(str(error)) from None
    except BaseException:
        keep.cleanup()
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    from orchestrator.report import table

    say("candidates:\n" + table(report))
    if store_latencies:
        say(f"latencies written to {summary.write_latencies(report, Path.cwd(), _model_name(model))}")
    if report.winner is None or report.save_error:
        keep.cleanup()
        if report_path:
            report.write_json(Path(report_path))
        say(f"WARNING: no optimized model: {report.save_error or report.verdict}")
        return None
    optimized = _wrap(model, report, samples, axes, output_structure, original_size, keep, run_device, torch_device,
                      execution, sandbox, say, baseline, config)
    if report_path:
        report.write_json(Path(report_path))
    return optimized


def _baseline(model: Any, samples: data_forms.Samples, torch_device: str) -> TorchCaller:
    """The user's module as the baseline, on the run's device (a copy there when it lives elsewhere)."""
    import torch

    where = next((p.device for p in model.parameters()), torch.device("cpu"))
    if where != torch.device(torch_device):
        import copy

        model = copy.deepcopy(model).to(torch_device)
    return TorchCaller(model, samples.names, samples.as_keywords, call_options(model), torch_device)


def _as_returned(baseline: TorchCaller, optimized: OptimizedModel, samples: data_forms.Samples, report,
                 config: RunConfig) -> AsReturned:
    """The original and the returned model called from here on the first sample, side by side."""
    winner = next(r for r in report.candidates if r.name == report.winner)
    args = baseline.prepare(samples.arrays[0])
    optimized_args = [a.to(optimized.meta["torch_device"]) for a in args]
    call = ((lambda: optimized(**dict(zip(samples.names, optimized_args)))) if samples.as_keywords
            else (lambda: optimized(*optimized_args)))
    with baseline.threads(config.effective_threads):
        return measure_as_returned(lambda: baseline.call(args), call, config.timing, config.effective_threads,
                                   winner.stats.median_ms, seed=config.seed)


def _wrap(model: Any, report, samples: data_forms.Samples, axes: dynamic.DynamicAxes, output_structure: dict,
          original_size: int | None, keep: tempfile.TemporaryDirectory, run_device: str, torch_device: str,
          execution: str, sandbox: str, say, baseline: TorchCaller | None, config: RunConfig) -> OptimizedModel:
    """The saved winner behind the original's interface, timed from here as the caller will call it (and at the
    dynamic axes' sizes); prints the summary."""
    from_file = isinstance(model, (str, Path))
    saved = Path(keep.name) / "model"
    first = samples.arrays[0]
    meta = {
        "input_names": samples.names,
        "input_dtypes": {n: str(a.dtype) for n, a in first.items()},
        "input_shapes": {n: list(a.shape) for n, a in first.items()},
        "dynamic_axes": dynamic.to_json(axes),
        "output_structure": output_structure,
        "framework": samples.framework,
        "as_keywords": samples.as_keywords,
        "device": run_device,
        "torch_device": torch_device,
        "source": "onnx" if from_file else ("huggingface" if is_huggingface(model) else "torch"),
        "verdict": report.verdict,
    }
    write_meta(saved, meta)
    optimized = OptimizedModel(saved, meta, execution=execution, sandbox=sandbox, keep=keep)
    shapes = {}
    if axes and not from_file:
        with evaluating(model):
            shapes = _latency_by_shape(model, optimized, samples, axes)
    optimized.summary = {"verdict": report.verdict, "latency_by_shape": shapes}
    as_returned = None
    if baseline is not None:
        say("timing the returned model against your module, both called from this process")
        with evaluating(baseline.model):
            as_returned = _as_returned(baseline, optimized, samples, report, config)
        optimized.summary |= {"as_returned": as_returned.to_dict(), "speedup": as_returned.speedup}
        report.as_returned = as_returned.to_dict()
    optimized.report = report
    artifact_size = sum((saved / name).stat().st_size for name in optimized.manifest["files"])
    leading = next(iter(first.values()))
    batch = leading.shape[0] if leading.ndim else 1
    say("results:\n" + summary.speedster_table(report, batch, original_size, artifact_size, shapes, as_returned))
    say(f"{report.verdict} The optimized model runs {optimized.execution}." + (
        "" if as_returned is None else f" As returned, called from this process: {as_returned.speedup:.2f}x "
        f"(95% CI {as_returned.speedup_ci[0]:.2f}-{as_returned.speedup_ci[1]:.2f}), {as_returned.optimized_ms:.3g} "
        f"ms vs {as_returned.original_ms:.3g} ms; the call itself costs {as_returned.call_overhead_ms:.3g} ms."))
    return optimized


def _timing(optimization_time: str, measure_s: float | None) -> TimingConfig:
    timing = OPTIMIZATION_TIMES[optimization_time]
    return timing if measure_s is None else dataclasses.replace(timing, time_budget_s=float(measure_s),
                                                                warmup_iterations=2)


def _registered() -> list[str]:
    from runners import registry

    return registry.names()


def _model_name(model: Any) -> str:
    return Path(model).stem if isinstance(model, (str, Path)) else type(model).__name__


def _latency_by_shape(model: Any, optimized: OptimizedModel, samples: data_forms.Samples,
                      axes: dynamic.DynamicAxes) -> dict[str, dict[str, float]]:
    """The original (eager torch) and the optimized model timed at the dynamic axes' min, opt and max sizes."""
    import torch

    from speedster_run.shared.torch_io import to_torch

    measured = {}
    where = next((p.device for p in model.parameters()), torch.device("cpu"))
    for pick in ("min", "opt", "max"):
        sample = dynamic.resized(samples.arrays[0], axes, pick)
        args = [to_torch(sample[n], where) for n in samples.names]
        device_args = [a.to(optimized.meta["torch_device"]) for a in args]
        with torch.inference_mode():
            original = summary.time_calls(
                (lambda: model(**dict(zip(samples.names, args)))) if samples.as_keywords else (lambda: model(*args)))
        fast = summary.time_calls(lambda: optimized(*device_args))
        label = ", ".join(f"{a.name}={getattr(a, pick)}" for a in {a.name: a for per in axes.values()
                                                                    for a in per.values()}.values())
        measured[f"{pick} ({label})"] = {"original": original, "optimized": fast}
    return measured
