"""Finding run records and parsing them into the rows the tables need.

The schema, its version check and its upgrades live in ``clearclip_seg.records``;
this module finds record files, validates the fields the tables read and turns
them into ``Record`` objects.
"""
import glob
import json
import math
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..protocol.benchmarks import BACKBONES
from ..protocol.presets import PRESETS
from ..records import RecordVersionError, upgrade_record


class RecordError(Exception):
    """Bad input: the message is one line and names the file."""


def warn_stderr(msg: str) -> None:
    """Print a one-line warning to stderr (the default ``warn`` callback)."""
    print(f'warning: {msg}', file=sys.stderr)


@dataclass
class Record:
    """One complete run record and the values the tables need.

    Attributes:
        path: File the record was read from.
        data: The record as loaded from JSON.
        benchmark: Benchmark key (e.g. ``'voc21'``).
        arch: open_clip architecture name.
        pretrained: open_clip pretrained tag.
        last_block: ``(attn, residual, ffn)``; None for a method other than ``LastBlock``.
        backbone: Backbone slug from ``BACKBONES``, or None when unknown.
        preset: Preset name from ``PRESETS`` whose last block matches, or None.
        miou: mIoU in percent.
    """
    path: str
    data: dict
    benchmark: str
    arch: str
    pretrained: str
    last_block: Optional[Tuple[str, bool, bool]]
    backbone: Optional[str]
    preset: Optional[str]
    miou: float
    method: Tuple = ()

    @property
    def protocol(self) -> dict:
        """The record's ``protocol`` object (empty dict when absent)."""
        return self.data.get('protocol') or {}

    @property
    def created(self) -> str:
        """Creation time as written in the record ('' when absent)."""
        return str(self.data.get('created') or '')

    @property
    def iou(self) -> Dict[str, Optional[float]]:
        """Per-class IoU in percent (None where undefined)."""
        return dict((self.data.get('metrics') or {}).get('IoU') or {})

    @property
    def classes(self) -> List[str]:
        """Class names in label order (from ``dataset.classes``, else the IoU keys)."""
        ds = self.data.get('dataset') or {}
        return list(ds.get('classes') or self.iou.keys())

    @property
    def model_key(self) -> tuple:
        """Row identity: arch, pretrained, method (type and options), preset."""
        return (self.arch, self.pretrained) + self.method + (self.preset,)

    @property
    def method_type(self) -> str:
        """The registered method's name (LastBlock for ClearCLIP and its baselines)."""
        return self.method[0] if self.method else "LastBlock"


def _as_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ('1', 'true', 'yes', 'on')
    return bool(v)


def _backbone_slug(arch: str, pretrained: str, hint: Optional[str]) -> Optional[str]:
    if hint in BACKBONES and BACKBONES[hint][:2] == (arch, pretrained):
        return hint
    for slug, (a, p, _) in BACKBONES.items():
        if (a, p) == (arch, pretrained):
            return slug
    return None


def _preset_for(last_block: Tuple[str, bool, bool], hints: Sequence[Optional[str]]) -> Optional[str]:
    """The named preset (run.preset, then method) if its last block matches, else any match."""
    def matches(name):
        lb = PRESETS[name].last_block
        return (lb['attn'], lb['residual'], lb['ffn']) == last_block
    for name in hints:
        if name in PRESETS and matches(name):
            return name
    for name in PRESETS:
        if matches(name):
            return name
    return None


def record_benchmark(data: dict) -> Optional[str]:
    """The benchmark column of a record: its ``benchmark`` key, else its dataset's name.

    A config of your own dataset (docs/examples/own_dataset.py) names its column with
    ``benchmark = 'name'``; one without that key is named after the last folder of its
    data root (``data/my_flowers`` -> ``my_flowers``).
    """
    if data.get('benchmark') is not None:
        return str(data['benchmark'])
    root = (data.get('dataset') or {}).get('data_root') if isinstance(data.get('dataset'), dict) else None
    name = os.path.basename(os.path.normpath(str(root))) if root else ''
    return name or None


def parse_record(data: dict, path: str) -> Record:
    """Turn a loaded, complete record into a ``Record``.

    Args:
        data: The JSON object of a record.
        path: Where it came from (for error messages).

    Returns:
        The parsed record.

    Raises:
        RecordError: A field the tables need is missing or has the wrong type.
    """
    def need(obj, key, where):
        if not isinstance(obj, dict) or obj.get(key) is None:
            raise RecordError(f"{path}: record has no '{where}'")
        return obj[key]

    bench = record_benchmark(data)
    if bench is None:
        raise RecordError(f"{path}: record has no 'benchmark' and no 'dataset.data_root' to name its dataset")
    model = need(data, 'model', 'model')
    arch = str(need(model, 'arch', 'model.arch'))
    pretrained = str(model.get('pretrained'))
    method = model.get('method') if isinstance(model.get('method'), dict) else None
    if method is not None and method.get('type') != 'LastBlock':
        last_block = None
        method_key = (str(method['type']),) + tuple(sorted((k, str(v)) for k, v in method.items() if k != 'type'))
    else:
        lb = need(model, 'last_block', 'model.last_block')
        last_block = (str(need(lb, 'attn', 'model.last_block.attn')), _as_bool(lb.get('residual')),
                      _as_bool(lb.get('ffn')))
        method_key = ('LastBlock',) + last_block
    miou = need(need(data, 'metrics', 'metrics'), 'mIoU', 'metrics.mIoU')
    try:
        miou = float(miou)
    except (TypeError, ValueError):
        raise RecordError(f"{path}: metrics.mIoU is not a number ({miou!r})") from None
    if not math.isfinite(miou):  # a NaN would print as 'nan' in a cell: the run is broken, not a number
        raise RecordError(f'{path}: metrics.mIoU is {miou!r}, not a finite number: the run failed; rerun it')
    run = data.get('run') if isinstance(data.get('run'), dict) else {}
    backbone = _backbone_slug(arch, pretrained, run.get('backbone'))
    hints = (run.get('preset'), data.get('method'))
    preset = _preset_for(last_block, hints) if last_block is not None else next(
        (h for h in hints if h), None)
    return Record(path, data, str(bench), arch, pretrained, last_block, backbone, preset, miou, method_key)


def _expand(path: str) -> Tuple[List[str], bool]:
    """Files named by one argument, and whether they came from a directory search."""
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, '**', 'record.json'), recursive=True))
        found += sorted(glob.glob(os.path.join(path, '*.json')))
        found = list(OrderedDict.fromkeys(os.path.normpath(f) for f in found))
        if not found:
            raise RecordError(f'{path}: directory holds no records (**/record.json or *.json)')
        return found, True
    if os.path.isfile(path):
        return [path], False
    raise RecordError(f'{path}: no such file or directory')


def load_records(paths: Iterable[str], warn: Callable[[str], None] = warn_stderr) -> List[Record]:
    """Read every complete record under the given files and directories.

    Args:
        paths: Record files and/or directories (searched for ``**/record.json``
            and ``*.json``).
        warn: Called with a one-line message for each skipped file.

    Returns:
        The complete records, in the order found (duplicates by path removed).

    Raises:
        RecordError: A path does not exist, a directory holds no JSON files, a
            file is not valid JSON, a record lacks a needed field, or no
            complete record was found at all.
    """
    records, seen, skipped = [], set(), 0
    for arg in paths:
        files, from_dir = _expand(arg)
        for f in files:
            key = os.path.realpath(f)
            if key in seen:
                continue
            seen.add(key)
            try:
                with open(f, encoding='utf-8') as fh:
                    data = json.load(fh)
            except json.JSONDecodeError as e:
                raise RecordError(f'{f}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})') from None
            except (OSError, UnicodeDecodeError) as e:
                raise RecordError(f'{f}: cannot read ({e})') from None
            if not isinstance(data, dict) or 'record_version' not in data:
                if from_dir:
                    warn(f'{f}: not a run record (no record_version), skipped')
                    skipped += 1
                    continue
                raise RecordError(f'{f}: not a run record (no record_version)')
            try:
                data = upgrade_record(data, f)
            except RecordVersionError as e:
                raise RecordError(str(e)) from None
            if data.get('upgraded_from') is not None:  # say so: the reader converted, not the file
                warn(f"{f}: record_version {data['upgraded_from']} converted to {data['record_version']} on read")
            if data.get('kind', 'evaluation') != 'evaluation':
                warn(f"{f}: {data.get('kind')} record, not an evaluation, skipped")
                skipped += 1
                continue
            if data.get('complete') is not True:
                warn(f'{f}: partial record (complete={data.get("complete")!r}), skipped')
                skipped += 1
                continue
            if record_benchmark(data) is None:
                warn(f'{f}: record names no benchmark and no data root (config without a benchmark key), skipped')
                skipped += 1
                continue
            records.append(parse_record(data, f))
    if not records:
        raise RecordError(f'no complete records in {", ".join(map(str, paths))}'
                          + (f' ({skipped} file(s) skipped)' if skipped else ''))
    return records

