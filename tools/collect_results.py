#!/usr/bin/env python
"""Build result tables from run records (the JSON files ``tools/test.py`` writes).

    python tools/collect_results.py RECORD_DIR_OR_FILES... [--out DIR]
        [--format md,csv,tex,png] [--per-class] [--group-by preset|backbone|arch]
        [--decimals 1|2]

A directory is searched for ``**/record.json`` and ``*.json``; files are read
as given. Partial records (``complete`` is not true) are skipped with a
warning naming the file; a malformed JSON file or a directory without records
is an error (one line, naming the file, exit status 2).

Tables follow the paper's layout: the eight benchmarks in ``PAPER_ORDER``
(those present in the records), then the average over the benchmarks present.
One row per model (arch + pretrained + last block + preset). Each of our
numbers sits beside the published one, where one exists, with the difference.
Every table carries a protocol card built from the records' ``protocol``
fields (resize, crop/stride, prob_thd per benchmark, logit scale, templates,
vocabulary digest, precision), which says so when records disagree, and lists
where a run left the published protocol.

Without ``--out`` the Markdown is printed to stdout. With ``--out DIR`` the
requested formats are written there: ``results.md``, ``results.csv``,
``results.tex``, ``results.png`` and, with ``--per-class``,
``per_class_<benchmark>.csv`` (the Markdown and LaTeX files then hold the
per-class tables too).

The table building is importable (``load_records``, ``build_main_table``,
``build_per_class_tables``, ``to_markdown``, ``to_csv``, ``to_latex``,
``plot_main_table``); nothing here needs mmseg or torch.
"""
import argparse
import csv
import glob
import importlib
import io
import json
import math
import os
import sys
import textwrap
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIGHT_PKG = '_clearclip_seg_light'


def _light(name: str) -> types.ModuleType:
    """Load ``clearclip_seg/<name>.py`` without running the package ``__init__``.

    ``import clearclip_seg`` imports mmseg (module registration); the modules
    used here only need the standard library. They are loaded into a stand-in
    package whose path is ``clearclip_seg/``, so their relative imports work.

    Args:
        name: Module name inside ``clearclip_seg`` (e.g. ``'benchmarks'``).

    Returns:
        The loaded module.
    """
    pkg = sys.modules.get(_LIGHT_PKG)
    if pkg is None:
        pkg = types.ModuleType(_LIGHT_PKG)
        pkg.__path__ = [os.path.join(ROOT, 'clearclip_seg')]
        pkg.__package__ = _LIGHT_PKG
        sys.modules[_LIGHT_PKG] = pkg
    return importlib.import_module(f'{_LIGHT_PKG}.{name}')


_benchmarks = _light('benchmarks')
_presets = _light('presets')
_published = _light('published')
BENCHMARKS = _benchmarks.BENCHMARKS
PAPER_ORDER = _benchmarks.PAPER_ORDER
BACKBONES = _benchmarks.BACKBONES
PRESETS = _presets.PRESETS

FORMATS = ('md', 'csv', 'tex', 'png')
GROUP_BY = ('preset', 'backbone', 'arch')

# The published protocol (PROTOCOL.md) beyond what BENCHMARKS / PRESETS hold.
EXPECTED_RESIZE = [2048, 448]
EXPECTED_MODE = 'slide'
EXPECTED_LOGIT_SCALE = 50.0
EXPECTED_TEMPLATES = 'openai_imagenet (80)'
EXPECTED_PRECISION = 'fp16'

QUOTED_MARK = '\u2020'      # dagger: published number as quoted by later papers
OFF_PROTOCOL_MARK = '*'     # our run differs from the published protocol
PARTIAL_AVG_MARK = '\u00a7'  # section sign: average over a subset of the columns

# Row-level protocol fields (one value expected per model) and per-benchmark ones.
ROW_FIELDS = (('resize', 'resize'), ('mode', 'mode'), ('logit_scale', 'logit scale'),
              ('templates', 'templates'), ('precision', 'precision'))
BENCH_FIELDS = (('crop_stride', 'crop/stride'), ('prob_thd', 'prob_thd'),
                ('vocab_digest', 'vocabulary digest'), ('num_images', 'images'))


class RecordError(Exception):
    """Bad input: the message is one line and names the file."""


def _warn_stderr(msg: str) -> None:
    print(f'warning: {msg}', file=sys.stderr)


# --------------------------------------------------------------------------- records

@dataclass
class Record:
    """One complete run record and the values the tables need.

    Attributes:
        path: File the record was read from.
        data: The record as loaded from JSON.
        benchmark: Benchmark key (e.g. ``'voc21'``).
        arch: open_clip architecture name.
        pretrained: open_clip pretrained tag.
        last_block: ``(attn, residual, ffn)``.
        backbone: Backbone slug from ``BACKBONES``, or None when unknown.
        preset: Preset name from ``PRESETS`` whose last block matches, or None.
        miou: mIoU in percent.
    """
    path: str
    data: dict
    benchmark: str
    arch: str
    pretrained: str
    last_block: Tuple[str, bool, bool]
    backbone: Optional[str]
    preset: Optional[str]
    miou: float

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
        """Row identity: arch, pretrained, last block, preset."""
        return (self.arch, self.pretrained) + self.last_block + (self.preset,)


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

    bench = need(data, 'benchmark', 'benchmark')
    model = need(data, 'model', 'model')
    arch = str(need(model, 'arch', 'model.arch'))
    pretrained = str(model.get('pretrained'))
    lb = need(model, 'last_block', 'model.last_block')
    last_block = (str(need(lb, 'attn', 'model.last_block.attn')), _as_bool(lb.get('residual')),
                  _as_bool(lb.get('ffn')))
    miou = need(need(data, 'metrics', 'metrics'), 'mIoU', 'metrics.mIoU')
    try:
        miou = float(miou)
    except (TypeError, ValueError):
        raise RecordError(f"{path}: metrics.mIoU is not a number ({miou!r})") from None
    run = data.get('run') if isinstance(data.get('run'), dict) else {}
    backbone = _backbone_slug(arch, pretrained, run.get('backbone'))
    preset = _preset_for(last_block, (run.get('preset'), data.get('method')))
    return Record(path, data, str(bench), arch, pretrained, last_block, backbone, preset, miou)


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


def load_records(paths: Iterable[str], warn: Callable[[str], None] = _warn_stderr) -> List[Record]:
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
            if data.get('complete') is not True:
                warn(f'{f}: partial record (complete={data.get("complete")!r}), skipped')
                skipped += 1
                continue
            if data.get('benchmark') is None:
                warn(f'{f}: record names no benchmark (config without a benchmark key), skipped')
                skipped += 1
                continue
            records.append(parse_record(data, f))
    if not records:
        raise RecordError(f'no complete records in {", ".join(map(str, paths))}'
                          + (f' ({skipped} file(s) skipped)' if skipped else ''))
    return records


# --------------------------------------------------------------------------- labels

def _onoff(v: bool) -> str:
    return 'on' if v else 'off'


def method_label(preset: Optional[str], last_block: Tuple[str, bool, bool]) -> str:
    """Display name of a method: the preset title, or the last-block setting.

    Args:
        preset: Preset name or None.
        last_block: ``(attn, residual, ffn)``.

    Returns:
        E.g. ``'ClearCLIP'`` or ``'attn=vv, residual on, FFN off'``.
    """
    if preset in PRESETS:
        return PRESETS[preset].title
    attn, res, ffn = last_block
    return f'attn={attn}, residual {_onoff(res)}, FFN {_onoff(ffn)}'


def backbone_label(backbone: Optional[str], arch: str, pretrained: str) -> str:
    """Display name of a backbone: the ``BACKBONES`` title, or ``arch (pretrained)``."""
    if backbone in BACKBONES:
        return BACKBONES[backbone][2]
    return f'{arch} ({pretrained})'


def bench_title(key: str) -> str:
    """Display name of a benchmark (its ``BENCHMARKS`` title, else the key)."""
    return BENCHMARKS[key].title if key in BENCHMARKS else key


def _order_benchmarks(keys: Iterable[str]) -> List[str]:
    keys = set(keys)
    return [k for k in PAPER_ORDER if k in keys] + sorted(keys - set(PAPER_ORDER))


# --------------------------------------------------------------------------- protocol

def _norm(v):
    """A hashable, printable form of a protocol value."""
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _square(v):
    """A crop or stride: ``[448, 448]`` -> 448 (kept as a pair when the sides differ)."""
    v = _norm(v)
    if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1]:
        return v[0]
    return v


def _show(v) -> str:
    if v is None:
        return 'n/a'
    if isinstance(v, tuple):
        return 'x'.join(_show(x) for x in v)
    return str(v)


def record_protocol(rec: Record) -> Dict[str, object]:
    """The protocol values of one record, under the card's field names.

    Args:
        rec: A record.

    Returns:
        ``{field: value}`` for the fields of ``ROW_FIELDS`` and ``BENCH_FIELDS``.
    """
    p = rec.protocol
    crop, stride = _square(p.get('crop')), _square(p.get('stride'))
    return dict(
        resize=_norm(p.get('resize')), mode=p.get('mode'), logit_scale=_norm(p.get('logit_scale')),
        templates=p.get('templates'), precision=p.get('precision'),
        crop_stride=None if crop is None and stride is None else f'{_show(crop)}/{_show(stride)}',
        prob_thd=_norm(p.get('prob_thd')), vocab_digest=p.get('vocab_digest'),
        num_images=(rec.data.get('dataset') or {}).get('num_images'))


def protocol_deviations(rec: Record) -> List[str]:
    """Where a record's run differs from the published protocol (PROTOCOL.md).

    The expected ``prob_thd`` is the preset's for the benchmark (vanilla CLIP:
    0.2 on the sets with background), else the benchmark's own.

    Args:
        rec: A record.

    Returns:
        Short descriptions, e.g. ``'prob_thd 0.3 (published: 0.5)'``; empty
        when the run follows the protocol.
    """
    b = BENCHMARKS.get(rec.benchmark)
    p = record_protocol(rec)
    out = []

    def check(name, got, want):
        if got is not None and _norm(got) != _norm(want):
            out.append(f'{name} {_show(got)} (published: {_show(_norm(want))})')

    check('resize', p['resize'], EXPECTED_RESIZE)
    check('mode', p['mode'], EXPECTED_MODE)
    check('logit scale', p['logit_scale'], EXPECTED_LOGIT_SCALE)
    check('templates', p['templates'], EXPECTED_TEMPLATES)
    check('precision', p['precision'], EXPECTED_PRECISION)
    if b is not None:
        check('crop/stride', p['crop_stride'], f'{b.crop}/{b.stride}')
        want_thd = PRESETS[rec.preset].prob_thd(b) if rec.preset in PRESETS else b.prob_thd
        if p['prob_thd'] is not None and not math.isclose(float(p['prob_thd']), want_thd, abs_tol=1e-9):
            out.append(f"prob_thd {_show(p['prob_thd'])} (published: {_show(_norm(want_thd))})")
        check('images', p['num_images'], b.num_images)
    return out


@dataclass
class ProtocolCard:
    """What a table's numbers were run under, from the records' ``protocol`` fields.

    Attributes:
        common: Row-level fields: field -> one line (the value, or who used what).
        per_benchmark: benchmark -> field -> value text (exceptions named).
        disagreements: Lines naming rows whose own records disagree on a field.
        deviations: Lines naming runs that left the published protocol.
    """
    common: Dict[str, str]
    per_benchmark: Dict[str, Dict[str, str]]
    disagreements: List[str]
    deviations: List[str]

    def lines(self) -> List[str]:
        """The card as plain text lines (row-level fields, per-benchmark fields, issues)."""
        out = [f'{label}: {self.common[f]}' for f, label in ROW_FIELDS if f in self.common]
        for f, label in BENCH_FIELDS:
            vals = [f'{bench_title(b)} {d[f]}' for b, d in self.per_benchmark.items() if f in d]
            if vals:
                out.append(f'{label}: ' + ', '.join(vals))
        out += [f'records disagree: {d}' for d in self.disagreements]
        out += [f'off the published protocol: {d}' for d in self.deviations]
        return out


def _summarise(values: Dict[object, List[str]]) -> str:
    """One value, or 'most common (who: other; ...)'."""
    if len(values) == 1:
        return _show(next(iter(values)))
    ordered = sorted(values.items(), key=lambda kv: -len(kv[1]))
    main = _show(ordered[0][0])
    rest = '; '.join(f'{", ".join(who)}: {_show(v)}' for v, who in ordered[1:])
    return f'{main} ({rest})'


def build_protocol_card(entries: Sequence[Tuple[str, Record]]) -> ProtocolCard:
    """Summarise the protocol of a set of (row label, record) pairs.

    Args:
        entries: Each record with the label of the table row it belongs to.

    Returns:
        The card: row-level fields (noting rows whose records disagree and
        rows that differ from the others), per-benchmark fields, and the runs
        that left the published protocol.
    """
    by_row: Dict[str, List[Record]] = OrderedDict()
    for label, rec in entries:
        by_row.setdefault(label, []).append(rec)
    common, disagreements, deviations = {}, [], []
    for f, name in ROW_FIELDS:
        row_values: Dict[object, List[str]] = OrderedDict()
        for label, recs in by_row.items():
            vals: Dict[object, List[str]] = OrderedDict()
            for r in recs:
                vals.setdefault(record_protocol(r)[f], []).append(r.benchmark)
            if len(vals) > 1:
                disagreements.append(f'{label}, {name}: ' + '; '.join(
                    f'{_show(v)} ({", ".join(bs)})' for v, bs in vals.items()))
                v = 'mixed'
            else:
                v = next(iter(vals))
            row_values.setdefault(v, []).append(label)
        common[f] = _summarise(row_values)
    per_bench: Dict[str, Dict[str, str]] = OrderedDict()
    benches = _order_benchmarks(r.benchmark for _, r in entries)
    for b in benches:
        per_bench[b] = {}
        for f, _ in BENCH_FIELDS:
            vals: Dict[object, List[str]] = OrderedDict()
            for label, rec in entries:
                if rec.benchmark == b:
                    vals.setdefault(record_protocol(rec)[f], []).append(label)
            per_bench[b][f] = _summarise(vals)
    devs: Dict[Tuple[str, str], List[str]] = OrderedDict()
    for label, rec in entries:
        for dev in protocol_deviations(rec):
            devs.setdefault((label, dev), []).append(rec.benchmark)
    for (label, dev), benches_off in devs.items():
        mine = [r.benchmark for r in by_row[label]]
        where = ('all its benchmarks' if len(mine) > 1 and set(benches_off) == set(mine) else
                 ', '.join(bench_title(b) for b in _order_benchmarks(benches_off)))
        deviations.append(f'{label}: {dev} on {where}')
    return ProtocolCard(common, per_bench, disagreements, deviations)


# --------------------------------------------------------------------------- main table

@dataclass
class Row:
    """One model of the main table.

    Attributes:
        key: ``(arch, pretrained, attn, residual, ffn, preset)``.
        method: Display name of the method.
        backbone_title: Display name of the backbone.
        backbone: Backbone slug or None.
        preset: Preset name or None.
        records: benchmark -> the record used.
        published: benchmark -> published mIoU (where one exists).
        quoted: Benchmarks whose published number is "as quoted by later papers".
        off_protocol: Benchmarks whose run left the published protocol.
    """
    key: tuple
    method: str
    backbone_title: str
    backbone: Optional[str]
    preset: Optional[str]
    records: Dict[str, Record] = field(default_factory=dict)
    published: Dict[str, float] = field(default_factory=dict)
    quoted: set = field(default_factory=set)
    off_protocol: set = field(default_factory=set)

    @property
    def label(self) -> str:
        """``method · backbone``, for notes and legends."""
        return f'{self.method} \u00b7 {self.backbone_title}'

    @property
    def arch(self) -> str:
        """open_clip architecture name."""
        return self.key[0]

    @property
    def pretrained(self) -> str:
        """open_clip pretrained tag."""
        return self.key[1]

    @property
    def last_block(self) -> Tuple[str, bool, bool]:
        """``(attn, residual, ffn)``."""
        return tuple(self.key[2:5])

    def ours(self, bench: str) -> Optional[float]:
        """Our mIoU on a benchmark, or None when not run."""
        rec = self.records.get(bench)
        return None if rec is None else rec.miou

    def diff(self, bench: str) -> Optional[float]:
        """Ours minus published, or None when either is missing."""
        ours, pub = self.ours(bench), self.published.get(bench)
        return None if ours is None or pub is None else ours - pub

    def group(self, group_by: Optional[str]) -> str:
        """The row's group under ``--group-by`` ('' when not grouping)."""
        if group_by == 'preset':
            return self.method
        if group_by == 'backbone':
            return self.backbone_title
        if group_by == 'arch':
            return self.arch
        return ''


@dataclass
class MainTable:
    """The paper-layout table: one row per model, one column per benchmark.

    Attributes:
        benchmarks: Columns, in ``PAPER_ORDER`` (then any others).
        rows: The models, sorted (and grouped when ``group_by`` is set).
        group_by: None, 'preset', 'backbone' or 'arch'.
        card: The protocol card.
        notes: Extra lines (duplicates dropped, etc.).
        decimals: Decimals for our numbers and differences.
    """
    benchmarks: List[str]
    rows: List[Row]
    group_by: Optional[str]
    card: ProtocolCard
    notes: List[str]
    decimals: int = 2

    @property
    def avg_over(self) -> List[str]:
        """The benchmarks the average column is taken over (all columns)."""
        return list(self.benchmarks)

    def avg(self, row: Row) -> Tuple[Optional[float], List[str]]:
        """A row's mean mIoU over the columns it has, and which those are."""
        have = [b for b in self.avg_over if row.ours(b) is not None]
        if not have:
            return None, []
        return sum(row.ours(b) for b in have) / len(have), have

    def avg_published(self, row: Row) -> Optional[float]:
        """The published mean over all columns, when the row ran all and all are published."""
        if any(row.ours(b) is None or b not in row.published for b in self.avg_over):
            return None
        return sum(row.published[b] for b in self.avg_over) / len(self.avg_over)

    def groups(self) -> List[Tuple[str, List[Row]]]:
        """Rows split by ``group_by`` (one unnamed group when not grouping)."""
        out: Dict[str, List[Row]] = OrderedDict()
        for r in self.rows:
            out.setdefault(r.group(self.group_by), []).append(r)
        return list(out.items())

    def avg_note(self) -> str:
        """The sentence saying what the average is over."""
        names = ', '.join(bench_title(b) for b in self.avg_over)
        n, total = len(self.avg_over), len(PAPER_ORDER)
        return f'Avg: mean mIoU over the {n} benchmark{"s" if n != 1 else ""} present ({names})' + (
            f'; the paper has {total}' if n < total and set(self.avg_over) <= set(PAPER_ORDER) else '') + '.'


def _row_sort_key(row: Row, group_by: Optional[str]):
    bb = list(BACKBONES)
    pr = list(PRESETS)
    backbone_i = bb.index(row.backbone) if row.backbone in bb else len(bb)
    preset_i = pr.index(row.preset) if row.preset in pr else len(pr)
    arch_order = list(OrderedDict.fromkeys(a for a, _, _ in BACKBONES.values()))
    arch_i = arch_order.index(row.arch) if row.arch in arch_order else len(arch_order)
    by_backbone = (backbone_i, row.arch, row.pretrained)
    by_preset = (preset_i, str(row.last_block))
    if group_by == 'preset':
        return by_preset + by_backbone
    if group_by == 'arch':
        return (arch_i, row.arch) + by_preset + by_backbone
    return by_backbone + by_preset


def build_main_table(records: Sequence[Record], group_by: Optional[str] = None, decimals: int = 2,
                     warn: Callable[[str], None] = _warn_stderr) -> MainTable:
    """Arrange records into the paper-layout table.

    When two records give the same model and benchmark, the newer one (by
    ``created``, then path) is used and a warning names both files.

    Args:
        records: Complete records (from ``load_records``).
        group_by: None, ``'preset'``, ``'backbone'`` or ``'arch'``: order rows
            by that key first and split the table into groups.
        decimals: Decimals for our numbers and the differences (1 or 2).
        warn: Called with a one-line message for each record dropped.

    Returns:
        The table.
    """
    if group_by not in (None,) + GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY} or None, not '{group_by}'")
    rows: Dict[tuple, Row] = OrderedDict()
    notes = []
    for rec in records:
        row = rows.get(rec.model_key)
        if row is None:
            row = rows[rec.model_key] = Row(rec.model_key, method_label(rec.preset, rec.last_block),
                                            backbone_label(rec.backbone, rec.arch, rec.pretrained),
                                            rec.backbone, rec.preset)
        old = row.records.get(rec.benchmark)
        if old is not None:
            keep, drop = sorted([old, rec], key=lambda r: (r.created, r.path), reverse=True)
            msg = f'{row.label}, {rec.benchmark}: two records, using {keep.path} (newer), ignoring {drop.path}'
            warn(msg)
            notes.append(msg)
            rec = keep
        row.records[rec.benchmark] = rec
    for row in rows.values():
        for b, rec in row.records.items():
            pub = _published.published_miou(row.backbone, row.preset, b)
            if pub is not None:
                row.published[b] = pub
                if _published.is_quoted(row.backbone, row.preset, b):
                    row.quoted.add(b)
            if protocol_deviations(rec):
                row.off_protocol.add(b)
    ordered = sorted(rows.values(), key=lambda r: _row_sort_key(r, group_by))
    benches = _order_benchmarks(b for r in ordered for b in r.records)
    card = build_protocol_card([(r.label, rec) for r in ordered for rec in
                                (r.records[b] for b in benches if b in r.records)])
    return MainTable(benches, ordered, group_by, card, notes, decimals)


# --------------------------------------------------------------------------- per-class

@dataclass
class PerClassTable:
    """Per-class IoU on one benchmark: rows are classes, columns are models.

    Attributes:
        benchmark: Benchmark key.
        classes: Class names in label order.
        columns: The models (main-table rows) that ran this benchmark.
        card: Protocol card for these records.
        notes: Extra lines (class lists that differ, etc.).
        decimals: Decimals for IoU.
    """
    benchmark: str
    classes: List[str]
    columns: List[Row]
    card: ProtocolCard
    notes: List[str]
    decimals: int = 2

    def iou(self, cls: str, col: Row) -> Optional[float]:
        """IoU (percent) of one class for one model; None when undefined (NaN)."""
        v = col.records[self.benchmark].iou.get(cls)
        if v is None:
            return None
        v = float(v)
        return None if math.isnan(v) else v


def build_per_class_tables(table: MainTable) -> List[PerClassTable]:
    """One per-class IoU table per benchmark of the main table.

    Args:
        table: The main table (its rows hold the records).

    Returns:
        Tables in the main table's benchmark order.
    """
    out = []
    for b in table.benchmarks:
        cols = [r for r in table.rows if b in r.records]
        classes, notes = [], []
        for r in cols:
            cls = r.records[b].classes
            if classes and cls != classes:
                notes.append(f'{r.label}: class list differs from {cols[0].label}')
            classes += [c for c in cls if c not in classes]
        card = build_protocol_card([(r.label, r.records[b]) for r in cols])
        out.append(PerClassTable(b, classes, cols, card, notes, table.decimals))
    return out


# --------------------------------------------------------------------------- formatting

def fmt(v: Optional[float], decimals: int) -> str:
    """A number with fixed decimals; '-' for None, 'nan' for NaN."""
    if v is None:
        return '-'
    if isinstance(v, float) and math.isnan(v):
        return 'nan'
    return f'{v:.{decimals}f}'


def fmt_diff(v: Optional[float], decimals: int) -> str:
    """A signed difference with fixed decimals ('+0.00', never '-0.00'); '' for None."""
    if v is None:
        return ''
    if round(v, decimals) == 0:
        v = 0.0
    return f'{v:+.{decimals}f}'


def fmt_published(v: Optional[float]) -> str:
    """A published number, as printed (one decimal); '' for None."""
    return '' if v is None else f'{v:.1f}'


def _cell_parts(table: MainTable, row: Row, bench: str) -> Tuple[str, str, str]:
    """(ours with markers, published with markers, difference) for one cell."""
    d = table.decimals
    ours = fmt(row.ours(bench), d)
    if bench in row.off_protocol:
        ours += OFF_PROTOCOL_MARK
    pub = fmt_published(row.published.get(bench))
    if pub and bench in row.quoted:
        pub += QUOTED_MARK
    return ours, pub, fmt_diff(row.diff(bench), d)


def _avg_parts(table: MainTable, row: Row) -> Tuple[str, str, str]:
    d = table.decimals
    avg, have = table.avg(row)
    ours = fmt(avg, d)
    if avg is not None and len(have) < len(table.avg_over):
        ours += PARTIAL_AVG_MARK
    pub = table.avg_published(row)
    diff = None if pub is None or avg is None else avg - pub
    return ours, fmt(pub, d) if pub is not None else '', fmt_diff(diff, d)


def _combined(parts: Tuple[str, str, str]) -> str:
    ours, pub, diff = parts
    return f'{ours} ({pub}, {diff})' if pub and diff else ours


def _legend(table: MainTable) -> List[str]:
    """Lines explaining cells, the average and the markers actually used."""
    lines = ['Cells: ours (published, ours \u2212 published) where a published number exists; '
             'mIoU in %.', table.avg_note()]
    if any(r.quoted for r in table.rows):
        lines.append(f'{QUOTED_MARK} published number as quoted by later papers (PROTOCOL.md).')
    partial = [r for r in table.rows if r.records and len(table.avg(r)[1]) < len(table.avg_over)]
    for r in partial:
        lines.append(f'{PARTIAL_AVG_MARK} {r.label}: average over its own benchmarks only '
                     f'({", ".join(bench_title(b) for b in table.avg(r)[1])}); not comparable.')
    if any(r.off_protocol for r in table.rows):
        lines.append(f'{OFF_PROTOCOL_MARK} run differs from the published protocol (see the protocol card).')
    if any(r.preset == 'clip' and r.published for r in table.rows):
        lines.append('Vanilla CLIP was published with prob_thd '
                     f'{_published.VANILLA_CLIP_BACKGROUND_PROB_THD} on the sets with background.')
    if any(r.preset in ('maskclip', 'maskclip-res', 'sclip', 'sclip-res') and r.published for r in table.rows):
        lines.append('MaskCLIP/SCLIP published numbers: the paper\'s "plain" column is taken as the '
                     'residual-kept preset and "+ no-residual" as the residual-free one (our reading).')
    lines.append(f'Published numbers: {_published.PAPER}.')
    return lines + table.notes


# ----- Markdown

def _md_escape(s: str) -> str:
    return str(s).replace('|', '\\|')


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> List[str]:
    out = ['| ' + ' | '.join(_md_escape(h) for h in header) + ' |',
           '|' + '|'.join(':---' if a == 'l' else '---:' for a in align) + '|']
    out += ['| ' + ' | '.join(_md_escape(c) for c in r) + ' |' for r in rows]
    return out


def card_markdown(card: ProtocolCard) -> List[str]:
    """The protocol card as Markdown lines (bullets and a per-benchmark table).

    Args:
        card: A protocol card.

    Returns:
        Markdown lines.
    """
    out = ['**Protocol** (from the records):', '']
    out += [f'- {label}: {card.common[f]}' for f, label in ROW_FIELDS if f in card.common]
    out.append('')
    benches = list(card.per_benchmark)
    header = [''] + [bench_title(b) for b in benches]
    rows = [[label] + [card.per_benchmark[b].get(f, '') for b in benches] for f, label in BENCH_FIELDS]
    out += _md_table(header, rows, ['l'] * len(header))
    if card.disagreements:
        out += ['', '**Records disagree within a row:**', '']
        out += [f'- {d}' for d in card.disagreements]
    if card.deviations:
        out += ['', '**Off the published protocol:**', '']
        out += [f'- {d}' for d in card.deviations]
    return out


def _main_markdown(table: MainTable) -> List[str]:
    header = ['Method', 'Backbone'] + [bench_title(b) for b in table.benchmarks] + ['Avg']
    align = ['l', 'l'] + ['r'] * (len(table.benchmarks) + 1)
    out = ['## Results (mIoU, %)', '']
    for name, rows in table.groups():
        if name:
            out += [f'### {table.group_by}: {name}', '']
        body = [[r.method, r.backbone_title] + [_combined(_cell_parts(table, r, b)) for b in table.benchmarks]
                + [_combined(_avg_parts(table, r))] for r in rows]
        out += _md_table(header, body, align) + ['']
    out += [f'{line}  ' for line in _legend(table)]
    out += [''] + card_markdown(table.card)
    return out


def _per_class_markdown(t: PerClassTable) -> List[str]:
    header = ['Class'] + [c.label for c in t.columns]
    body = [[cls] + [fmt(t.iou(cls, c), t.decimals) for c in t.columns] for cls in t.classes]
    body.append(['**mIoU**'] + [f'**{fmt(c.ours(t.benchmark), t.decimals)}**' for c in t.columns])
    out = [f'### Per-class IoU: {bench_title(t.benchmark)} (%)', '']
    out += _md_table(header, body, ['l'] + ['r'] * len(t.columns))
    out += ['', 'A dash (-) marks a class absent from both ground truth and predictions (IoU undefined).  ']
    out += [f'{n}  ' for n in t.notes]
    out += [''] + card_markdown(t.card)
    return out


def to_markdown(table, per_class: Sequence[PerClassTable] = ()) -> str:
    """Render a table (and optional per-class tables) as Markdown.

    Args:
        table: A ``MainTable`` or a ``PerClassTable``.
        per_class: Per-class tables to append after a main table.

    Returns:
        Markdown text ending in a newline.
    """
    if isinstance(table, PerClassTable):
        lines = _per_class_markdown(table)
    else:
        lines = _main_markdown(table)
        if per_class:
            lines += ['', '## Per-class IoU', '']
            for t in per_class:
                lines += _per_class_markdown(t) + ['']
    return '\n'.join(lines).rstrip('\n') + '\n'


# ----- CSV

def _row_protocol(row: Row, benchmarks: Sequence[str]) -> Dict[str, str]:
    """Row-level and per-benchmark protocol columns for one CSV row."""
    out = {}
    for f, _ in ROW_FIELDS:
        vals: Dict[object, List[str]] = OrderedDict()
        for b in benchmarks:
            if b in row.records:
                vals.setdefault(record_protocol(row.records[b])[f], []).append(b)
        out[f] = (_show(next(iter(vals))) if len(vals) == 1 else
                  '; '.join(f'{_show(v)} ({" ".join(bs)})' for v, bs in vals.items()))
    for b in benchmarks:
        p = record_protocol(row.records[b]) if b in row.records else {}
        for f, _ in BENCH_FIELDS:
            out[f'{b}_{f}'] = _show(p[f]) if f in p else ''
        out[f'{b}_off_protocol'] = ', '.join(protocol_deviations(row.records[b])) if b in row.records else ''
    return out


def to_csv(table) -> str:
    """Render a table as CSV.

    Main table: one line per model with identity columns, then per benchmark
    ``<b>``, ``<b>_published``, ``<b>_diff`` (and ``<b>_quoted``), the average
    columns, and the protocol columns (row-level fields, then per benchmark
    ``<b>_crop_stride``, ``<b>_prob_thd``, ``<b>_vocab_digest``,
    ``<b>_num_images``, ``<b>_off_protocol``).
    Per-class table: one line per class, one column per model, then an
    ``mIoU`` line and ``protocol.<field>`` lines.

    Args:
        table: A ``MainTable`` or a ``PerClassTable``.

    Returns:
        CSV text.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    if isinstance(table, PerClassTable):
        d = table.decimals
        w.writerow(['class'] + [c.label for c in table.columns])
        for cls in table.classes:
            w.writerow([cls] + [fmt(table.iou(cls, c), d) if table.iou(cls, c) is not None else 'nan'
                                for c in table.columns])
        w.writerow(['mIoU'] + [fmt(c.ours(table.benchmark), d) for c in table.columns])
        for f, _ in ROW_FIELDS + BENCH_FIELDS:
            w.writerow([f'protocol.{f}'] + [_show(record_protocol(c.records[table.benchmark])[f])
                                            for c in table.columns])
        w.writerow(['protocol.off_protocol'] + [', '.join(protocol_deviations(c.records[table.benchmark]))
                                                for c in table.columns])
        return buf.getvalue()
    d = table.decimals
    ident = ['group', 'method', 'backbone', 'arch', 'pretrained', 'attn', 'residual', 'ffn', 'preset']
    per_b = [f'{b}{s}' for b in table.benchmarks for s in ('', '_published', '_diff', '_quoted')]
    avg = ['avg', 'avg_published', 'avg_diff', 'avg_over']
    proto = [f for f, _ in ROW_FIELDS] + [f'{b}_{f}' for b in table.benchmarks
                                          for f in [f for f, _ in BENCH_FIELDS] + ['off_protocol']]
    w.writerow(ident + per_b + avg + proto)
    for r in table.rows:
        attn, res, ffn = r.last_block
        line = [r.group(table.group_by), r.method, r.backbone_title, r.arch, r.pretrained, attn,
                _onoff(res), _onoff(ffn), r.preset or '']
        for b in table.benchmarks:
            ours, pub = r.ours(b), r.published.get(b)
            line += [fmt(ours, d) if ours is not None else '', fmt_published(pub),
                     fmt_diff(r.diff(b), d), 'yes' if b in r.quoted else '']
        a, have = table.avg(r)
        ap = table.avg_published(r)
        line += [fmt(a, d) if a is not None else '', fmt(ap, d) if ap is not None else '',
                 fmt_diff(None if a is None or ap is None else a - ap, d), ' '.join(have)]
        p = _row_protocol(r, table.benchmarks)
        line += [p[c] for c in proto]
        w.writerow(line)
    return buf.getvalue()


# ----- LaTeX

_TEX_ESC = {'\\': r'\textbackslash{}', '&': r'\&', '%': r'\%', '$': r'\$', '#': r'\#', '_': r'\_',
            '{': r'\{', '}': r'\}', '~': r'\textasciitilde{}', '^': r'\textasciicircum{}',
            '\u2020': r'$^\dagger$', '\u00a7': r'\S{}', '\u00b7': r'$\cdot$', '\u2212': '$-$'}


def tex_escape(s: str) -> str:
    """Escape LaTeX special characters (and the markers used here)."""
    return ''.join(_TEX_ESC.get(ch, ch) for ch in str(s))


def _tex_cell(parts: Tuple[str, str, str]) -> str:
    ours, pub, diff = parts
    if pub and diff:
        return f'{tex_escape(ours)}\\,{{\\scriptsize({tex_escape(pub)}, {tex_escape(diff)})}}'
    return tex_escape(ours)


def _tex_card(card: ProtocolCard) -> List[str]:
    text = '; '.join(tex_escape(line) for line in card.lines())
    return [f'\\par\\smallskip\\footnotesize\\raggedright Protocol (from the records): {text}.']


def _tex_env(caption: str, label: str, colspec: str, header: Sequence[str], blocks, card: ProtocolCard,
             notes: Sequence[str]) -> List[str]:
    out = ['% Generated by tools/collect_results.py from run records; needs \\usepackage{booktabs,graphicx}.',
           '\\begin{table*}[t]', '\\centering', f'\\caption{{{caption}}}', f'\\label{{{label}}}',
           '\\resizebox{\\textwidth}{!}{%', f'\\begin{{tabular}}{{{colspec}}}', '\\toprule',
           ' & '.join(header) + ' \\\\', '\\midrule']
    ncol = len(header)
    for i, (name, lines) in enumerate(blocks):
        if i:
            out.append('\\midrule')
        if name:
            out.append(f'\\multicolumn{{{ncol}}}{{l}}{{\\textit{{{tex_escape(name)}}}}} \\\\')
        out += [' & '.join(cells) + ' \\\\' for cells in lines]
    out += ['\\bottomrule', '\\end{tabular}}']
    if notes:
        out.append('\\par\\smallskip\\footnotesize\\raggedright ' + ' '.join(tex_escape(n) for n in notes))
    out += _tex_card(card) + ['\\end{table*}']
    return out


def to_latex(table, per_class: Sequence[PerClassTable] = ()) -> str:
    """Render a table (and optional per-class tables) as LaTeX (booktabs).

    Args:
        table: A ``MainTable`` or a ``PerClassTable``.
        per_class: Per-class tables to append after a main table.

    Returns:
        LaTeX source: one ``table*`` environment per table, each followed by
        its protocol card.
    """
    if isinstance(table, PerClassTable):
        t = table
        header = ['Class'] + [tex_escape(c.label) for c in t.columns]
        lines = [[tex_escape(cls)] + [fmt(t.iou(cls, c), t.decimals) for c in t.columns] for cls in t.classes]
        lines.append(['mIoU'] + [fmt(c.ours(t.benchmark), t.decimals) for c in t.columns])
        out = _tex_env(f'Per-class IoU (\\%) on {tex_escape(bench_title(t.benchmark))}.',
                       f'tab:per-class-{t.benchmark.replace("_", "-")}', 'l' + 'r' * len(t.columns),
                       header, [('', lines)], t.card, t.notes)
        return '\n'.join(out) + '\n'
    header = ['Method', 'Backbone'] + [tex_escape(bench_title(b)) for b in table.benchmarks] + ['Avg']
    blocks = []
    for name, rows in table.groups():
        lines = [[tex_escape(r.method), tex_escape(r.backbone_title)]
                 + [_tex_cell(_cell_parts(table, r, b)) for b in table.benchmarks]
                 + [_tex_cell(_avg_parts(table, r))] for r in rows]
        blocks.append((f'{table.group_by}: {name}' if name else '', lines))
    out = _tex_env('Open-vocabulary semantic segmentation, mIoU (\\%).', 'tab:results',
                   'll' + 'r' * (len(table.benchmarks) + 1), header, blocks, table.card, _legend(table))
    for t in per_class:
        out += [''] + to_latex(t).rstrip('\n').split('\n')
    return '\n'.join(out) + '\n'


# ----- PNG

def plot_main_table(table: MainTable, path: str) -> str:
    """Bar plot of our mIoU per benchmark (and the average), published values marked.

    One bar per model in each benchmark group; a black tick marks the
    published number where one exists. With ``group_by`` each group gets its
    own panel (e.g. ``preset``: backbones compared within each method;
    ``backbone``: methods compared within each backbone).

    Args:
        table: The main table.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    groups = table.groups()
    cols = table.benchmarks + ['avg']
    titles = [bench_title(b) for b in table.benchmarks] + ['Avg']
    nmax = max(len(rows) for _, rows in groups)
    width = max(6.0, 0.9 + len(cols) * (0.35 + 0.22 * nmax))
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, 3.6 * len(groups) + 0.6), squeeze=False)
    cmap = plt.get_cmap('tab10' if nmax <= 10 else 'tab20')
    for ax, (name, rows) in zip(axes[:, 0], groups):
        n = len(rows)
        bw = 0.8 / max(n, 1)
        drew_pub = False
        for i, r in enumerate(rows):
            xs, ys, pubs = [], [], []
            for j, b in enumerate(cols):
                if b == 'avg':
                    v, have = table.avg(r)
                    if v is not None and len(have) < len(table.avg_over):
                        v = None   # partial averages are not comparable: not drawn
                    p = table.avg_published(r)
                else:
                    v, p = r.ours(b), r.published.get(b)
                if v is None:
                    continue
                x = j - 0.4 + bw * (i + 0.5)
                xs.append(x)
                ys.append(v)
                if p is not None:
                    pubs.append((x, p))
            ax.bar(xs, ys, bw * 0.92, label=r.label, color=cmap(i % cmap.N))
            for x, p in pubs:
                ax.plot([x - bw * 0.46, x + bw * 0.46], [p, p], color='black', lw=1.6,
                        label=None if drew_pub else 'published')
                drew_pub = True
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(titles, rotation=20, ha='right')
        ax.set_ylabel('mIoU (%)')
        ax.set_xlim(-0.6, len(cols) - 0.4)
        ax.grid(axis='y', alpha=0.3)
        ax.set_axisbelow(True)
        if name:
            ax.set_title(f'{table.group_by}: {name}', fontsize=10)
        ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
    c = table.card.common
    title = 'mIoU per benchmark; protocol: ' + ', '.join(
        f'{label} {c[f]}' if len(c[f]) < 40 else f'{label} varies' for f, label in ROW_FIELDS if f in c)
    if table.card.deviations:
        title += f' ({len(table.card.deviations)} run(s) off the published protocol)'
    fig.suptitle(textwrap.fill(title, int(width * 13)), fontsize=8)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches='tight')
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- CLI

def _write_text(path: str, text: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)


def write_outputs(table: MainTable, out_dir: str, formats: Sequence[str],
                  per_class: Sequence[PerClassTable] = ()) -> List[str]:
    """Write the requested formats into a directory.

    Args:
        table: The main table.
        out_dir: Output directory (created if needed).
        formats: Any of ``md``, ``csv``, ``tex``, ``png``.
        per_class: Per-class tables (written into md/tex, and as CSV files).

    Returns:
        The paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if 'md' in formats:
        p = os.path.join(out_dir, 'results.md')
        _write_text(p, to_markdown(table, per_class))
        written.append(p)
    if 'csv' in formats:
        p = os.path.join(out_dir, 'results.csv')
        _write_text(p, to_csv(table))
        written.append(p)
        for t in per_class:
            p = os.path.join(out_dir, f'per_class_{t.benchmark}.csv')
            _write_text(p, to_csv(t))
            written.append(p)
    if 'tex' in formats:
        p = os.path.join(out_dir, 'results.tex')
        _write_text(p, to_latex(table, per_class))
        written.append(p)
    if 'png' in formats:
        written.append(plot_main_table(table, os.path.join(out_dir, 'results.png')))
    return written


def _formats(s: str) -> List[str]:
    fs = [f.strip() for f in s.split(',') if f.strip()]
    bad = [f for f in fs if f not in FORMATS]
    if bad or not fs:
        raise argparse.ArgumentTypeError(f"unknown format(s) {bad or [s]}: choose from {','.join(FORMATS)}")
    return fs


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description='Build result tables from ClearCLIP-Seg run records (JSON).')
    parser.add_argument('paths', nargs='+', metavar='RECORD_DIR_OR_FILES',
                        help='record files, or directories searched for **/record.json and *.json')
    parser.add_argument('--out', help='write the tables here (default: print Markdown to stdout)')
    parser.add_argument('--format', type=_formats, default=None,
                        help='comma list of md,csv,tex,png (default: all with --out, md without)')
    parser.add_argument('--per-class', action='store_true', help='add per-class IoU tables')
    parser.add_argument('--group-by', choices=GROUP_BY, help='group rows (and plot panels) by this key')
    parser.add_argument('--decimals', type=int, choices=(1, 2), default=2,
                        help='decimals for our numbers and differences (default 2)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the tool.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 on success, 2 on bad input (one-line error on stderr).
    """
    args = parse_args(argv)
    formats = args.format or (list(FORMATS) if args.out else ['md'])
    if not args.out and 'png' in formats:
        print('error: --format png needs --out DIR', file=sys.stderr)
        return 2
    try:
        records = load_records(args.paths)
    except RecordError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    table = build_main_table(records, group_by=args.group_by, decimals=args.decimals)
    per_class = build_per_class_tables(table) if args.per_class else []
    if args.out:
        for p in write_outputs(table, args.out, formats, per_class):
            print(p)
        return 0
    texts = {'md': lambda: to_markdown(table, per_class), 'csv': lambda: to_csv(table),
             'tex': lambda: to_latex(table, per_class)}
    sys.stdout.write('\n'.join(texts[f]() for f in formats))
    return 0


if __name__ == '__main__':
    sys.exit(main())
