"""Run records: the one schema, written and read here.

One JSON file per evaluation run (or per analysis run), written atomically and
readable by the group. A record holds everything needed to trust and rebuild
a number: the config (path, overrides and resolved text), model and protocol
settings, dataset and image count, every metric with per-class IoU and the
raw areas, timing, library versions and the git commit. Tables are built from
records only (``clearclip_seg.tables``, ``tools/collect_results.py``).

Schema (``RECORD_VERSION`` 2)::

    record_version, kind ('evaluation' | 'analysis'), complete, created,
    benchmark, method, config{path, cfg_options, resolved},
    model{arch, pretrained, precision, method{type, ...}, last_block{attn, residual, ffn} | null,
          vocabulary{name, digest, num_classes, num_queries}, templates{name, count},
          logit_scale, prob_thd, test_cfg, area_thd, postprocess, scoring, logit_bias,
          tower, params{image, text, method}, [text_head, label_postprocess: only when set]},
    protocol{resize, mode, crop, stride, prob_thd, logit_scale, templates, vocab_digest, precision},
    dataset{type, data_root, num_images, classes},
    metrics{mIoU, aAcc, mAcc, mmseg, IoU, Acc, area_intersect, area_union, area_pred, area_label},
    timing{wall_s, images_per_s, world_size, device, torch_threads},
    versions{...}, git_commit, run{...} (runner matrix entry, optional),
    predictions (tools/score.py: the folder of saved predictions it scored, optional)

An analysis record (``kind='analysis'``, ``tools/analyze_decomposition.py``)
has the same ``config``, ``model``, ``versions`` and ``git_commit``;
``dataset`` adds ``ignore_index``; instead of ``protocol`` and ``metrics`` it
has ``analysis{modes, sources, notes, num_images, images, norms, entropy,
miou, iou_per_class}`` (``miou`` and ``iou_per_class`` unless skipped) and
``timing{wall_s, device, torch_threads}``.

Version 1 records (before methods were registered components) have no ``kind``
and no ``model.method``; ``upgrade_record`` converts them on read.
"""
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from typing import Optional

from .atomic import atomic_write
from .options import ConfigError
from .repo_root import relative_to_root

RECORD_VERSION = 2
READABLE_VERSIONS = (1, 2)
RECORD_MODE = 0o644   # group- and world-readable, like any result file


class RecordVersionError(ConfigError):
    """A record of a schema this code cannot read (or must not overwrite)."""


def atomic_write_json(obj, path: str) -> None:
    """Write strict JSON atomically (``atomic.atomic_write``): never a half-written record.

    NaN and infinities are not JSON (``json.dump`` would write ``NaN``/``Infinity``,
    which other readers refuse): a value holding one is an error naming its key.
    """
    try:
        text = json.dumps(obj, indent=2, default=_jsonable, allow_nan=False)
    except ValueError:
        key = nonfinite_key(obj)
        if key is None:
            raise
        raise ConfigError(f"refusing to write '{path}': {key} is not a finite number (NaN or inf is not "
                          'valid JSON; the run produced no valid value there)') from None
    atomic_write(path, text + '\n', mode=RECORD_MODE)

def _jsonable(o):
    if hasattr(o, 'tolist'):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def nonfinite_key(obj, key: str = '') -> Optional[str]:
    """The dotted key of the first NaN/inf float in ``obj`` (``metrics.IoU.3``), or None."""
    if hasattr(obj, 'tolist') and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return None if math.isfinite(obj) else f'{key or "<value>"}={obj!r}'
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple, set)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = nonfinite_key(v, f'{key}.{k}' if key else str(k))
        if found:
            return found
    return None


def check_overwrite(path: str) -> None:
    """Refuse to replace a record written by a newer clearclip_seg (its schema is unknown here).

    Raises:
        RecordVersionError: ``path`` holds a record whose ``record_version`` is
            newer than ``RECORD_VERSION``, naming the file and both versions.
    """
    try:
        with open(path, encoding='utf-8') as f:
            old = json.load(f)
    except (OSError, ValueError):
        return  # nothing there, or not readable JSON: nothing a newer version would miss
    version = old.get('record_version') if isinstance(old, dict) else None
    if isinstance(version, (int, float)) and not isinstance(version, bool) and version > RECORD_VERSION:
        raise RecordVersionError(f"'{path}' holds a record of record_version {version}, newer than this "
                                 f'clearclip_seg writes ({RECORD_VERSION}): refusing to overwrite it; update '
                                 'clearclip_seg or write the record elsewhere')


def write_record(record: dict, path: str) -> None:
    """Write a record atomically (temporary file + rename), never over a newer version's record."""
    check_overwrite(path)
    atomic_write_json({k: v for k, v in record.items() if not k.startswith('_')}, path)


def upgrade_record(rec: dict, path: str = '<record>') -> dict:
    """Bring a readable record to the current schema (in a copy); refuse unknown versions."""
    version = rec.get('record_version')
    if version not in READABLE_VERSIONS:
        raise RecordVersionError(f'{path}: record_version {version!r} is not readable by this version of '
                                 f'clearclip_seg (reads {list(READABLE_VERSIONS)})')
    if version == RECORD_VERSION:
        return rec
    rec = json.loads(json.dumps(rec))
    if version == 1:  # the last block was the only method
        model = rec.get('model') or {}
        lb = model.get('last_block')
        if isinstance(lb, dict):
            model['method'] = dict(type='LastBlock', **lb)
        rec.setdefault('kind', 'evaluation')
        rec['record_version'] = RECORD_VERSION
        rec['upgraded_from'] = 1
    return rec


def load_record(path: str) -> Optional[dict]:
    """A complete record in the current schema, or None when missing, partial, unreadable or of an unknown version."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(rec, dict) and rec.get('complete')):
        return None
    try:
        return upgrade_record(rec, path)
    except RecordVersionError:
        return None


def _resize_scale(cfg):
    for t in cfg.test_dataloader.dataset.get('pipeline', []):
        if t.get('type') == 'Resize':
            return None if t.get('scale') is None else list(t.get('scale'))  # None: a scale_factor (identity)
    return None


def _centre_crop(cfg) -> dict:
    """``{'centre_crop': n}`` when the pipeline scores only a central square (``ShortSideCentreCrop``), else {}."""
    for t in cfg.test_dataloader.dataset.get('pipeline', []):
        if t.get('type') == 'ShortSideCentreCrop' and t.get('size') is not None:
            return dict(centre_crop=t.get('size'))
    return {}


def _header(kind: str, cfg, config_path: str, cfg_options: dict) -> dict:
    """The fields every record starts with: schema, kind, creation time, benchmark and config."""
    return dict(record_version=RECORD_VERSION, kind=kind, complete=True, created=now_iso(),
                benchmark=cfg.get('benchmark'), method=cfg.get('method'),
                config=dict(path=relative_to_root(config_path), cfg_options=cfg_options,
                            resolved=cfg.pretty_text))


def build_record(cfg, config_path: str, cfg_options: dict, model, dataset, metrics: dict, details: dict,
                 wall_s: float, world_size: int, run_info: Optional[dict] = None) -> dict:
    """The record of one evaluation run (see the schema above)."""
    import torch
    voc = model.vocabulary
    tc = dict(model.test_cfg)
    n = len(dataset)
    model_info = describe_model(model)
    record = dict(
        **_header('evaluation', cfg, config_path, cfg_options),
        model=model_info,
        protocol=dict(resize=_resize_scale(cfg), mode=tc.get('mode'), crop=tc.get('crop_size'),
                      stride=tc.get('stride'), prob_thd=model.prob_thd, logit_scale=model.logit_scale,
                      templates=f'{model.template_spec} ({len(model.templates)})', vocab_digest=voc.digest(),
                      precision=model.precision, **_centre_crop(cfg)),
        dataset=dict(type=type(dataset).__name__, data_root=cfg.test_dataloader.dataset.get('data_root'),
                     num_images=n, classes=list(dataset.metainfo['classes'])),
        metrics=dict(mIoU=details['mIoU'], aAcc=details['aAcc'], mAcc=details['mAcc'],
                     mmseg=dict(metrics), IoU=details['IoU'], Acc=details['Acc'],
                     area_intersect=details['area_intersect'], area_union=details['area_union'],
                     area_pred=details['area_pred'], area_label=details['area_label']),
        timing=dict(wall_s=wall_s, images_per_s=n / wall_s if wall_s > 0 else None, world_size=world_size,
                    device=(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'),
                    torch_threads=torch.get_num_threads()),
        versions=library_versions(),
        git_commit=git_commit(),
    )
    if run_info:
        record['run'] = dict(run_info)
        record['method'] = record['method'] or record['run'].get('preset')
    return record


def describe_model(model) -> dict:
    """The record's ``model`` section: weights, precision, method, vocabulary, templates, scoring."""
    voc = model.vocabulary
    method = model.method.describe() if getattr(model, 'method', None) is not None else None
    last_block = None
    if method is not None and method.get('type') == 'LastBlock':
        last_block = dict(attn=method['attn'], residual=method['residual'], ffn=method['ffn'])
    model_info = dict(arch=model.arch, pretrained=model.pretrained, precision=model.precision,
                      method=method, last_block=last_block,
                      vocabulary=dict(name=voc.name, digest=voc.digest(), num_classes=voc.num_classes,
                                      num_queries=len(voc.queries)),
                      templates=dict(name=model.template_spec, count=len(model.templates)),
                      logit_scale=model.logit_scale, prob_thd=model.prob_thd, test_cfg=dict(model.test_cfg))
    for extra in ('area_thd', 'postprocess'):
        if hasattr(model, extra):
            value = getattr(model, extra)
            model_info[extra] = value.describe() if hasattr(value, 'describe') else value
    for extra in ('text_head', 'label_postprocess'):   # recorded only when set: other records stay as they were
        value = getattr(model, extra, None)
        if value is not None:
            model_info[extra] = value.describe()
    scorer = getattr(model, 'scorer', None)
    if scorer is not None:
        model_info.update(scoring=scorer.scoring, logit_bias=scorer.logit_bias)
    model_info.update(describe_tower(model))
    return model_info


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_tower(model) -> dict:
    """Tower kind and parameter counts (the backbone table prints them beside mIoU).

    ``params.image``: the image tower; ``params.text``: the rest of the CLIP (text
    tower, projections, logit scale); ``params.method``: a method's own model
    (ProxyCLIP's proxy ViT), 0 for the others.
    """
    import torch.nn as nn

    from .models.towers import tower_kind  # lazy: the models import torch; records are written without them
    out = {}
    clip = (getattr(model, '_text_model', None) or [None])[0]
    visual = getattr(clip, 'visual', None)
    if visual is not None:
        try:
            out['tower'] = tower_kind(visual)
        except TypeError:
            out['tower'] = type(visual).__name__
    encoder = getattr(model, 'encoder', None)
    image = _numel(visual) if visual is not None else (_numel(encoder) if encoder is not None else None)
    if image is not None:
        method = getattr(model, 'method', None)
        extra = sum(_numel(m) for m in vars(method).values() if isinstance(m, nn.Module)) if method else 0
        out['params'] = dict(image=image, text=_numel(clip) - image if clip is not None else None, method=extra)
    return out


def build_analysis_record(cfg, config_path: str, cfg_options: dict, model, dataset, analysis: dict,
                          ignore_index: int = 255, wall_s: Optional[float] = None) -> dict:
    """The record of one decomposition analysis (``kind='analysis'``; the tables skip it).

    Same ``config``, ``model``, ``versions`` and ``git_commit`` sections as an
    evaluation record; the figures go under ``analysis`` (modes, sources,
    images, norms, entropy and, unless skipped, per-component mIoU).
    """
    import torch
    return dict(
        **_header('analysis', cfg, config_path, cfg_options),
        model=describe_model(model),
        dataset=dict(type=type(dataset).__name__, data_root=cfg.test_dataloader.dataset.get('data_root'),
                     num_images=len(dataset), classes=list(dataset.metainfo['classes']),
                     ignore_index=ignore_index),
        analysis=analysis,
        timing=dict(wall_s=wall_s, device=str(model.query_to_class.device), torch_threads=torch.get_num_threads()),
        versions=library_versions(),
        git_commit=git_commit(),
    )


def git_commit(root: Optional[str] = None) -> Optional[str]:
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ('-dirty' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict:
    versions = {'python': platform.python_version()}
    for name in ('torch', 'torchvision', 'open_clip', 'mmseg', 'mmengine', 'mmcv', 'clearclip_seg', 'numpy'):
        mod = sys.modules.get(name)
        if mod is None:
            try:
                mod = __import__(name)
            except Exception:
                continue
        versions[name] = getattr(mod, '__version__', None)
    return versions


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
