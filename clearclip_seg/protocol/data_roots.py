"""Where a benchmark's files are on disk: the table's ``data_root`` resolved against the repository.

The table's roots (``data/...``) are relative to the repository, whatever the
current directory; roots a user types are taken as given.
"""
from pathlib import Path
from typing import Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / 'data'


def rel_to_data_dir(bench) -> Path:
    """The benchmark's data root relative to the ``data/`` folder.

    Args:
        bench: A ``Benchmark`` (its ``data_root`` normally starts with ``data/``).

    Returns:
        E.g. ``VOCdevkit/VOC2012`` for voc21. An absolute or non-``data/`` root is
        returned unchanged.
    """
    p = Path(bench.data_root)
    if not p.is_absolute() and p.parts and p.parts[0] == 'data':
        return Path(*p.parts[1:])
    return p


def resolve_data_root(bench, data_root: Optional[Union[str, Path]] = None,
                      data_dir: Optional[Union[str, Path]] = None) -> Path:
    """Where a benchmark's files are on disk.

    Args:
        bench: A ``Benchmark``.
        data_root: Explicit root for this benchmark (wins over everything); taken as
            given (relative to the current directory when relative).
        data_dir: Replacement for the repository's ``data/`` folder; the benchmark's
            root below ``data/`` is appended.

    Returns:
        The benchmark's data root. Without overrides, the table's ``data_root``,
        resolved against the repository root when relative.
    """
    if data_root is not None:
        return Path(data_root)
    if data_dir is not None:
        rel = rel_to_data_dir(bench)
        return rel if rel.is_absolute() else Path(data_dir) / rel
    p = Path(bench.data_root)
    return p if p.is_absolute() else REPO_ROOT / p
