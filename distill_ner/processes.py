"""Run a server command so that a signal to our PID stops everything it started.

`mlflow ui` and `mlflow models serve` start further processes (uvicorn and its workers, job consumers).
A supervisor or a script stops `distill-ner serve` by signalling its PID alone: the command therefore
runs in a process group of its own, our SIGTERM/SIGINT/SIGHUP go to that whole group, and whatever of
the group outlives the command is stopped before we exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: still there
        return True
    return True


def stop_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM to every process left in the group, SIGKILL to those still there after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not group_alive(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)


def run_process_group(command: Sequence[str], env: Mapping[str, str] | None = None, grace_s: float = 10.0) -> int:
    """Run `command` as the leader of a new process group, forward our stop signals to the group, and
    return its exit status (128 + signal number when a signal ended it, as a shell reports it)."""
    child = subprocess.Popen(list(command), env=dict(env) if env is not None else None, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        returncode = child.wait()
    finally:
        stop_group(child.pid, grace_s)  # workers the command left behind, if any
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - returncode if returncode < 0 else returncode
