"""Child runs in their own process group, ended with the runner; what a killed runner left behind.

Each work unit (``tools/test.py``, a shared pass's worker, or ``torchrun`` and
its workers) runs in a new process group, so one ``killpg`` reaches all its
processes, DataLoader workers included. SIGINT and SIGTERM sent to the runner
are turned into ``Interrupted``; the runner then ends the running children's
groups (SIGTERM, then SIGKILL after a grace period) before exiting. If the
runner itself is killed outright (SIGKILL), Linux's parent-death signal still
sends each child SIGTERM (``die_with_parent``); under submitit's local
executor, whose job controllers outlive the runner by design, the job ends its
command once the runner is gone (``executors.run_logged``).

Each running unit also leaves a pid file in ``<out>/.running/`` (removed when
it ends). A runner that finds one at start (``leftovers``) reports it, and ends
the process group it names if it is still running on this machine.
"""
import ctypes
import datetime
import json
import os
import signal
import socket
import subprocess
import time
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


def die_with_parent(parent: Optional[int] = None) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (nothing elsewhere).

    Args:
        parent: the parent's pid as the caller knows it; if the parent is already
            gone (this process was re-parented before the call), exit now.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the signal handlers still end the group
        return
    if parent is not None and os.getppid() != parent:
        os._exit(143)


def _child_setup() -> None:  # runs in the child between fork and exec
    die_with_parent()


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


def spawn(cmd: List[str], keep: Callable[[subprocess.Popen], None], pid_path: Optional[str] = None,
          unit: str = '', **popen_kwargs) -> subprocess.Popen:
    """Start ``cmd`` in its own process group and hand it to ``keep`` before any signal is raised.

    A SIGINT/SIGTERM arriving while the child starts is held back until ``keep``
    has stored the handle, so the caller's clean-up always finds the child to end.
    With ``pid_path``, the child is noted there (``write_pid_file``; the caller removes it).

    Raises:
        Interrupted: a signal arrived meanwhile (the child exists and has been kept).
    """
    _STATE['defer'] = True
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_child_setup, **popen_kwargs)
        keep(proc)
        if pid_path:
            write_pid_file(pid_path, proc.pid, cmd, unit)
    finally:
        _STATE['defer'] = False
    _raise_pending()
    return proc


def run_child(cmd: List[str], log_path: str, on_line: Optional[Callable[[str], None]] = None,
              cwd: Optional[str] = None, env: Optional[dict] = None, pid_path: Optional[str] = None,
              unit: str = '') -> int:
    """Run ``cmd`` in its own process group, teeing its output to ``log_path`` (noted in ``pid_path``).

    Returns:
        The exit code.

    Raises:
        Interrupted: the runner was signalled; the child's group has been ended.
    """
    children: List[subprocess.Popen] = []
    with open(log_path, 'w') as log:
        try:
            spawn(cmd, children.append, pid_path, unit, cwd=cwd, env=env, stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT, text=True, bufsize=1)
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
            if pid_path:
                remove_pid_file(pid_path)


# -- pid files of running units -----------------------------------------------------
RUNNING_DIR = '.running'


def pid_file(out: str, unit_name: str) -> str:
    return os.path.join(out, RUNNING_DIR, f'{unit_name}.json')


def write_pid_file(path: str, proc_pid: int, cmd: List[str], unit: str) -> None:
    """Note a started unit: its process (group) id, host and command."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    info = dict(pid=proc_pid, host=socket.gethostname(), unit=unit, command=list(cmd), runner=os.getpid(),
                started=datetime.datetime.now().isoformat(timespec='seconds'),
                slurm_job=os.environ.get('SLURM_JOB_ID'))
    with open(path, 'w') as f:
        json.dump(info, f)


def remove_pid_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _cmdline(pid: int) -> Optional[List[str]]:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return [a.decode(errors='replace') for a in f.read().split(b'\0') if a]
    except OSError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def leftovers(out: str, grace_s: float = GRACE_S) -> List[str]:
    """Pid files of units an earlier runner left: end what still runs here, remove the files.

    Returns:
        One line per pid file saying what was found and done.
    """
    folder = os.path.join(out, RUNNING_DIR)
    lines = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        try:
            with open(path) as f:
                info = json.load(f)
            pid, host, unit = int(info['pid']), info['host'], info['unit']
        except (OSError, ValueError, KeyError, TypeError):
            lines.append(f'unreadable pid file {path}: removed')
            remove_pid_file(path)
            continue
        leader = _cmdline(pid)
        if host != socket.gethostname():
            job = f", Slurm job {info['slurm_job']}" if info.get('slurm_job') else ''
            lines.append(f'unit {unit} was running on {host} (pid {pid}{job}) when an earlier runner stopped: '
                         'check that it has ended there')
        elif _group_alive(pid) and (leader == info.get('command') or leader is None):
            # its processes, or what is left of its group once the leader is gone
            os.killpg(pid, signal.SIGTERM)
            deadline = time.time() + grace_s
            while _group_alive(pid) and time.time() < deadline:
                time.sleep(0.1)
            if _group_alive(pid):
                os.killpg(pid, signal.SIGKILL)
            lines.append(f'unit {unit} (pid {pid}) was still running from an earlier runner '
                         f"(started {info.get('started')}): ended it")
        else:
            lines.append(f'unit {unit} (pid {pid}) was interrupted when an earlier runner stopped; '
                         'its runs without a record run again')
        remove_pid_file(path)
    return lines
