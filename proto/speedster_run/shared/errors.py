"""Errors a runner reports: in-band candidate failures by category, and protocol errors by gRPC status code.

The mapping below is the one table of protocol errors; tests check it row by row.
"""

from __future__ import annotations

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
