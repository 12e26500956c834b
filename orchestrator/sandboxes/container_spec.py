"""What a runner container is made of (ContainerSpec), the same for create() and for the reproduce command."""

from __future__ import annotations

import dataclasses
import os
import shlex

RUNNER_UID = 10001
SOCKET_DIR = "/run/speedster"  # inside the container
SOCKET_NAME = "runner.sock"
SHARE_ROOT = "/speedster-share"  # where shares go that cannot keep their path
RUNNER_PYTHON = "/opt/venv/bin/python"  # the images' interpreter (used only by the non-root umask wrapper)
# A share at (or above) one of these paths, or inside one of the trees, would hide the image's own files.
_IMAGE_PATHS = ("/tmp", SOCKET_DIR, "/opt/venv", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/var", "/proc",
                "/sys", "/dev", SHARE_ROOT)
_IMAGE_TREES = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/sys", "/dev", "/opt/venv", SOCKET_DIR,
                SHARE_ROOT)


@dataclasses.dataclass
class ContainerSpec:
    """Everything one runner container is made of: what create() is given and what the reproduce command says."""

    image: str  # the name, for people
    image_id: str  # what the container is created from: the exact image the report pins, even if the tag moves
    command: list[str]
    name: str
    labels: dict[str, str]
    environment: dict[str, str]
    mounts: list[tuple[str, str, bool]]  # (host path, container path, read-only)
    user: str
    group_add: list[str]
    entrypoint: list[str] | None
    cpuset_cpus: str
    mem_limit: str
    pids_limit: int
    tmpfs_size: str
    gpu_ids: list[str]
    devices: list[str]
    init: bool

    def tmpfs_options(self) -> str:
        # exec: the only writable place is where JIT compilers (torch inductor, TVM) write the .so they then load;
        # Docker's default for a tmpfs is noexec. nosuid and nodev stay.
        return f"rw,exec,nosuid,nodev,size={self.tmpfs_size},mode=1777"

    def create_kwargs(self) -> dict:
        from docker.types import DeviceRequest, Mount

        kwargs = dict(
            image=self.image_id or self.image, command=self.command, name=self.name, labels=self.labels,
            environment=self.environment,
            mounts=[Mount(target, source, type="bind", read_only=ro) for source, target, ro in self.mounts],
            user=self.user, network_mode="none", read_only=True,
            tmpfs={"/tmp": self.tmpfs_options()}, cap_drop=["ALL"],
            security_opt=["no-new-privileges"], mem_limit=self.mem_limit, memswap_limit=self.mem_limit,
            pids_limit=self.pids_limit, cpuset_cpus=self.cpuset_cpus, init=self.init, detach=True,
        )
        if self.group_add:
            kwargs["group_add"] = self.group_add
        if self.entrypoint:
            kwargs["entrypoint"] = self.entrypoint
        if self.gpu_ids:
            kwargs["device_requests"] = [DeviceRequest(device_ids=self.gpu_ids, capabilities=[["gpu"]])]
        if self.devices:
            kwargs["devices"] = self.devices
        return kwargs

    def command_line(self) -> str:
        words = ["docker", "run", "--rm"] + (["--init"] if self.init else []) + [
            "--network", "none", "--read-only", "--tmpfs", f"/tmp:{self.tmpfs_options()}",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", self.user,
            "--memory", self.mem_limit, "--memory-swap", self.mem_limit, "--pids-limit", str(self.pids_limit),
            "--cpuset-cpus", self.cpuset_cpus]
        for group in self.group_add:
            words += ["--group-add", group]
        if self.gpu_ids:
            words += ["--gpus", "device=" + ",".join(self.gpu_ids)]
        for device in self.devices:
            words += ["--device", device]
        for key, value in self.environment.items():
            words += ["-e", f"{key}={value}"]
        for source, target, ro in self.mounts:
            words += ["-v", f"{source}:{target}" + (":ro" if ro else "")]
        if self.entrypoint:
            words += ["--entrypoint", self.entrypoint[0]]
        return shlex.join(words + [self.image] + (self.entrypoint or [])[1:] + self.command)


def device_options(device: str) -> tuple[list[str], list[str]]:
    """(GPU ids for a device request, device nodes) that give a container the run's device and nothing else."""
    kind, _, index = device.partition(":")
    if kind in ("cuda", "gpu"):
        return [index or "0"], []
    if kind == "neuron":
        return [], [f"/dev/neuron{index or 0}:/dev/neuron{index or 0}"]
    if kind == "tpu":  # TPU v4 and later: one /dev/accelN per chip
        return [], [f"/dev/accel{index or 0}:/dev/accel{index or 0}"]
    return [], []


def cpu_set(threads: int) -> str:
    """The first `threads` cores this process may use (all of them when threads is 0 or too many)."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[:threads] if 0 < threads < len(allowed) else allowed
    return ",".join(map(str, chosen))


def inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def keeps_its_path(directory: str) -> bool:
    """Whether a host directory can be mounted at its own path without hiding what the image needs."""
    return not (directory == "/" or any(inside(p, directory) for p in _IMAGE_PATHS)
                or any(inside(directory, tree) for tree in _IMAGE_TREES))
