"""Model files on the runner side: checksums, chunked uploads and downloads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from speedster_run.shared.errors import ChecksumMismatchError, InvalidRequestError
from speedster_run.runner.v1 import CHUNK_BYTES
from speedster_run.runner.v1 import runner_pb2 as pb


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (model files can exceed memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_relative(name: str) -> PurePosixPath:
    """A relative file name that stays inside its directory."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise InvalidRequestError(f"file name {name!r} must be relative and stay inside the model directory")
    return path


def receive_files(chunks: Iterable[pb.FileChunk], directory: Path) -> list[str]:
    """Writes a stream of chunks into directory, checking each file's sha256 when its last chunk carries one."""
    files: list[str] = []
    current: str | None = None
    handle = None
    digest = hashlib.sha256()
    try:
        for chunk in chunks:
            if chunk.file_name != current:
                if handle is not None:
                    raise InvalidRequestError(f"file {current!r} ended without a last chunk")
                current = chunk.file_name
                target = directory / safe_relative(current)
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = open(target, "wb")
                digest = hashlib.sha256()
            handle.write(chunk.data)
            digest.update(chunk.data)
            if chunk.last:
                handle.close()
                handle = None
                if chunk.sha256 and chunk.sha256 != digest.hexdigest():
                    raise ChecksumMismatchError(f"file {current!r}: sha256 {digest.hexdigest()} != {chunk.sha256}")
                files.append(current)
                current = None
        if handle is not None:
            raise InvalidRequestError(f"file {current!r} ended without a last chunk")
    finally:
        if handle is not None:
            handle.close()
    return files


def send_files(directory: Path, names: Iterable[str]) -> Iterator[pb.FileChunk]:
    """Streams files from directory in CHUNK_BYTES pieces; the last chunk of each carries its sha256."""
    for name in names:
        digest = hashlib.sha256()
        with open(directory / safe_relative(name), "rb") as handle:
            block = handle.read(CHUNK_BYTES)
            while True:
                digest.update(block)
                following = handle.read(CHUNK_BYTES)
                last = not following
                yield pb.FileChunk(
                    file_name=name, data=block, last=last, sha256=digest.hexdigest() if last else ""
                )
                if last:
                    break
                block = following
