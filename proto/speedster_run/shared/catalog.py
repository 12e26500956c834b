"""The backend catalog: every built-in backend as plain data, the one list the rest of the project derives from.

The runner registry (which class implements a backend), the images (`images/<name>/`), the compose services, the
planner (which backends can serve a device and a model format, which backend runs the original) and the call
deadlines all read this table. Reading it imports no backend library and starts no runner, so a run can plan from it
before anything is started. What a backend *really* offers on a host (versions, devices found, precisions) still
comes from its runner's Describe; the catalog says what it can offer at best.
"""

from __future__ import annotations

import dataclasses

# Model formats a backend compiles from (what the orchestrator hands it, see model_source.detect_format).
ONNX = "onnx"
TORCH_EXPORT = "torch_export"
TORCHSCRIPT = "torchscript"

# Deadlines of one runner's start (to SERVING) and of one compile, in seconds, for backends that set none.
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_COMPILE_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    name: str  # the backend's name everywhere: registry, image (images/<name>/), compose service, report rows
    implementation: str  # "module:Class" of its runners.backends class
    devices: tuple[str, ...]  # device kinds it can serve at best: cpu, cuda, gpu (Intel), tpu, neuron
    formats: tuple[str, ...]  # model formats it compiles from
    cpu_image: bool  # its image builds and runs on any x86-64 host: built and tested by CI
    compose_profile: str  # the docker-compose profile its service belongs to
    compose_port: int  # the host port its compose service publishes by default: fixed, so that adding a backend
    # moves no other service
    main_package: str  # the distribution that is the backend (pinned in images/<name>/requirements.txt): its version
    original_for: tuple[str, ...] = ()  # the formats whose original model it runs (the baseline and the references)
    original_variant: str = "default"  # the variant of its offers that runs an original as it is
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    compile_timeout_s: float = DEFAULT_COMPILE_TIMEOUT_S
    summary: str = ""  # one line for people: what it is


# In the registry's order, which is the order a run tries the backends in (and so the order of its report's rows).
# A new backend goes at the end, with the next free compose port: existing services keep theirs.
CATALOG: tuple[BackendEntry, ...] = (
    BackendEntry("onnxruntime", "runners.backends.onnxruntime:OnnxRuntimeBackend", ("cpu", "cuda"), (ONNX,),
                 cpu_image=True, compose_profile="cpu", compose_port=50051, main_package="onnxruntime",
                 original_for=(ONNX,),
                 summary="ONNX Runtime: CPU and CUDA providers, TensorRT provider, int8 quantisation"),
    BackendEntry("openvino", "runners.backends.openvino:OpenVinoBackend", ("cpu", "gpu"), (ONNX,),
                 cpu_image=True, compose_profile="cpu", compose_port=50052, main_package="openvino",
                 summary="OpenVINO: fp32/bf16/fp16, int8 through NNCF"),
    BackendEntry("torch", "runners.backends.torch:TorchBackend", ("cpu", "cuda"), (TORCH_EXPORT, TORCHSCRIPT),
                 cpu_image=True, compose_profile="cpu", compose_port=50053, main_package="torch",
                 original_for=(TORCH_EXPORT, TORCHSCRIPT), original_variant="eager",
                 summary="PyTorch: eager, TorchScript, inductor, dynamic int8"),
    BackendEntry("tvm", "runners.backends.tvm:TvmBackend", ("cpu", "cuda"), (ONNX, TORCH_EXPORT),
                 cpu_image=True, compose_profile="cpu", compose_port=50057, main_package="apache-tvm",
                 summary="Apache TVM (Relax): default pipeline, MetaSchedule tuning"),
    BackendEntry("tensorrt", "runners.backends.tensorrt:TensorRtBackend", ("cuda",), (ONNX, TORCH_EXPORT),
                 cpu_image=False, compose_profile="gpu", compose_port=50054, main_package="tensorrt-cu12",
                 compile_timeout_s=1800.0,
                 summary="TensorRT engines from ONNX, Torch-TensorRT from torch.export"),
    BackendEntry("xla", "runners.backends.xla:XlaBackend", ("cpu", "tpu"), (TORCH_EXPORT,),
                 cpu_image=False, compose_profile="gpu", compose_port=50055, main_package="torch-xla",
                 summary="torch-xla on PJRT (TPU; CPU for checks)"),
    BackendEntry("neuron", "runners.backends.neuron:NeuronBackend", ("neuron",), (TORCH_EXPORT, TORCHSCRIPT),
                 cpu_image=False, compose_profile="neuron", compose_port=50056, main_package="torch-neuronx",
                 compile_timeout_s=1800.0,
                 summary="AWS Neuron (Inferentia, Trainium): torch_neuronx.trace"),
    BackendEntry("onnxruntime-openvino", "runners.backends.onnxruntime_openvino:OnnxRuntimeOpenVinoBackend",
                 ("cpu", "gpu"), (ONNX,), cpu_image=False, compose_profile="openvino-ep", compose_port=50059,
                 main_package="onnxruntime-openvino",
                 summary="ONNX Runtime with the OpenVINO execution provider"),
    BackendEntry("iree", "runners.backends.iree:IreeBackend", ("cpu", "cuda"), (ONNX,),
                 cpu_image=True, compose_profile="cpu", compose_port=50058, main_package="iree-base-runtime",
                 summary="IREE: ONNX -> MLIR -> .vmfb (llvm-cpu, cuda)"),
)

_BY_NAME = {entry.name: entry for entry in CATALOG}


def names() -> tuple[str, ...]:
    """Every built-in backend's name, in the catalog's order."""
    return tuple(_BY_NAME)


def get(name: str) -> BackendEntry | None:
    """The backend's entry, or None for a backend that is not built in (a plug-in): callers then use the defaults."""
    return _BY_NAME.get(name)


def cpu_image_backends() -> tuple[str, ...]:
    """The backends whose images CI builds and tests on any x86-64 host."""
    return tuple(entry.name for entry in CATALOG if entry.cpu_image)


def compose_profiles() -> dict[str, tuple[str, ...]]:
    """docker-compose profile -> its backends' services, in the catalog's order."""
    profiles: dict[str, tuple[str, ...]] = {}
    for entry in CATALOG:
        profiles[entry.compose_profile] = profiles.get(entry.compose_profile, ()) + (entry.name,)
    return profiles


def original_formats() -> dict[str, str]:
    """Model format -> the backend that runs its original, for every format some backend runs the original of."""
    return {fmt: entry.name for entry in CATALOG for fmt in entry.original_for}


def original_backend(model_format: str) -> str:
    """The backend that runs a model of this format as it is (the original)."""
    for entry in CATALOG:
        if model_format in entry.original_for:
            return entry.name
    raise KeyError(f"no backend runs the original of a {model_format} model")


def start_timeout_s(name: str) -> float:
    entry = get(name)
    return entry.start_timeout_s if entry else DEFAULT_START_TIMEOUT_S


def compile_timeout_s(name: str) -> float:
    entry = get(name)
    return entry.compile_timeout_s if entry else DEFAULT_COMPILE_TIMEOUT_S
