"""One benchmark runner per results folder: an advisory lock that a crash cannot leave stale.

The lock is a ``filelock.FileLock`` on ``<out>/.benchmark.lock``: on POSIX an
``flock`` that the kernel drops when the holding process exits, however it
exits (even SIGKILL), so there is no stale lock to clean up. Who holds it (pid,
start time, command) is written beside it, in ``.benchmark.lock.info``, only for
the message shown to a second runner (the lock file itself is truncated by
every attempt to take it).
"""
import datetime
import json
import os
import sys
from typing import Optional

from filelock import FileLock, Timeout

from ..atomic import atomic_write

LOCK_NAME = '.benchmark.lock'
INFO_NAME = LOCK_NAME + '.info'


class LockedError(RuntimeError):
    """Another runner holds the results folder; the message is one line."""


class ResultsLock:
    """``with ResultsLock(out):`` holds ``out`` for this process or raises ``LockedError``."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.info_path = os.path.join(folder, INFO_NAME)
        # not thread-local and not a singleton: a second ResultsLock on the same folder is a second runner,
        # refused even in the same process (filelock would otherwise count it as a re-entry)
        self._lock: Optional[FileLock] = None

    def acquire(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        lock = FileLock(self.path, timeout=0, mode=0o644, thread_local=False, is_singleton=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LockedError(f"results folder '{self.folder}' is in use by another tools/benchmark.py"
                              f'{self._holder()}: wait for it to finish, or use another --out') from None
        info = dict(pid=os.getpid(), started=datetime.datetime.now().isoformat(timespec='seconds'),
                    command=' '.join(sys.argv))
        atomic_write(self.info_path, json.dumps(info) + '\n')
        self._lock = lock

    def _holder(self) -> str:
        try:
            with open(self.info_path) as f:
                info = json.load(f)
            return f" (held by pid {info['pid']}, started {info['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return ''

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
