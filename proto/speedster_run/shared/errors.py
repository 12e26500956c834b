"""Errors a runner reports: in-band candidate failures by category, and protocol errors by gRPC status code.

The mapping below is the one table of protocol errors; tests check it row by row. `as_candidate_error` is the one
place where any exception becomes a categorised, one-line candidate failure (out of memory recognised here only).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import grpc

from speedster_run.runner.v1 import runner_pb2 as pb

# Candidate failure categories, by the short name used in reports.
CATEGORIES: dict[str, int] = {
    "unavailable": pb.FAILURE_CATEGORY_UNAVAILABLE,
    "export": pb.FAILURE_CATEGORY_EXPORT,
    "compile": pb.FAILURE_CATEGORY_COMPILE,
    "runtime": pb.FAILURE_CATEGORY_RUNTIME,
    "timeout": pb.FAILURE_CATEGORY_TIMEOUT,
    "crash": pb.FAILURE_CATEGORY_CRASH,
    "oom": pb.FAILURE_CATEGORY_OOM,
    "accuracy": pb.FAILURE_CATEGORY_ACCURACY,
}
CATEGORY_NAMES: dict[int, str] = {code: name for name, code in CATEGORIES.items()}


class CandidateError(Exception):
    """A candidate failed (unsupported op, compile error, out of memory...): reported in-band, the run goes on."""

    def __init__(self, category: str, message: str, detail: str = ""):
        if category not in CATEGORIES:
            raise ValueError(f"unknown failure category {category!r}")
        super().__init__(message)
        self.category = category
        self.message = message
        self.detail = detail


# What libraries write when host or device memory ran out: C++ (std::bad_alloc), ONNX Runtime and TensorRT ("failed
# to allocate", "OutOfMemory"), CUDA ("out of memory", cudaErrorMemoryAllocation), XLA and IREE (RESOURCE_EXHAUSTED),
# the Neuron runtime (NRT_RESOURCE), torch's CPU allocator and ENOMEM ("can't/Cannot allocate memory").
OOM_MARKERS = ("out of memory", "outofmemory", "cudaerrormemoryallocation", "failed to allocate", "bad_alloc",
               "resource_exhausted", "nrt_resource", "can't allocate memory", "cannot allocate memory")
# The longest summary a one-line message carries: a report cell, not a log.
SUMMARY_LIMIT = 400


def mentions_out_of_memory(text: str) -> bool:
    """Whether a library's message (or a tool's output) says that memory ran out."""
    lowered = text.lower()
    return any(marker in lowered for marker in OOM_MARKERS)


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, an *OutOfMemoryError type (torch.cuda's), or a message that says memory ran out."""
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or mentions_out_of_memory(str(error)))


def first_line(error: BaseException) -> str:
    """The first non-blank line of the error's message: what most libraries put first is what went wrong."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def one_line(error: BaseException, summary: Callable[[BaseException], str] = first_line) -> str:
    """"Type: summary" on one line, short enough for a report cell; `summary` picks the informative part of a
    library's message (first_line unless the library puts stack frames or locations first)."""
    text = " ".join(summary(error).split())[:SUMMARY_LIMIT]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def as_candidate_error(error: BaseException, category: str, what: str = "",
                       summary: Callable[[BaseException], str] = first_line) -> CandidateError:
    """Any exception as a failed candidate: `category` is the phase's ("compile" while loading, "runtime" while
    running), except that running out of memory is "oom" in every phase. The message is `what` (a prefix that says
    which step failed, or "") and one_line(error, summary); the detail is the whole traceback. A CandidateError is
    returned as it is: its category and message were chosen where it was raised."""
    if isinstance(error, CandidateError):
        return error
    if is_out_of_memory(error):
        category = "oom"
    detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return CandidateError(category, what + one_line(error, summary), detail=detail)


class ProtocolError(Exception):
    """The caller misused the protocol; answered with a gRPC status code instead of an in-band failure."""


class UnknownModelError(ProtocolError):
    """See STATUS_CODES."""


class InvalidRequestError(ProtocolError):
    """See STATUS_CODES."""


class ChecksumMismatchError(ProtocolError):
    """See STATUS_CODES."""


class ModelFileMissingError(ProtocolError):
    """See STATUS_CODES."""


class RunnerBusyError(ProtocolError):
    """Another call is being served: the runner answers at once instead of queueing (see STATUS_CODES)."""


class PathSourceRefusedError(ProtocolError):
    """A model given by path to a runner that listens on TCP, which loads uploaded models only (see STATUS_CODES)."""


class CallerGoneError(ProtocolError):
    """The caller cancelled or its deadline passed: the work stops, and the status reaches no one (see STATUS_CODES)."""


# The whole table: exception type -> status code. Anything else raised by the server is INTERNAL (a bug).
STATUS_CODES: dict[type[ProtocolError], grpc.StatusCode] = {
    UnknownModelError: grpc.StatusCode.NOT_FOUND,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ChecksumMismatchError: grpc.StatusCode.DATA_LOSS,
    ModelFileMissingError: grpc.StatusCode.FAILED_PRECONDITION,
    RunnerBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PathSourceRefusedError: grpc.StatusCode.PERMISSION_DENIED,
    CallerGoneError: grpc.StatusCode.CANCELLED,
}
# RunnerBusyError's details start with this, so that clients tell it from gRPC's own RESOURCE_EXHAUSTED (a message
# over the size limit): "busy: serving Load since 2026-01-01T12:00:00Z (for 42 s)".
BUSY_PREFIX = "busy: "


def status_code(error: Exception) -> grpc.StatusCode:
    """The gRPC status code that answers an exception raised while serving a request."""
    return STATUS_CODES.get(type(error), grpc.StatusCode.INTERNAL)


def failure(category: str, message: str, detail: str = "") -> pb.Failure:
    """An in-band Failure message."""
    return pb.Failure(category=CATEGORIES[category], message=message, detail=detail)
