"""One benchmark runner per results folder: an advisory lock that a crash cannot leave stale.

The lock is ``fcntl.flock`` on ``<out>/.benchmark.lock``: the kernel drops it
when the holding process exits, however it exits (even SIGKILL), so there is
no stale lock to clean up. The file's content (pid, start time, command) only
serves the message shown to a second runner.
"""
import datetime
import fcntl
import json
import os
import sys
from typing import Optional

LOCK_NAME = '.benchmark.lock'


class LockedError(RuntimeError):
    """Another runner holds the results folder; the message is one line."""


class ResultsLock:
    """``with ResultsLock(out):`` holds ``out`` for this process or raises ``LockedError``."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._holder(fd)
            os.close(fd)
            raise LockedError(f"results folder '{self.folder}' is in use by another tools/benchmark.py{holder}: "
                              'wait for it to finish, or use another --out') from None
        os.ftruncate(fd, 0)
        info = dict(pid=os.getpid(), started=datetime.datetime.now().isoformat(timespec='seconds'),
                    command=' '.join(sys.argv))
        os.write(fd, (json.dumps(info) + '\n').encode())
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or '{}')
            return f" (pid {info['pid']}, started {info['started']})"
        except (OSError, ValueError, KeyError):
            return ''

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
