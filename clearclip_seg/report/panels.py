"""Qualitative panels: image | ground truth | each run's prediction, where runs saved them (``--show-dir``).

``tools/test.py --show-dir DIR`` (``ShowPredictionsHook``) writes, beside its
panels, the raw label maps and an index (``DIR/labels/index.json``,
``clearclip_seg.visualization.save_labels``). A run's show dir is found under
its record's folder, or named on the command line (``--show-dir RUN=DIR``).
The pictures are copied into the report's ``images/`` folder as PNG, coloured
with the demo's palette (``visualization.make_palette``), with a class legend.
"""
import glob
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..tables.build import MainTable
from ..tables.labels import bench_title
from ..tables.records import RecordError
from .html import esc

MAX_IMAGES = 8   # per benchmark


def _index(show_dir: str) -> Optional[dict]:
    path = os.path.join(show_dir, 'labels', 'index.json')
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def find_show_dirs(table: MainTable, given: Sequence[str] = ()) -> Dict[Tuple[str, str], str]:
    """(row label, benchmark) -> show dir, from ``RUN=DIR`` items and the records' folders.

    ``RUN`` is a run name (``run.name`` of the record), a record path, or a
    unique part of ``'row label | benchmark'``.

    Raises:
        RecordError: an item is not ``RUN=DIR``, the folder holds no ``labels/index.json``,
            or ``RUN`` matches no run or several.
    """
    runs = [(r.label, b, rec) for r in table.rows for b, rec in r.records.items()]
    out: Dict[Tuple[str, str], str] = OrderedDict()
    for label, b, rec in runs:
        found = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(rec.path)), '**', 'labels',
                                              'index.json'), recursive=True))
        if found:
            out[(label, b)] = os.path.dirname(os.path.dirname(found[0]))
    for item in given:
        if '=' not in item:
            raise RecordError(f"--show-dir '{item}': expected RUN=DIR (a run name, record path or row label, "
                              "then the folder tools/test.py --show-dir wrote)")
        name, d = item.split('=', 1)
        if _index(d) is None:
            raise RecordError(f"--show-dir '{item}': {d} holds no labels/index.json (made by tools/test.py "
                              "--show-dir)")
        hits = [(label, b) for label, b, rec in runs if name in (
            ((rec.data.get('run') or {}).get('name')), rec.path) or name == f'{label} | {b}']
        hits = hits or [(label, b) for label, b, _ in runs if name.lower() in f'{label} | {b}'.lower()]
        if len(hits) != 1:
            raise RecordError(f"--show-dir '{item}': {len(hits) or 'no'} runs match '{name}'")
        out[hits[0]] = d
    return out


def _save_png(array: np.ndarray, path: str) -> None:
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _read_label(path: str) -> Optional[np.ndarray]:
    from PIL import Image
    if not os.path.isfile(path):
        return None
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def panels_html(table: MainTable, out_dir: str, show_dirs: Dict[Tuple[str, str], str]) -> str:
    """The panels section: per benchmark and image, the image, its labels and each run's prediction.

    Args:
        table: The main table.
        out_dir: The report folder (pictures go to ``images/``).
        show_dirs: (row label, benchmark) -> show dir (``find_show_dirs``).

    Returns:
        HTML ('' when no run saved panels).
    """
    from ..visualization import colorize, make_palette, read_rgb   # lazy: PIL and the hook's imports
    by_bench: Dict[str, List[Tuple[str, dict, str]]] = OrderedDict()
    for b in table.benchmarks:
        for r in table.rows:
            d = show_dirs.get((r.label, b))
            idx = _index(d) if d else None
            if idx is not None:
                by_bench.setdefault(b, []).append((r.label, idx, d))
    out = []
    for b, runs in by_bench.items():
        classes = runs[0][1]['classes']
        palette = make_palette(len(classes))
        stems = list(OrderedDict.fromkeys(s for _, idx, _ in runs for s in idx['images']))[:MAX_IMAGES]
        out.append(f'<h3>{esc(bench_title(b))}</h3>')
        present = set()
        for k, stem in enumerate(stems):
            figs = []
            base = f'images/{b}_{k}'
            img_path = next((idx['images'][stem] for _, idx, _ in runs if stem in idx['images']), None)
            if img_path and os.path.isfile(img_path):
                _save_png(read_rgb(img_path), os.path.join(out_dir, base + '_image.png'))
                figs.append((base + '_image.png', esc(stem)))
            gt = next((g for g in (_read_label(os.path.join(d, 'labels', f'{stem}_gt.png')) for _, _, d in runs)
                       if g is not None), None)
            if gt is not None:
                _save_png(colorize(gt, palette), os.path.join(out_dir, base + '_gt.png'))
                figs.append((base + '_gt.png', 'ground truth'))
                present |= set(np.unique(gt).tolist())
            for j, (label, idx, d) in enumerate(runs):
                pred = _read_label(os.path.join(d, 'labels', f'{stem}_pred.png'))
                if pred is None:
                    continue
                _save_png(colorize(pred, palette), os.path.join(out_dir, f'{base}_pred{j}.png'))
                figs.append((f'{base}_pred{j}.png', esc(label)))
                present |= set(np.unique(pred).tolist())
            out.append('<div class="panel">' + ''.join(
                f'<figure><img src="{src}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'
                for src, cap in figs) + '</div>')
        shown = [c for c in sorted(present) if 0 <= c < len(classes)]
        out.append('<p class="legend">' + ''.join(
            f'<span><i style="background:rgb({",".join(str(int(v)) for v in palette[c])})"></i>'
            f'{esc(classes[c])}</span>' for c in shown) + '</p>')
    return '\n'.join(out)
