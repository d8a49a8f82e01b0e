"""``--data-root``: one meaning in every tool that reads or writes benchmark data.

``tools/benchmark.py``, ``tools/check_data.py`` and ``tools/prepare_data.py`` take
the same option, repeatable:

- ``--data-root DIR``: a data folder holding the benchmarks' layouts (``data/README.md``),
  in place of the repository's ``data/``: ``DIR/VOCdevkit/VOC2012`` for voc21, ...
- ``--data-root KEY=PATH`` (or ``--data-root-override KEY=PATH``): one benchmark's own
  root, e.g. ``voc21=/datasets/VOCdevkit/VOC2012``; it wins over ``DIR`` for that benchmark.

Paths typed here are relative to the current directory. This module only parses;
``protocol.data_roots`` says where a benchmark's files are.
"""
import argparse
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .protocol.benchmarks import BENCHMARKS

DATA_ROOT_HELP = ("a data folder holding the benchmarks' layouts, in place of the repository's data/ "
                  "(e.g. /datasets/data), or KEY=PATH: one benchmark's own root (e.g. voc21=/datasets/VOCdevkit/"
                  'VOC2012); repeatable; relative to the current directory')


def add_data_root_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-root`` and ``--data-root-override`` (both repeatable) to a tool's parser."""
    parser.add_argument('--data-root', action='append', default=[], metavar='DIR|KEY=PATH', help=DATA_ROOT_HELP)
    parser.add_argument('--data-root-override', action='append', default=[], metavar='KEY=PATH',
                        help='one benchmark\'s own root (the same as --data-root KEY=PATH)')


def parse_data_roots(items: Sequence[str], overrides: Sequence[str] = ()) -> Tuple[Optional[str], Dict[str, str]]:
    """Split ``--data-root`` values into the data folder and per-benchmark roots.

    An item ``KEY=PATH`` whose KEY names a benchmark is that benchmark's root; an item
    without ``=`` before its first path separator is the data folder (at most one).

    Returns:
        ``(data folder or None, {benchmark: root})``, paths as typed.

    Raises:
        ValueError: an unknown benchmark key, an empty path, or two data folders (one line).
    """
    data_dir, roots = None, {}
    for item, flag in [(i, '--data-root') for i in items] + [(i, '--data-root-override') for i in overrides]:
        key, sep, path = str(item).partition('=')
        if sep and '/' not in key and '\\' not in key:
            if key not in BENCHMARKS:
                raise ValueError(f"{flag} '{item}': unknown benchmark '{key}', expected one of "
                                 f"{', '.join(BENCHMARKS)} (KEY=PATH), or a data folder")
            if not path:
                raise ValueError(f"{flag} '{item}': expected KEY=PATH, e.g. voc21=/datasets/VOCdevkit/VOC2012")
            roots[key] = path
        elif flag == '--data-root-override':
            raise ValueError(f"{flag} '{item}': expected KEY=PATH, e.g. voc21=/datasets/VOCdevkit/VOC2012")
        elif not item:
            raise ValueError(f"{flag} '': expected a data folder or KEY=PATH")
        elif data_dir is not None and data_dir != item:
            raise ValueError(f"--data-root '{data_dir}' and '{item}': one data folder at most "
                             '(name single benchmarks with KEY=PATH)')
        else:
            data_dir = item
    return data_dir, roots


def under_data_dir(root: str, data_dir: str) -> Optional[str]:
    """A root written under the repository's ``data/`` (``data/VOCdevkit/VOC2012``) moved under ``data_dir``.

    Returns:
        ``data_dir/VOCdevkit/VOC2012``, or None for a root that is not under ``data/``
        (absolute, or elsewhere in the repository): a data folder does not move it.
    """
    p = Path(root)
    if p.is_absolute() or not p.parts or p.parts[0] != 'data':
        return None
    return str(Path(data_dir, *p.parts[1:]))
