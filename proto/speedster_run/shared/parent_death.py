"""A local runner dies with the orchestrator that started it: the kernel's parent-death signal, set by the runner.

The local sandbox cannot set it in a `preexec_fn`: a preexec_fn makes subprocess fork() instead of vfork(), fork()
runs gRPC's fork handlers, which restart gRPC's poller threads in the child, and subprocess's close_fds then closes
the poller's epoll fd before exec: the poller aborts the child ("Epoll1Poller ... epoll_wait error: Bad file
descriptor", SIGABRT). So the sandbox passes its pid in PARENT_PID_ENV and the runner sets the signal on itself, first
thing after exec.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "SPEEDSTER_RUN_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(environ=os.environ) -> None:
    """When PARENT_PID_ENV names the parent: the kernel SIGKILLs this process when that parent dies. A parent that
    died before the signal was set (the runner is an orphan already) ends this process at once."""
    value = environ.pop(PARENT_PID_ENV, "")  # popped: the backend's own child processes must not act on it
    if not value.isdigit():
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl (not Linux): the sandbox's stop() is then the only guard
        pass
    if os.getppid() != int(value):
        sys.stderr.write(f"runner: parent process {value} is gone; exiting\n")
        os._exit(1)
