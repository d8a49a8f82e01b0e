"""Arranging records into tables: the paper-layout main table and per-class tables."""
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..protocol.benchmarks import BACKBONES, PAPER_ORDER
from ..protocol.presets import PRESETS
from ..protocol.published import is_quoted, published_miou
from .labels import backbone_label, bench_title, method_label, order_benchmarks
from .protocol import ProtocolCard, build_protocol_card, protocol_deviations
from .records import Record, warn_stderr

GROUP_BY = ('preset', 'backbone', 'arch')


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
                     warn: Callable[[str], None] = warn_stderr) -> MainTable:
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
            pub = published_miou(row.backbone, row.preset, b)
            if pub is not None:
                row.published[b] = pub
                if is_quoted(row.backbone, row.preset, b):
                    row.quoted.add(b)
            if protocol_deviations(rec):
                row.off_protocol.add(b)
    ordered = sorted(rows.values(), key=lambda r: _row_sort_key(r, group_by))
    benches = order_benchmarks(b for r in ordered for b in r.records)
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

