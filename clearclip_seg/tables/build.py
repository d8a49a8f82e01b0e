"""Arranging records into tables: the paper-layout main table and per-class tables."""
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..protocol.backbones import BACKBONE_INFO
from ..protocol.benchmarks import BACKBONES, PAPER_ORDER
from ..protocol.methods import METHOD_CARDS
from ..protocol.presets import PRESETS
from ..protocol.published import is_quoted, published_miou
from ..protocol.published_methods import MethodEntry
from .labels import backbone_label, bench_title, method_label, order_benchmarks
from .methods import method_row_key, method_run, published_entry, record_setting
from .protocol import ProtocolCard, build_protocol_card, protocol_deviations
from .records import Record, warn_stderr

# family: rows grouped by backbone family and ordered by size, with parameters and images/s (issue 11)
GROUP_BY = ('preset', 'backbone', 'arch', 'family')


@dataclass
class Row:
    """One model of the main table.

    Attributes:
        key: ``(arch, pretrained, method type, options..., preset or card, ...)``: the row identity.
        method: Display name of the method (with its protocol when not its own, and PAMR).
        backbone_title: Display name of the backbone.
        backbone: Backbone slug or None.
        preset: Preset name or None (the card name for other methods).
        records: benchmark -> the record used.
        published: benchmark -> published mIoU (where one exists).
        quoted: Benchmarks whose published number is quoted from another source.
        off_protocol: Benchmarks whose run left its protocol (the published one, or the common one).
        block: ``(attn, residual, ffn)`` of a LastBlock row, else None.
        card: method card name of a row of another registered method, else None.
        protocol: ``own`` (the method's published protocol; ClearCLIP's is the common one)
            or ``common``.
        pamr: PAMR on.
        entry: the published row of a method (``protocol/published_methods.py``), if any.
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
    block: Optional[Tuple[str, bool, bool]] = None
    card: Optional[str] = None
    protocol: str = 'own'
    pamr: bool = False
    entry: Optional[MethodEntry] = None

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
    def last_block(self) -> Optional[Tuple[str, bool, bool]]:
        """``(attn, residual, ffn)``; None for a method other than LastBlock."""
        return self.block

    @property
    def method_type(self) -> str:
        """The registered method (``LastBlock`` for ClearCLIP and its baselines)."""
        return self.key[2]

    @property
    def family(self) -> str:
        """Backbone family (``protocol/backbones.py``), or the architecture name when unknown."""
        info = BACKBONE_INFO.get(self.backbone)
        return info.family if info else self.arch

    @property
    def size(self) -> str:
        """Backbone size (``B/16``, ``L/14``, ...), or '' when unknown."""
        info = BACKBONE_INFO.get(self.backbone)
        return info.size if info else ''

    def params(self) -> Optional[int]:
        """Parameters of the image tower (plus a method's own model, e.g. ProxyCLIP's), from the records."""
        for rec in self.records.values():
            p = (rec.data.get('model') or {}).get('params')
            if isinstance(p, dict) and p.get('image') is not None:
                return int(p['image']) + int(p.get('method') or 0)
        return None

    def images_per_s(self) -> Optional[float]:
        """Images per second over the row's records (total images / total wall time), from their timing."""
        n = wall = 0.0
        for rec in self.records.values():
            t = rec.data.get('timing') or {}
            images = (rec.data.get('dataset') or {}).get('num_images')
            if t.get('wall_s') and images:
                n, wall = n + images, wall + float(t['wall_s'])
        return n / wall if wall > 0 else None

    def devices(self) -> List[str]:
        """The devices the row's records were timed on."""
        return sorted({str((r.data.get('timing') or {}).get('device')) for r in self.records.values()})

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
        if group_by == 'family':
            return self.family
        return ''


@dataclass
class MainTable:
    """The paper-layout table: one row per model, one column per benchmark.

    Attributes:
        benchmarks: Columns, in ``PAPER_ORDER`` (then any others).
        rows: The models, sorted (and grouped when ``group_by`` is set).
        group_by: None, 'preset', 'backbone' or 'arch'.
        card: The protocol card.
        notes: Extra lines (runs listed by two suites, etc.).
        decimals: Decimals for our numbers and differences.
        warnings: Records dropped (two different records of one row and benchmark), naming
            their files: in the Markdown, never in the LaTeX footnotes.
    """
    benchmarks: List[str]
    rows: List[Row]
    group_by: Optional[str]
    card: ProtocolCard
    notes: List[str]
    decimals: int = 2
    warnings: List[str] = field(default_factory=list)

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

    def paper_benchmarks_missing(self) -> List[str]:
        """The paper's benchmarks the average leaves out (its Avg is over all eight)."""
        return [b for b in PAPER_ORDER if b not in self.avg_over]

    def avg_header(self) -> str:
        """``Avg``, or ``Avg (n of 8)`` when the average is not over the paper's eight benchmarks."""
        n = len([b for b in self.avg_over if b in PAPER_ORDER])
        if not self.paper_benchmarks_missing() and n == len(self.avg_over):
            return 'Avg'
        return f'Avg ({n} of {len(PAPER_ORDER)})' if n == len(self.avg_over) else \
            f'Avg ({len(self.avg_over)} benchmarks)'

    def avg_note(self) -> str:
        """The sentence saying what the average is over (and that it is not the paper's, when so)."""
        names = ', '.join(bench_title(b) for b in self.avg_over)
        n, total = len(self.avg_over), len(PAPER_ORDER)
        missing = self.paper_benchmarks_missing()
        return f'Avg: mean mIoU over the {n} benchmark{"s" if n != 1 else ""} present ({names})' + (
            f'; the paper averages {total}: not comparable with its Avg' if missing else '') + '.'


def _row_sort_key(row: Row, group_by: Optional[str]):
    bb = list(BACKBONES)
    # presets first, then the method cards in their table order
    methods = list(PRESETS) + [c for c in METHOD_CARDS if c not in PRESETS]
    backbone_i = bb.index(row.backbone) if row.backbone in bb else len(bb)
    name = row.card or row.preset
    preset_i = methods.index(name) if name in methods else len(methods)
    arch_order = list(OrderedDict.fromkeys(a for a, _, _ in BACKBONES.values()))
    arch_i = arch_order.index(row.arch) if row.arch in arch_order else len(arch_order)
    by_backbone = (backbone_i, row.arch, str(row.pretrained))
    card = METHOD_CARDS.get(row.card)
    pamr_default = card is not None and row.protocol == 'own' and card.defaults['postprocess'] is not None
    by_preset = (preset_i, row.protocol != 'own', row.pamr != pamr_default, str(row.key[2:]))
    if group_by == 'preset':
        return by_preset + by_backbone
    if group_by == 'arch':
        return (arch_i, row.arch) + by_preset + by_backbone
    if group_by == 'family':
        families = list(OrderedDict.fromkeys(b.family for b in BACKBONE_INFO.values()))
        family_i = families.index(row.family) if row.family in families else len(families)
        return (family_i, row.family) + by_backbone + by_preset
    return by_backbone + by_preset


def _new_row(rec: Record) -> Tuple[tuple, Row]:
    """Row identity and an empty row for a record (LastBlock presets, or a method card's run)."""
    title = backbone_label(rec.backbone, rec.arch, rec.pretrained)
    mr = method_run(rec)
    if mr is not None:
        return method_row_key(rec, mr), Row(method_row_key(rec, mr), mr.label(), title, rec.backbone, rec.preset,
                                            card=mr.card.name, protocol=mr.protocol, pamr=mr.pamr)
    pamr = record_setting(rec)['pamr'] != 'off'
    label = method_label(rec.preset, rec.last_block) if rec.last_block else str(rec.method_type)
    key = rec.model_key + ((('pamr', True),) if pamr else ())
    return key, Row(key, label + (' + PAMR' if pamr else ''), title, rec.backbone, rec.preset,
                    block=rec.last_block, pamr=pamr)


def _suite(rec: Record) -> str:
    run = rec.data.get('run') if isinstance(rec.data.get('run'), dict) else {}
    return str(run.get('suite') or os.path.basename(os.path.dirname(os.path.dirname(rec.path))) or '?')


def same_run(a: Record, b: Record) -> bool:
    """Two records of one run: same benchmark, run identity (else resolved config), data and metrics.

    The runner stores ClearCLIP's runs of the ``methods`` and ``methods-common``
    suites twice (its own protocol is the common one): the same numbers, one row.
    """
    def ident(r: Record):
        cfg = r.data.get('config') or {}
        # the run identity (what the runner compares to resume) is what ran: overrides that set a config's
        # own values, the work dir and --show-dir change nothing; older records: the resolved text
        what = cfg.get('identity') if cfg.get('identity') is not None else cfg.get('resolved')
        return (r.benchmark, json.dumps(what, sort_keys=True, default=str),
                (r.data.get('dataset') or {}).get('data_root'), (r.data.get('metrics') or {}).get('area_union'),
                r.miou)
    return ident(a) == ident(b)


def _fill_published(row: Row) -> None:
    for b, rec in row.records.items():
        if row.card is not None:
            mr = method_run(rec)
            entry = published_entry(rec, mr)
            if entry is not None:
                row.entry = row.entry or entry
                if b in entry.numbers:
                    row.published[b] = entry.numbers[b]
                    if entry.quoted:
                        row.quoted.add(b)
        elif not row.pamr:  # ClearCLIP and its baselines were published without PAMR
            pub = published_miou(row.backbone, row.preset, b)
            if pub is not None:
                row.published[b] = pub
                if is_quoted(row.backbone, row.preset, b):
                    row.quoted.add(b)
        if protocol_deviations(rec):
            row.off_protocol.add(b)


def build_main_table(records: Sequence[Record], group_by: Optional[str] = None, decimals: int = 2,
                     warn: Callable[[str], None] = warn_stderr) -> MainTable:
    """Arrange records into the paper-layout table.

    One row per model: ClearCLIP and its baselines by last block and preset;
    every other method by card, options (those the card sets per benchmark
    aside), protocol (own or common) and PAMR. When two records give the same
    row and benchmark, the newer one (by ``created``, then path) is used and a
    warning names both files.

    Args:
        records: Complete records (from ``load_records``).
        group_by: None, ``'preset'``, ``'backbone'``, ``'arch'`` or ``'family'``: order rows
            by that key first and split the table into groups (``family``: backbone family,
            then size, with parameters and images/s columns).
        decimals: Decimals for our numbers and the differences (1 or 2).
        warn: Called with a one-line message for each record dropped.

    Returns:
        The table.
    """
    if group_by not in (None,) + GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY} or None, not '{group_by}'")
    rows: Dict[tuple, Row] = OrderedDict()
    notes, warnings = [], []
    shared: Dict[str, Dict[str, set]] = OrderedDict()   # row label -> benchmark -> suites listing the run
    for rec in records:
        key, new = _new_row(rec)
        row = rows.setdefault(key, new)
        old = row.records.get(rec.benchmark)
        if old is not None:
            keep, drop = sorted([old, rec], key=lambda r: (r.created, r.path), reverse=True)
            if same_run(old, rec):   # one run listed by two suites (ClearCLIP in methods and methods-common)
                shared.setdefault(row.label, OrderedDict()).setdefault(rec.benchmark, set()).update(
                    {_suite(old), _suite(rec)})
            else:
                msg = f'{row.label}, {rec.benchmark}: two records, using {keep.path} (newer), ignoring {drop.path}'
                warn(msg)
                warnings.append(msg)
            rec = keep
        row.records[rec.benchmark] = rec
    for label, by_bench in shared.items():
        by_suites: Dict[tuple, List[str]] = OrderedDict()
        for b, suites in by_bench.items():
            by_suites.setdefault(tuple(sorted(suites)), []).append(b)
        for suites, benches in by_suites.items():
            notes.append(f'{label}: the same run in the suites {", ".join(suites)} on '
                         f'{", ".join(bench_title(b) for b in order_benchmarks(benches))}: one row.')
    for row in rows.values():
        _fill_published(row)
    ordered = sorted(rows.values(), key=lambda r: _row_sort_key(r, group_by))
    benches = order_benchmarks(b for r in ordered for b in r.records)
    card = build_protocol_card([(r.label, rec) for r in ordered for rec in
                                (r.records[b] for b in benches if b in r.records)])
    return MainTable(benches, ordered, group_by, card, notes, decimals, warnings)


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

