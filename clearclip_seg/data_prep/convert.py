"""Label conversions over folders: worker processes, skipping files already written."""
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path
from .errors import PrepareError
from .files import atomic_save_png, read_label
from .labels import (cityscapes_label_to_train_id, context_mask_to_labels, raw_stuff_to_train_ids,
                     stuff_to_object_labels)

@dataclass
class ConversionResult:
    """How many label files a conversion wrote and how many it found already done."""
    converted: int
    skipped: int
    total: int


_DETAIL = None  # the Detail API object, set before forking the context workers


def _json_to_train_ids(src: str, dst: Path) -> None:
    from cityscapesscripts.preparation.json2labelImg import json2labelImg
    with atomic_path(dst) as tmp:
        json2labelImg(src, tmp, 'trainIds')


_CONVERTERS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'coco_stuff': raw_stuff_to_train_ids,
    'coco_object': lambda a: stuff_to_object_labels(a, raw=False),
    'coco_object_raw': lambda a: stuff_to_object_labels(a, raw=True),
    'cityscapes_table': cityscapes_label_to_train_id,
}


def _convert_one(task: Tuple[str, object, str]) -> Optional[str]:
    """Worker: do one conversion; return None on success, else an error line."""
    kind, src, dst = task
    try:
        dst_p = Path(dst)
        if dst_p.exists():
            return None
        if kind == 'cityscapes_json':
            _json_to_train_ids(str(src), dst_p)
        elif kind == 'context':
            if _DETAIL is None:
                raise RuntimeError('the Detail API object is not loaded')
            atomic_save_png(context_mask_to_labels(_DETAIL.getMask(src)), dst_p)
        else:
            atomic_save_png(_CONVERTERS[kind](read_label(src)), dst_p)
        return None
    except Exception as e:  # reported by the caller, with the file name
        return f'{src}: {type(e).__name__}: {e}'


def run_conversions(tasks: Sequence[Tuple[str, object, str]], nproc: int = 1,
                    desc: str = 'convert') -> ConversionResult:
    """Run conversion tasks, skipping those whose output already exists.

    Args:
        tasks: ``(kind, source, destination)`` triples (see ``_convert_one``).
        nproc: Worker processes (1: in this process).
        desc: Progress bar label.

    Returns:
        The counts of converted and skipped files.

    Raises:
        PrepareError: When any conversion failed (the first few failures are printed).
    """
    todo = [t for t in tasks if not os.path.exists(t[2])]
    skipped = len(tasks) - len(todo)
    errors: List[str] = []
    if todo:
        if nproc > 1 and len(todo) > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context('fork' if 'fork' in methods else None)
            with ctx.Pool(min(nproc, len(todo))) as pool:
                it = pool.imap_unordered(_convert_one, todo, chunksize=8)
                for err in tqdm(it, total=len(todo), desc=desc, unit='file'):
                    if err:
                        errors.append(err)
        else:
            for t in tqdm(todo, desc=desc, unit='file'):
                err = _convert_one(t)
                if err:
                    errors.append(err)
    if errors:
        for e in errors[:5]:
            print(f'  conversion failed: {e}', file=sys.stderr)
        raise PrepareError(f'{desc}: {len(errors)} of {len(todo)} conversions failed '
                           f'(first: {errors[0]})')
    return ConversionResult(converted=len(todo), skipped=skipped, total=len(tasks))


_DERIVED_SUFFIXES = ('_labelTrainIds.png', '_instanceTrainIds.png')


def _visible_files(folder: Path, suffix: str, recursive: bool = False) -> List[Path]:
    """Files in ``folder`` ending with ``suffix``, sorted, hidden (temporary) files skipped."""
    it = folder.rglob(f'*{suffix}') if recursive else folder.glob(f'*{suffix}')
    return sorted(p for p in it if p.is_file() and not p.name.startswith('.'))


def convert_coco_stuff(ann_dir, nproc: int = 1) -> ConversionResult:
    """Write ``<id>_labelTrainIds.png`` next to each raw stuffthingmap ``<id>.png``.

    Args:
        ann_dir: Folder with the raw COCO-Stuff maps (e.g. annotations/val2017).
        nproc: Worker processes.

    Returns:
        The conversion counts.
    """
    ann_dir = Path(ann_dir)
    raws = [p for p in _visible_files(ann_dir, '.png') if not p.name.endswith(_DERIVED_SUFFIXES)]
    tasks = [('coco_stuff', str(p), str(p.with_name(p.stem + '_labelTrainIds.png'))) for p in raws]
    if not tasks and not _visible_files(ann_dir, '_labelTrainIds.png'):
        raise PrepareError(f'{ann_dir}: no raw COCO-Stuff maps (<id>.png) to convert')
    return run_conversions(tasks, nproc, desc='coco_stuff164k labelTrainIds')


def convert_coco_object(ann_dir, nproc: int = 1, from_raw: bool = False) -> ConversionResult:
    """Write ``<id>_instanceTrainIds.png`` (COCO-Object labels 0..80) next to the COCO-Stuff masks.

    Args:
        ann_dir: Folder with the COCO-Stuff masks.
        nproc: Worker processes.
        from_raw: Read raw stuffthingmaps ``<id>.png`` instead of ``<id>_labelTrainIds.png``.

    Returns:
        The conversion counts.
    """
    ann_dir = Path(ann_dir)
    if from_raw:
        srcs = [p for p in _visible_files(ann_dir, '.png') if not p.name.endswith(_DERIVED_SUFFIXES)]
        tasks = [('coco_object_raw', str(p), str(p.with_name(p.stem + '_instanceTrainIds.png')))
                 for p in srcs]
        what = 'raw COCO-Stuff maps (<id>.png)'
    else:
        srcs = _visible_files(ann_dir, '_labelTrainIds.png')
        tasks = [('coco_object', str(p),
                  str(p.with_name(p.name[:-len('_labelTrainIds.png')] + '_instanceTrainIds.png')))
                 for p in srcs]
        what = '*_labelTrainIds.png (run `prepare_data.py coco_stuff164k` first, or use --from-raw)'
    if not tasks:
        raise PrepareError(f'{ann_dir}: no {what}')
    return run_conversions(tasks, nproc, desc='coco_object instanceTrainIds')


def _cityscapes_scripts_available() -> bool:
    try:
        from cityscapesscripts.preparation.json2labelImg import json2labelImg  # noqa: F401
        return True
    except Exception:
        return False


def convert_cityscapes(gt_dir, nproc: int = 1, method: str = 'auto') -> ConversionResult:
    """Write ``*_gtFine_labelTrainIds.png`` for every Cityscapes annotation under ``gt_dir``.

    Args:
        gt_dir: A gtFine folder (e.g. gtFine/val with one sub-folder per city).
        nproc: Worker processes.
        method: ``scripts`` (cityscapesscripts' json2labelImg on ``*_gtFine_polygons.json``),
            ``table`` (the labelId->trainId table in ``labels.py`` on ``*_gtFine_labelIds.png``) or
            ``auto`` (scripts when importable and the polygons are there, else table).

    Returns:
        The conversion counts.
    """
    gt_dir = Path(gt_dir)
    jsons = _visible_files(gt_dir, '_gtFine_polygons.json', recursive=True)
    if method == 'auto':
        method = 'scripts' if jsons and _cityscapes_scripts_available() else 'table'
    if method == 'scripts':
        if not _cityscapes_scripts_available():
            raise PrepareError('cityscapesscripts is not importable: pip install cityscapesscripts, '
                               'or use --cityscapes-method table')
        tasks = [('cityscapes_json', str(p),
                  str(p.with_name(p.name[:-len('_polygons.json')] + '_labelTrainIds.png'))) for p in jsons]
    elif method == 'table':
        ids = _visible_files(gt_dir, '_gtFine_labelIds.png', recursive=True)
        tasks = [('cityscapes_table', str(p),
                  str(p.with_name(p.name[:-len('_labelIds.png')] + '_labelTrainIds.png'))) for p in ids]
    else:
        raise ValueError(f"method must be 'auto', 'scripts' or 'table', got {method!r}")
    if not tasks:
        raise PrepareError(f'{gt_dir}: no Cityscapes annotations (*_gtFine_polygons.json / '
                           '*_gtFine_labelIds.png) found')
    return run_conversions(tasks, nproc, desc=f'cityscapes labelTrainIds ({method})')

