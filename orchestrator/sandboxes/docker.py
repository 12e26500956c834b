"""Docker sandbox: each backend's runner in its own hardened container, reached over a unix socket.

A container per backend for the run, from that backend's image: no network, read-only root with a tmpfs /tmp, every
capability dropped, no privilege gain, a fixed unprivileged user, memory/pids/CPU limits, and only the device asked
for. The runner listens on a unix socket in a per-runner host directory mounted at /run/speedster. Of a directory
given to share(), the runners see only the files named (the model and its external data, staged into the run's own
work directory), read-only at the same path (or, where that path would hide the image's own files, under
/speedster-share). Containers are labelled with the run and the orchestrator's pid, so those of a killed run are
removed by the next one.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import stat
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.runner_client import wait_until_serving
from orchestrator.sandboxes import docker_engine as engine
from orchestrator.sandboxes.base import ExitInfo, RunnerProcess, Sandbox, SandboxError
from orchestrator.sandboxes.container_spec import (RUNNER_PYTHON, RUNNER_UID, SHARE_ROOT, SOCKET_DIR, SOCKET_NAME,
                                                  ContainerSpec, cpu_set, device_options, inside, keeps_its_path)
from orchestrator.sandboxes.staging import stage_files
from speedster_run.shared import devices


@dataclasses.dataclass
class _Container:
    """The sandbox's handle on one runner container."""

    container: object  # docker.models.containers.Container
    spec: ContainerSpec
    socket_dir: Path
    killed: bool = False  # by kill(): a SIGKILL the sandbox sent, not the kernel's
    final_logs: str | None = None  # kept at stop(), when the container goes


@dataclasses.dataclass
class _Share:
    """A directory of the host as the runners see it: `host` (what paths are given in) is mounted from `source`
    (the directory itself, or the staged copy of the files they need) at `target` in the container."""

    host: str
    source: str
    target: str


def describe_state(state: dict, mem_limit: str, killed: bool) -> ExitInfo:
    """Maps a dead container's State to a failure category."""
    code = int(state.get("ExitCode") or 0)
    if state.get("OOMKilled"):
        return ExitInfo("oom", f"container killed: out of memory (limit {mem_limit})")
    if code > 128:
        sig = code - 128
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        by = " (sent by the orchestrator)" if killed and sig == signal.SIGKILL else ""
        return ExitInfo("crash", f"runner died with {name}{by}")
    error = f": {state['Error']}" if state.get("Error") else ""
    return ExitInfo("crash", f"runner container exited with status {code}{error}")


class DockerSandbox(Sandbox):
    name = "docker"

    def __init__(self, device: str = "cpu", *, images: dict[str, str] | None = None, mem_limit: str = "8g",
                 tmpfs_size: str = "2g", pids_limit: int = 512, env: dict[str, str] | None = None,
                 mounts: tuple = (), run_id: str | None = None, init: bool = True, stop_timeout_s: int = 2,
                 client=None):
        """`images` maps backend names to images (default: what `speedster-run images build` names); `env` and
        `mounts` (host paths, or (host, container) pairs, read-only) are added to every runner container."""
        self.device = device
        self.images = dict(images or {})
        self.mem_limit = mem_limit
        self.tmpfs_size = tmpfs_size
        self.pids_limit = pids_limit
        self.env = dict(env or {})
        self.extra_mounts = [(str(m), str(m)) if isinstance(m, (str, Path)) else (str(m[0]), str(m[1]))
                             for m in mounts]
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.init = init
        self.stop_timeout_s = stop_timeout_s
        self._client = client
        self._checked_leftovers = False
        self._image_cache: dict[str, object] = {}
        self._shares: list[_Share] = []
        self._started: list[RunnerProcess] = []
        self._count = 0
        self._workdir: Path | None = None
        self.removed_leftovers: list[str] = []

    # --- the engine and images ---------------------------------------------------------------------------------

    def engine(self):
        """The docker SDK client (connecting, and removing a dead run's leftovers, the first time); raises
        EngineUnavailableError when no engine answers."""
        if self._client is None:
            self._client = engine.connect()
        if not self._checked_leftovers:
            self._checked_leftovers = True
            self.removed_leftovers = engine.remove_leftovers(self._client)
        return self._client

    def image_ref(self, backend: str) -> str:
        return self.images.get(backend) or engine.default_image(backend)

    def image(self, backend: str):
        """The backend's docker Image; MissingImageError when the engine lacks it."""
        if backend not in self._image_cache:
            reference = self.image_ref(backend)
            found = engine.find_image(self.engine(), reference)
            if found is None:
                fix = (f"run speedster-run images build {backend}" if reference == engine.default_image(backend)
                       else f"build or tag {reference}")
                raise engine.MissingImageError(f"no image for {backend} ({reference}): {fix}")
            self._image_cache[backend] = found
        return self._image_cache[backend]

    def check(self, backends) -> None:
        """Raises (EngineUnavailableError, MissingImageError) unless every backend can start here."""
        for backend in backends:
            self.image(backend)

    # --- what runners see --------------------------------------------------------------------------------------

    def share(self, directory: Path, files: Sequence[Path] = ()) -> None:
        """Shows the runners started from now on `files` of the directory (the model and its external data), at
        their own paths: staged into the run's work directory, readable by the runners' user (uid 10001), so that
        nothing else of the user's directory is visible and its permissions do not matter. Without `files`, the
        whole directory (the run's own, made readable): UserError when the runners' user cannot read it."""
        path = str(Path(directory).resolve())
        share = next((s for s in self._shares if s.host == path), None)
        if not files:
            if os.stat(path).st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
                raise UserError(f"the runner containers (uid {RUNNER_UID}) cannot read {path}: "
                                f"chmod o+rx {shlex.quote(path)}, or use --sandbox local")
            if share is None:
                self._shares.append(_Share(path, path, self._target(path)))
            else:
                share.source = path  # the whole directory: what was staged from it is in it
            return
        if share is None:
            share = _Share(path, str(self._work_directory() / f"share-{len(self._shares)}"), self._target(path))
            self._shares.append(share)
        if share.source != path:
            stage_files(Path(path), files, Path(share.source))

    def _target(self, path: str) -> str:
        return path if keeps_its_path(path) else f"{SHARE_ROOT}/{len(self._shares)}"

    def runner_path(self, backend: str, path: str) -> str:
        for share in sorted(self._shares, key=lambda share: -len(share.host)):
            if inside(path, share.host):
                return share.target + path[len(share.host):]
        return path

    def placement(self, backend: str) -> tuple[str, str]:
        return self.name, self.image_ref(backend)

    def environment(self) -> dict:
        images = {backend: {"image": self.image_ref(backend), "digest": engine.image_digest(image),
                            "repo_digests": list(image.attrs.get("RepoDigests") or [])}
                  for backend, image in self._image_cache.items()}
        try:
            version = self._client.version().get("Version", "") if self._client is not None else ""
        except Exception:  # the engine went away since: the report is still written
            version = ""
        return {"docker": {"engine": version, "images": images, "run_id": self.run_id}}

    # --- runners -----------------------------------------------------------------------------------------------

    def _work_directory(self) -> Path:
        """The run's private directory (0700): runners' socket directories and staged model files. The engine
        mounts what is inside; nobody else on the host can enter it."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"speedster-run-docker-{self.run_id}-"))
        return self._workdir

    def _socket_dir(self, backend: str) -> tuple[Path, list[str], list[str] | None]:
        """A fresh host directory the runner (uid 10001) can create its socket in and the orchestrator can connect
        through; plus the group_add and entrypoint that takes, when not running as root."""
        directory = Path(tempfile.mkdtemp(prefix=f"{backend}-", dir=self._work_directory()))
        if os.geteuid() == 0:
            os.chown(directory, RUNNER_UID, RUNNER_UID)  # root connects to any socket
            return directory, [], None
        # Not root: the runner joins our group, the setgid directory hands that group to the socket, and a umask of
        # 007 leaves it group-writable, which connecting needs. Nobody else can enter the directory.
        gid = os.getegid()
        os.chmod(directory, 0o2770)
        wrapper = ["/bin/sh", "-c", 'umask 007 && exec "$0" "$@"', RUNNER_PYTHON, "-m", "runners.server"]
        return directory, [str(gid)], wrapper

    def spec(self, backend: str, threads: int, socket_dir: Path, group_add: list[str],
             entrypoint: list[str] | None, image_id: str = "") -> ContainerSpec:
        environment = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if threads > 0:
            for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                environment[variable] = str(threads)
        if devices.map_for(self.device):  # the container sees the one GPU it gets as GPU 0
            environment[devices.ENV_VARIABLE] = devices.map_for(self.device)
        environment.update(self.env)
        gpu_ids, device_nodes = device_options(self.device)
        mounts = [(str(socket_dir), SOCKET_DIR, False)]
        mounts += [(share.source, share.target, True) for share in self._shares]
        mounts += [(host, target, True) for host, target in self.extra_mounts]
        return ContainerSpec(
            image=self.image_ref(backend), image_id=image_id,
            command=["--backend", backend, "--listen", f"unix://{SOCKET_DIR}/{SOCKET_NAME}"],
            name=f"speedster-run-{self.run_id}-{backend}-{self._count}",
            labels={engine.LABEL_RUN: self.run_id, engine.LABEL_BACKEND: backend} | engine.owner_labels(),
            environment=environment, mounts=mounts, user=f"{RUNNER_UID}:{RUNNER_UID}", group_add=group_add,
            entrypoint=entrypoint, cpuset_cpus=cpu_set(threads), mem_limit=self.mem_limit,
            pids_limit=self.pids_limit, tmpfs_size=self.tmpfs_size, gpu_ids=gpu_ids, devices=device_nodes,
            init=self.init,
        )

    def start(self, backend: str, threads: int, ready_timeout_s: float = 120.0) -> RunnerProcess:
        import docker

        image = self.image(backend)
        self._count += 1
        socket_dir, group_add, entrypoint = self._socket_dir(backend)
        spec = self.spec(backend, threads, socket_dir, group_add, entrypoint, engine.image_digest(image))
        try:
            container = self.engine().containers.create(**spec.create_kwargs())
        except docker.errors.APIError as error:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise engine.ContainerStartError(f"cannot create the {backend} runner container: "
                                             f"{error.explanation or error}") from None
        digest = engine.image_digest(image)
        runner = RunnerProcess(
            backend=backend, target=f"unix://{socket_dir}/{SOCKET_NAME}",
            description=f"docker container {container.short_id} from {spec.image} ({digest[:19]})",
            handle=_Container(container, spec, socket_dir), image=spec.image, image_digest=digest)
        self._started.append(runner)
        try:
            container.start()
        except docker.errors.APIError as error:
            self.stop(runner)
            raise engine.ContainerStartError(f"cannot start the {backend} runner container: "
                                             f"{error.explanation or error}") from None
        deadline = time.monotonic() + ready_timeout_s
        while not wait_until_serving(runner.target, timeout_s=min(1.0, max(0.1, deadline - time.monotonic()))):
            info = self.exit_info(runner)
            if info is not None:
                log = self.logs(runner, 8)
                self.stop(runner)
                raise SandboxError(f"runner container for {backend} exited at start ({info.message}): {log}")
            if time.monotonic() > deadline:
                self.stop(runner)
                raise SandboxError(f"runner container for {backend} did not become ready in {ready_timeout_s:.0f} s")
        return runner

    def exit_info(self, runner: RunnerProcess) -> ExitInfo | None:
        import docker

        handle: _Container = runner.handle
        try:
            handle.container.reload()
        except docker.errors.NotFound:
            return ExitInfo("crash", "runner container removed by someone else")
        state = handle.container.attrs.get("State", {})
        if state.get("Status") in ("created", "running", "paused", "restarting"):
            return None
        info = describe_state(state, handle.spec.mem_limit, handle.killed)
        if info.category == "crash" and int(state.get("ExitCode") or 0) == 128 + signal.SIGKILL and not handle.killed:
            # The OOM flag can lag the exit on some engines: the engine's own event log settles it.
            if self._oom_event(handle):
                return ExitInfo("oom", f"container killed: out of memory (limit {handle.spec.mem_limit})")
        return info

    def _oom_event(self, handle: _Container) -> bool:
        try:
            since = handle.container.attrs.get("Created", "")
            events = self.engine().events(until=int(time.time()) + 1, decode=True, filters={
                "type": "container", "container": handle.container.id, "event": "oom"},
                since=_timestamp(since))
            return any(True for _ in events)
        except Exception:  # no event log: the flag stands
            return False

    def kill(self, runner: RunnerProcess) -> None:
        import docker

        handle: _Container = runner.handle
        handle.killed = True
        try:
            handle.container.kill()
        except docker.errors.APIError:
            pass  # already dead or gone

    def stop(self, runner: RunnerProcess) -> None:
        import docker

        handle: _Container = runner.handle
        if handle.final_logs is None:
            handle.final_logs = self._fetch_logs(handle, 200)
            try:
                handle.container.stop(timeout=self.stop_timeout_s)
            except docker.errors.APIError:
                pass
            try:
                handle.container.remove(force=True)
            except docker.errors.APIError:
                pass
        if runner in self._started:
            self._started.remove(runner)

    def _fetch_logs(self, handle: _Container, max_lines: int) -> str:
        try:
            raw = handle.container.logs(stdout=True, stderr=True, tail=max_lines)
        except Exception:  # gone, or the engine went away
            return ""
        return raw.decode("utf-8", errors="replace").rstrip("\n")

    def logs(self, runner: RunnerProcess, max_lines: int = 40) -> str:
        handle: _Container = runner.handle
        text = handle.final_logs if handle.final_logs is not None else self._fetch_logs(handle, max_lines)
        return "\n".join(text.splitlines()[-max_lines:])

    def reproduce_command(self, runner: RunnerProcess) -> str:
        return runner.handle.spec.command_line()

    def close(self) -> None:
        for runner in list(self._started):
            self.stop(runner)
        if self._client is not None:
            try:
                engine.remove_run(self._client, self.run_id)
            except Exception:  # the engine went away: the next run removes what is left, by label
                pass
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _timestamp(created: str) -> int:
    """Docker's RFC 3339 "Created" (nanoseconds, Z) as whole seconds, a second early; 0 when unreadable."""
    try:
        return int(datetime.fromisoformat(created[:19]).replace(tzinfo=timezone.utc).timestamp()) - 1
    except ValueError:
        return 0
