"""Atomic file writes: the one helper every writer of records, caches, labels and pictures uses.

A file is written under a unique hidden temporary name in its destination
folder, flushed to disk (``fsync``) and renamed over the destination with
``os.replace``, so a file that exists is complete: a killed process, a full
disk or two processes writing the same path never leave a half-written file
(the last complete write wins). The temporary name is unique (``mkstemp``), so
concurrent writers never share one.
"""
import contextlib
import os
import tempfile
from typing import Iterator, Union

PathLike = Union[str, 'os.PathLike[str]']
FILE_MODE = 0o644  # readable by the group and others, like any result file (mkstemp creates 0600)


@contextlib.contextmanager
def atomic_path(path: PathLike, mode: int = FILE_MODE) -> Iterator[str]:
    """Yield a temporary path next to ``path``; when the block ends without error it becomes ``path``.

    Use it for writers that want a file name (PIL, ``torch.save``, other libraries);
    the temporary name keeps ``path``'s suffix, so writers that pick the format from
    it (``Image.save``) write the right one.

    Args:
        path: the destination file (its folder is created).
        mode: permission bits of the written file.

    Yields:
        The temporary file's path (an empty file already created, unique in the folder).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{base}.', suffix='.tmp' + os.path.splitext(base)[1])
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb') as f:  # the data on disk before the name points at it
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: PathLike, data: Union[str, bytes], mode: int = FILE_MODE, encoding: str = 'utf-8') -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically (see the module docstring)."""
    with atomic_path(path, mode) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data.encode(encoding) if isinstance(data, str) else data)

