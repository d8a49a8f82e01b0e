"""Long-format results for analysis: one row per run x benchmark x class, the run's settings as columns.

The wide CSV (``formats.to_csv``) keeps the paper's layout; this one loads
straight into pandas (``pd.read_csv('results_long.csv')`` or
``pd.read_json('results_long.jsonl', lines=True)``) for grouping and plotting:
every row repeats its run's identity and settings, so no join is needed.
Numbers are written unrounded (the record's values); an undefined IoU (a
class absent from labels and predictions) is an empty cell / ``null``.
"""
import csv
import hashlib
import io
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from .build import MainTable, Row
from .methods import record_setting
from .protocol import protocol_deviations, record_protocol, show_value
from .records import Record

# column order of the long table (the JSONL rows have the same keys)
LONG_COLUMNS = (
    'suite', 'run', 'method', 'backbone', 'arch', 'pretrained', 'method_type', 'card', 'protocol', 'preset',
    'attn', 'residual', 'ffn', 'pamr', 'benchmark', 'class_index', 'class', 'iou', 'acc', 'miou',
    'published_miou', 'diff_miou', 'aacc', 'macc', 'resize', 'windows', 'patch_fit', 'logit_scale', 'prob_thd',
    'area_thd', 'templates', 'vocabulary', 'vocab_digest', 'precision', 'num_images', 'images_per_s', 'device',
    'off_protocol', 'record', 'config', 'config_hash', 'git_commit')


def _finite(v) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def config_hash(rec: Record) -> str:
    """sha256 (first 12 hex digits) of what the run ran: its run identity, else its resolved config text.

    The identity (``config.identity``: model, dataset, evaluator, precision, file contents) leaves out
    the work dir and ``--show-dir``: equal hashes ran the same settings. '' when the record has neither.
    """
    cfg = rec.data.get('config') or {}
    what = cfg.get('identity') if cfg.get('identity') is not None else cfg.get('resolved')
    if what is None:
        return ''
    text = what if isinstance(what, str) else json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]


def record_path(rec: Record, base: Optional[str] = None) -> str:
    """The record's path relative to ``base`` (default: the current directory), '/'-separated."""
    return os.path.relpath(os.path.abspath(rec.path), os.path.abspath(base or os.curdir)).replace(os.sep, '/')


def _run_columns(row: Row, rec: Record, base: Optional[str]) -> Dict[str, object]:
    run = rec.data.get('run') if isinstance(rec.data.get('run'), dict) else {}
    metrics = rec.data.get('metrics') or {}
    setting, proto = record_setting(rec), record_protocol(rec)
    timing = rec.data.get('timing') or {}
    attn, res, ffn = row.last_block or (None, None, None)
    pub = row.published.get(rec.benchmark)
    return dict(
        suite=run.get('suite'), run=run.get('name') or os.path.basename(os.path.dirname(rec.path)),
        method=row.method, backbone=row.backbone_title, arch=row.arch, pretrained=row.pretrained,
        method_type=row.method_type, card=row.card, protocol=row.protocol, preset=row.preset, attn=attn,
        residual=res, ffn=ffn, pamr=row.pamr, benchmark=rec.benchmark, miou=rec.miou, published_miou=pub,
        diff_miou=None if pub is None else rec.miou - pub, aacc=_finite(metrics.get('aAcc')),
        macc=_finite(metrics.get('mAcc')), resize=setting['resize'], windows=setting['windows'],
        patch_fit=setting['patch_fit'], logit_scale=proto['logit_scale'], prob_thd=proto['prob_thd'],
        area_thd=setting['area_thd'], templates=proto['templates'], vocabulary=setting['vocabulary'],
        vocab_digest=proto['vocab_digest'], precision=proto['precision'], num_images=proto['num_images'],
        images_per_s=_finite(timing.get('images_per_s')), device=timing.get('device'),
        off_protocol='; '.join(protocol_deviations(rec)), record=record_path(rec, base),
        config=(rec.data.get('config') or {}).get('path'), config_hash=config_hash(rec),
        git_commit=rec.data.get('git_commit'))


def long_rows(table: MainTable, base: Optional[str] = None) -> List[Dict[str, object]]:
    """One dict per run x benchmark x class of the table (the records its rows use).

    Args:
        table: The main table (duplicates already resolved into one record per cell).
        base: Record paths are written relative to this folder (default: the current one).

    Returns:
        Rows with the keys of ``LONG_COLUMNS``, in table order (rows, benchmarks, class order).
    """
    out = []
    for row in table.rows:
        for b in table.benchmarks:
            rec = row.records.get(b)
            if rec is None:
                continue
            run = _run_columns(row, rec, base)
            iou = rec.iou
            acc = (rec.data.get('metrics') or {}).get('Acc') or {}
            for i, cls in enumerate(rec.classes):
                line = dict(run, class_index=i, **{'class': cls}, iou=_finite(iou.get(cls)),
                            acc=_finite(acc.get(cls)))
                out.append({k: line.get(k) for k in LONG_COLUMNS})
    return out


def _cell(v) -> str:
    if v is None:
        return ''
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (list, tuple)):
        return show_value(tuple(v))
    return repr(v) if isinstance(v, float) else str(v)


def to_long_csv(rows: Sequence[Dict[str, object]]) -> str:
    """The long rows as CSV (header ``LONG_COLUMNS``; empty cell = None; floats unrounded)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(LONG_COLUMNS)
    for r in rows:
        w.writerow([_cell(r[c]) for c in LONG_COLUMNS])
    return buf.getvalue()


def to_long_jsonl(rows: Sequence[Dict[str, object]]) -> str:
    """The long rows as JSON Lines (one object per line, ``null`` = None)."""
    return ''.join(json.dumps(r, allow_nan=False) + '\n' for r in rows)
