"""Remote sandbox: runners that already run elsewhere (compose services, another host), named with --runner NAME=ADDR.

Nothing is started or killed here: start() checks that the runner answers its health check and accepts this run's
token, and hands out its address; stop() and kill() only close this run's connection (after unloading what this run
loaded and deleting what it uploaded). Runners see none of the orchestrator's files, so models are streamed to them
(shares_filesystem = False). A call past its deadline cannot be stopped either (can_kill = False): the candidate is
reported as "timeout" and the runner stays in use; while it still serves the stuck call, it answers the next ones
"busy", which the client retries within their own deadlines. Their logs belong to their operator.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable, Sequence

from orchestrator.config import RunnerSecurity
from orchestrator.errors import UserError
from orchestrator.runner_client import RunnerCallError, RunnerClient, wait_until_serving
from orchestrator.sandboxes.base import ExitInfo, RunnerProcess, Sandbox, SandboxError
from speedster_run.shared.security import is_loopback

log = logging.getLogger("orchestrator.sandboxes.remote")

# How long start() waits for a runner that does not answer yet (compose may still be starting it).
READY_TIMEOUT_S = 30.0
# exit_info() runs while a call failed: a quick probe, so that an unreachable host is reported at once.
PROBE_TIMEOUT_S = 2.0
UNLOAD_TIMEOUT_S = 5.0
# start()'s authenticated call (Describe, which a runner answers even while busy).
AUTH_CHECK_TIMEOUT_S = 30.0


def normalize_address(address: str) -> str:
    """"host:port", "[v6]:port" or "unix:///path" -> a gRPC target; ValueError for anything else."""
    address = address.strip()
    if address.startswith("unix:"):
        if not address[len("unix:"):].lstrip("/"):
            raise ValueError(f"{address!r}: a unix socket address needs a path (unix:///run/runner.sock)")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{address!r}: expected host:port (port 1-65535) or unix:///path.sock")
    return address


def parse_runner(text: str) -> tuple[str, str]:
    """"NAME=ADDR" -> (name, address); ValueError with what to fix."""
    name, sep, address = text.partition("=")
    name = name.strip()
    if not sep or not name or not address.strip():
        raise ValueError(f"--runner {text!r}: expected NAME=ADDR, e.g. onnxruntime=127.0.0.1:50051")
    try:
        return name, normalize_address(address)
    except ValueError as error:
        raise ValueError(f"--runner {text!r}: {error}") from None


def _check_security(addresses: Iterable[tuple[str, str]], security: RunnerSecurity) -> None:
    """ValueError unless every non-loopback runner is reached over TLS with a token (or `insecure` allows it)."""
    if security.insecure:
        return
    for name, address in addresses:
        if is_loopback(address):
            continue
        missing = [what for what, present in (("--runner-tls-ca", security.tls_ca is not None),
                                              ("a token (--runner-token-file or $SPEEDSTER_RUN_TOKEN)",
                                               bool(security.token))) if not present]
        if missing:
            raise ValueError(f"--runner {name}={address} is not a loopback address: it needs {' and '.join(missing)} "
                             f"(or --runner-insecure on a trusted private network)")


def check_settings(addresses: Sequence[tuple[str, str]], security: RunnerSecurity, backends: Iterable[str],
                   named: Iterable[str] = ()) -> None:
    """UserError, before anything starts, for remote settings that cannot work: no runner given, a backend given
    twice, a non-loopback runner without TLS and a token, or a backend the run needs (`backends`:
    those it will start; `named`: those the user asked for) without a runner. The one place they are checked, for
    the CLI and for a RunConfig built by hand alike."""
    names = [name for name, _ in addresses]
    if not names:
        raise UserError("--sandbox remote needs at least one --runner NAME=ADDR")
    twice = [name for name in names if names.count(name) > 1]
    if twice:
        raise UserError(f"--runner given twice for {twice[0]}")
    try:
        _check_security(addresses, security)
    except ValueError as error:
        raise UserError(str(error)) from None
    named = tuple(named)
    for backend in backends:  # the backends tried come from --runner: only the original's may lack one
        if backend in names:
            continue
        if backend in named:
            raise UserError(f"no --runner given for backend {backend} (--sandbox remote uses only those given)")
        raise UserError(f"no --runner given for backend {backend}, which runs the original model to compute the "
                        f"reference outputs: add --runner {backend}=ADDR")


class _TrackingClient(RunnerClient):
    """A client that remembers what this run loaded and uploaded, so that stop() can remove it from a runner that
    outlives us (a long-lived service would otherwise fill its disk with every run's uploads)."""

    def __init__(self, target: str, **security):
        super().__init__(target, **security)
        self.loaded: list[str] = []
        self.uploaded: list[str] = []

    def upload(self, directory, names, timeout_s):
        upload_id = super().upload(directory, names, timeout_s)
        self.uploaded.append(upload_id)
        return upload_id

    def delete_upload(self, upload_id, timeout_s=30.0):
        if upload_id in self.uploaded:
            self.uploaded.remove(upload_id)
        super().delete_upload(upload_id, timeout_s)

    def load(self, request, timeout_s):
        answer = super().load(request, timeout_s)
        if answer.model_id:
            self.loaded.append(answer.model_id)
        return answer

    def unload(self, model_id, timeout_s=30.0):
        if model_id in self.loaded:
            self.loaded.remove(model_id)
        super().unload(model_id, timeout_s)

    def close(self) -> None:
        """Unloads what this run loaded, deletes what it uploaded (models first: they were loaded from the uploads),
        then closes the channel. Best effort: a runner that stays busy (a call past its deadline) or is gone keeps
        what it has, and the first such failure ends the clean-up."""
        try:
            while self.loaded:
                self.unload(self.loaded[-1], UNLOAD_TIMEOUT_S)
            while self.uploaded:
                self.delete_upload(self.uploaded[-1], UNLOAD_TIMEOUT_S)
        except (RunnerCallError, ValueError) as error:  # ValueError: the channel is closed already
            log.warning("could not remove %d models and %d uploads of this run from %s: %s", len(self.loaded),
                        len(self.uploaded), self.target, error)
            self.loaded.clear()
            self.uploaded.clear()
        super().close()


class RemoteSandbox(Sandbox):
    name = "remote"
    shares_filesystem = False
    can_kill = False
    concurrent_starts = 4  # a start only dials a runner that already serves

    def __init__(self, addresses: Iterable[tuple[str, str]], security: RunnerSecurity | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S):
        self.addresses = dict(addresses)  # backend -> its runner's address (--runner NAME=ADDR)
        self.security = security or RunnerSecurity()
        self.ready_timeout_s = ready_timeout_s
        self._clients: dict[int, _TrackingClient] = {}
        self._token_accepted: set[str] = set()  # backends whose runner answered an authenticated call

    def _serving(self, address: str, timeout_s: float) -> bool:
        return wait_until_serving(address, timeout_s, **self.security.client_options())

    def start(self, backend: str, threads: int, ready_timeout_s: float = READY_TIMEOUT_S) -> RunnerProcess:
        address = self.addresses.get(backend)
        if address is None:
            raise SandboxError(f"no --runner given for backend {backend}")
        if not self._serving(address, min(ready_timeout_s, self.ready_timeout_s)):
            hint = " (check the address, and --runner-tls-ca if it serves TLS)" if not is_loopback(address) else ""
            raise SandboxError(f"runner for {backend} at {address} is not serving{hint}")
        self.check_token(backend)
        # `threads` cannot be applied to a runner started by someone else: each Load request still carries it.
        return RunnerProcess(backend=backend, target=address, description=f"remote runner at {address}",
                             handle=address)

    def check_token(self, backend: str, timeout_s: float = AUTH_CHECK_TIMEOUT_S) -> None:
        """UserError when the backend's runner refuses this run's token. Health answers without one, so only an
        authenticated call can tell, and a wrong token is the user's configuration to fix, not a failure of every
        candidate. Asked once per backend; a runner that does not answer is left to start() and the run to report."""
        address = self.addresses.get(backend)
        if address is None or backend in self._token_accepted:
            return
        client = RunnerClient(address, **self.security.client_options())
        try:
            client.describe(timeout_s)  # Describe: answered even by a busy runner
        except RunnerCallError as error:
            if error.status == "UNAUTHENTICATED":
                given = "refused the token given" if self.security.token else "requires a token"
                raise UserError(f"runner for {backend} at {address} {given} (UNAUTHENTICATED): pass the token it "
                                f"expects with --runner-token-file or $SPEEDSTER_RUN_TOKEN") from None
            return
        finally:
            client.close()
        self._token_accepted.add(backend)

    def placement(self, backend: str) -> tuple[str, str]:
        return self.name, self.addresses.get(backend, "no --runner given")

    def environment(self) -> dict:
        return {"remote_runners": dict(self.addresses), "remote_tls": self.security.tls_ca is not None,
                "remote_token": bool(self.security.token)}

    def client(self, runner: RunnerProcess) -> RunnerClient:
        client = _TrackingClient(runner.target, **self.security.client_options())
        self._clients[id(runner)] = client
        return client

    def exit_info(self, runner: RunnerProcess) -> ExitInfo | None:
        if self._serving(runner.target, PROBE_TIMEOUT_S):
            return None
        return ExitInfo("crash", f"remote runner at {runner.target} stopped answering")

    def stop(self, runner: RunnerProcess) -> None:
        """Unloads what this run loaded and closes the connection; the runner itself keeps running."""
        client = self._clients.pop(id(runner), None)
        if client is not None:
            client.close()

    def kill(self, runner: RunnerProcess) -> None:
        """Nothing to kill: the runner belongs to its operator (can_kill is False, so the pool does not rely on it)."""

    def logs(self, runner: RunnerProcess, max_lines: int = 40) -> str:
        return ""  # the runner's stderr is on its host: `docker-compose logs <backend>` there

    def reproduce_command(self, runner: RunnerProcess) -> str:
        """The runner is its operator's, started on its host: what reproduces a failure from here is a run against
        that one runner (the token itself is never written)."""
        words = ["speedster-run", "--sandbox", "remote", "--runner", f"{runner.backend}={runner.target}",
                 "--backends", runner.backend]
        if self.security.tls_ca is not None:
            words += ["--runner-tls-ca", str(self.security.tls_ca)]
        if self.security.server_name:
            words += ["--runner-tls-server-name", self.security.server_name]
        if self.security.tls_cert is not None:
            words += ["--runner-tls-cert", str(self.security.tls_cert), "--runner-tls-key", str(self.security.tls_key)]
        if self.security.insecure:
            words.append("--runner-insecure")
        command = shlex.join(words) + " --model ..."
        return command + (" (token: --runner-token-file or $SPEEDSTER_RUN_TOKEN)" if self.security.token else "")

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
