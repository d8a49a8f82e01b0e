"""Load the benchmark table (``clearclip_seg/benchmarks.py``) without importing the package.

``import clearclip_seg`` registers models and datasets in MMSegmentation, which needs
mmseg/mmcv. The data tools only need the plain table, so this helper loads
``clearclip_seg/benchmarks.py`` directly by file path. When the real package module
is already imported, that one is reused, so both views are the same objects.
"""
import importlib.util
import sys
from pathlib import Path
from typing import List, Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_FILE = REPO_ROOT / 'clearclip_seg' / 'benchmarks.py'
VOCAB_DIR = REPO_ROOT / 'clearclip_seg' / 'vocabularies'
_PRIVATE_NAME = '_clearclip_seg_benchmarks_table'


def load_benchmarks_module():
    """Return the ``clearclip_seg.benchmarks`` module, loaded by path if needed.

    Returns:
        The module object holding ``BENCHMARKS``, ``get_benchmark`` and ``Benchmark``.
    """
    for name in ('clearclip_seg.protocol.benchmarks', _PRIVATE_NAME):
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(_PRIVATE_NAME, BENCHMARKS_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot load the benchmark table from {BENCHMARKS_FILE}')
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PRIVATE_NAME] = module  # dataclasses look the module up while building
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_PRIVATE_NAME, None)
        raise
    return module


_mod = load_benchmarks_module()
BENCHMARKS = _mod.BENCHMARKS
Benchmark = _mod.Benchmark
get_benchmark = _mod.get_benchmark
PAPER_ORDER = getattr(_mod, 'PAPER_ORDER', tuple(BENCHMARKS))


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


def read_vocabulary(name: str) -> List[str]:
    """Class names of a vocabulary file, one per line, stripped, in label order.

    Args:
        name: Vocabulary name, e.g. ``coco_stuff164k``.

    Returns:
        The list of lines (synonym lists kept as written, e.g. ``'tv,monitor'``).
    """
    path = VOCAB_DIR / f'{name}.txt'
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]
