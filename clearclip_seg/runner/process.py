"""Child runs in their own process group, ended with the runner.

Each evaluation (``tools/test.py``, or ``torchrun`` and its workers) runs in a
new process group, so one ``killpg`` reaches all its processes, DataLoader
workers included. SIGINT and SIGTERM sent to the runner are turned into
``Interrupted``; the runner then ends the current child's group (SIGTERM, then
SIGKILL after a grace period) before exiting. If the runner itself is killed
outright (SIGKILL), Linux's parent-death signal still sends the child SIGTERM.
"""
import ctypes
import os
import signal
import subprocess
from typing import Callable, List, Optional

GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


class Interrupted(Exception):
    """The runner received SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# While a child is being started, a signal is held back (raising inside Popen would lose the
# handle of a child that already exists); spawn raises it as soon as the handle is kept.
_STATE = {'defer': False, 'pending': None}


def _raise_interrupted(signum, frame):
    if _STATE['defer']:
        _STATE['pending'] = signum
        return
    raise Interrupted(signum)


def _raise_pending() -> None:
    signum, _STATE['pending'] = _STATE['pending'], None
    if signum is not None:
        raise Interrupted(signum)


class interrupt_handlers:
    """``with interrupt_handlers():`` SIGINT/SIGTERM raise ``Interrupted`` (restored on exit)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self._old = {s: signal.signal(s, _raise_interrupted) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _child_setup() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the signal handlers still end the group
        pass


def end_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the child's process group, wait for the child, then SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:  # stragglers (workers of a child that did not stop them) and a child that ignored SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass


def spawn(cmd: List[str], keep: Callable[[subprocess.Popen], None], **popen_kwargs) -> subprocess.Popen:
    """Start ``cmd`` in its own process group and hand it to ``keep`` before any signal is raised.

    A SIGINT/SIGTERM arriving while the child starts is held back until ``keep``
    has stored the handle, so the caller's clean-up always finds the child to end.

    Raises:
        Interrupted: a signal arrived meanwhile (the child exists and has been kept).
    """
    _STATE['defer'] = True
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_child_setup, **popen_kwargs)
        keep(proc)
    finally:
        _STATE['defer'] = False
    _raise_pending()
    return proc


def run_child(cmd: List[str], log_path: str, on_line: Optional[Callable[[str], None]] = None,
              cwd: Optional[str] = None, env: Optional[dict] = None) -> int:
    """Run ``cmd`` in its own process group, teeing its output to ``log_path``.

    Returns:
        The exit code.

    Raises:
        Interrupted: the runner was signalled; the child's group has been ended.
    """
    children: List[subprocess.Popen] = []
    with open(log_path, 'w') as log:
        try:
            spawn(cmd, children.append, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  text=True, bufsize=1)
            proc = children[0]
            for line in proc.stdout:
                log.write(line)
                if on_line is not None:
                    on_line(line)
            return proc.wait()
        except BaseException:
            for proc in children:
                end_group(proc)
            raise
        finally:
            for proc in children:
                proc.stdout.close()
