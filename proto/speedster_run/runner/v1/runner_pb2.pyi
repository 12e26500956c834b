from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_BFLOAT16: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]
    DATA_TYPE_INT8: _ClassVar[DataType]
    DATA_TYPE_INT16: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_UINT16: _ClassVar[DataType]
    DATA_TYPE_UINT32: _ClassVar[DataType]
    DATA_TYPE_UINT64: _ClassVar[DataType]
    DATA_TYPE_BOOL: _ClassVar[DataType]

class FailureCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_CATEGORY_UNSPECIFIED: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_UNAVAILABLE: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_EXPORT: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_COMPILE: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_RUNTIME: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_TIMEOUT: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_CRASH: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_OOM: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_ACCURACY: _ClassVar[FailureCategory]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_BFLOAT16: DataType
DATA_TYPE_FLOAT64: DataType
DATA_TYPE_INT8: DataType
DATA_TYPE_INT16: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT64: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_UINT16: DataType
DATA_TYPE_UINT32: DataType
DATA_TYPE_UINT64: DataType
DATA_TYPE_BOOL: DataType
FAILURE_CATEGORY_UNSPECIFIED: FailureCategory
FAILURE_CATEGORY_UNAVAILABLE: FailureCategory
FAILURE_CATEGORY_EXPORT: FailureCategory
FAILURE_CATEGORY_COMPILE: FailureCategory
FAILURE_CATEGORY_RUNTIME: FailureCategory
FAILURE_CATEGORY_TIMEOUT: FailureCategory
FAILURE_CATEGORY_CRASH: FailureCategory
FAILURE_CATEGORY_OOM: FailureCategory
FAILURE_CATEGORY_ACCURACY: FailureCategory

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorSet(_message.Message):
    __slots__ = ("tensors",)
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape", "dim_names")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DIM_NAMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    dim_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., dim_names: _Optional[_Iterable[str]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("category", "message", "detail")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    category: FailureCategory
    message: str
    detail: str
    def __init__(self, category: _Optional[_Union[FailureCategory, str]] = ..., message: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Offer(_message.Message):
    __slots__ = ("precision", "variant", "devices", "formats", "description")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    precision: str
    variant: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    formats: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, precision: _Optional[str] = ..., variant: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., formats: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("protocol_version", "backend", "available", "unavailable_reason", "versions", "devices", "offers", "host")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HostEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    backend: str
    available: bool
    unavailable_reason: str
    versions: _containers.ScalarMap[str, str]
    devices: _containers.RepeatedScalarFieldContainer[str]
    offers: _containers.RepeatedCompositeFieldContainer[Offer]
    host: _containers.ScalarMap[str, str]
    def __init__(self, protocol_version: _Optional[str] = ..., backend: _Optional[str] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., versions: _Optional[_Mapping[str, str]] = ..., devices: _Optional[_Iterable[str]] = ..., offers: _Optional[_Iterable[_Union[Offer, _Mapping]]] = ..., host: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ModelSource(_message.Message):
    __slots__ = ("path", "upload_id", "sha256", "format", "file_name")
    PATH_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    path: str
    upload_id: str
    sha256: str
    format: str
    file_name: str
    def __init__(self, path: _Optional[str] = ..., upload_id: _Optional[str] = ..., sha256: _Optional[str] = ..., format: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("model", "device", "precision", "variant", "options", "threads", "calibration")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    model: ModelSource
    device: str
    precision: str
    variant: str
    options: _containers.ScalarMap[str, str]
    threads: int
    calibration: _containers.RepeatedCompositeFieldContainer[TensorSet]
    def __init__(self, model: _Optional[_Union[ModelSource, _Mapping]] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., variant: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., threads: _Optional[int] = ..., calibration: _Optional[_Iterable[_Union[TensorSet, _Mapping]]] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("model_id", "failure", "compile_s", "inputs", "outputs", "details", "peak_rss_bytes")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_S_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    failure: Failure
    compile_s: float
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    details: _containers.ScalarMap[str, str]
    peak_rss_bytes: int
    def __init__(self, model_id: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., compile_s: _Optional[float] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., details: _Optional[_Mapping[str, str]] = ..., peak_rss_bytes: _Optional[int] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("model_id", "inputs")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    inputs: TensorSet
    def __init__(self, model_id: _Optional[str] = ..., inputs: _Optional[_Union[TensorSet, _Mapping]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("outputs", "failure", "latency_ns", "first_inference")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_NS_FIELD_NUMBER: _ClassVar[int]
    FIRST_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    outputs: TensorSet
    failure: Failure
    latency_ns: int
    first_inference: bool
    def __init__(self, outputs: _Optional[_Union[TensorSet, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., latency_ns: _Optional[int] = ..., first_inference: _Optional[bool] = ...) -> None: ...

class BenchmarkRequest(_message.Message):
    __slots__ = ("model_id", "inputs", "warmup_iterations", "min_iterations", "max_iterations", "max_time_s", "window_iterations", "stability_pct", "stable_windows")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    STABILITY_PCT_FIELD_NUMBER: _ClassVar[int]
    STABLE_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    inputs: TensorSet
    warmup_iterations: int
    min_iterations: int
    max_iterations: int
    max_time_s: float
    window_iterations: int
    stability_pct: float
    stable_windows: int
    def __init__(self, model_id: _Optional[str] = ..., inputs: _Optional[_Union[TensorSet, _Mapping]] = ..., warmup_iterations: _Optional[int] = ..., min_iterations: _Optional[int] = ..., max_iterations: _Optional[int] = ..., max_time_s: _Optional[float] = ..., window_iterations: _Optional[int] = ..., stability_pct: _Optional[float] = ..., stable_windows: _Optional[int] = ...) -> None: ...

class BenchmarkResponse(_message.Message):
    __slots__ = ("latencies_ns", "stable", "failure", "first_inference_s", "peak_rss_bytes", "clock")
    LATENCIES_NS_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    FIRST_INFERENCE_S_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    latencies_ns: _containers.RepeatedScalarFieldContainer[int]
    stable: bool
    failure: Failure
    first_inference_s: float
    peak_rss_bytes: int
    clock: str
    def __init__(self, latencies_ns: _Optional[_Iterable[int]] = ..., stable: _Optional[bool] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., first_inference_s: _Optional[float] = ..., peak_rss_bytes: _Optional[int] = ..., clock: _Optional[str] = ...) -> None: ...

class UnloadRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class UnloadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("file_name", "data", "last", "sha256")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    data: bytes
    last: bool
    sha256: str
    def __init__(self, file_name: _Optional[str] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("upload_id", "files")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, upload_id: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteUploadRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class DeleteUploadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SaveArtifactRequest(_message.Message):
    __slots__ = ("model_id", "format", "example")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    format: str
    example: TensorSet
    def __init__(self, model_id: _Optional[str] = ..., format: _Optional[str] = ..., example: _Optional[_Union[TensorSet, _Mapping]] = ...) -> None: ...

class ArtifactManifest(_message.Message):
    __slots__ = ("backend", "format", "file_name", "precision", "variant", "options", "files")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    backend: str
    format: str
    file_name: str
    precision: str
    variant: str
    options: _containers.ScalarMap[str, str]
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backend: _Optional[str] = ..., format: _Optional[str] = ..., file_name: _Optional[str] = ..., precision: _Optional[str] = ..., variant: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., files: _Optional[_Iterable[str]] = ...) -> None: ...

class SaveArtifactResponse(_message.Message):
    __slots__ = ("manifest", "failure")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    manifest: ArtifactManifest
    failure: Failure
    def __init__(self, manifest: _Optional[_Union[ArtifactManifest, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class FetchArtifactRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...
