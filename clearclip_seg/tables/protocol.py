"""Protocol values of records, deviations from the published protocol, protocol cards."""
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from ..protocol import constants
from ..protocol.benchmarks import BENCHMARKS
from ..protocol.presets import PRESETS
from ..vocab import load_templates
from .labels import bench_title, order_benchmarks
from .methods import method_run, setting_deviations
from .records import Record

# Row-level protocol fields (one value expected per model) and per-benchmark ones.
ROW_FIELDS = (('resize', 'resize'), ('mode', 'mode'), ('logit_scale', 'logit scale'),
              ('templates', 'templates'), ('precision', 'precision'))
BENCH_FIELDS = (('crop_stride', 'crop/stride'), ('prob_thd', 'prob_thd'),
                ('vocab_digest', 'vocabulary digest'), ('num_images', 'images'))


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


def show_value(v) -> str:
    """A protocol value as printed: 'n/a' for None, pairs as ``AxB``."""
    if v is None:
        return 'n/a'
    if isinstance(v, tuple):
        return 'x'.join(show_value(x) for x in v)
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
        crop_stride=None if crop is None and stride is None else f'{show_value(crop)}/{show_value(stride)}',
        prob_thd=_norm(p.get('prob_thd')), vocab_digest=p.get('vocab_digest'),
        num_images=(rec.data.get('dataset') or {}).get('num_images'))


def protocol_deviations(rec: Record) -> List[str]:
    """Where a record's run differs from the published protocol (docs/protocol.md).

    The expected ``prob_thd`` is the preset's for the benchmark (vanilla CLIP:
    0.2 on the sets with background), else the benchmark's own.

    Args:
        rec: A record.

    Records of other methods (``tables/methods.py``) are compared with the
    setting of the protocol they ran under: the method's own card, or the
    common one.

    Returns:
        Short descriptions, e.g. ``'prob_thd 0.3 (published: 0.5)'``; empty
        when the run follows the protocol.
    """
    b = BENCHMARKS.get(rec.benchmark)
    p = record_protocol(rec)
    out = []

    def check(name, got, want):
        if got is not None and _norm(got) != _norm(want):
            out.append(f'{name} {show_value(got)} (published: {show_value(_norm(want))})')

    # the published protocol beyond what BENCHMARKS / PRESETS hold (protocol/constants.py)
    templates = f'{constants.TEMPLATES} ({len(load_templates(constants.TEMPLATES))})'
    mr = method_run(rec)
    if mr is not None:  # another method: its own protocol card, or the common one (tables/methods.py)
        out += setting_deviations(rec, mr)
        check('templates', p['templates'], templates)
        check('precision', p['precision'], constants.PAPER_PRECISION)
        if b is not None:
            check('images', p['num_images'], b.num_images)
        return out
    check('resize', p['resize'], list(constants.RESIZE))
    check('mode', p['mode'], constants.TEST_MODE)
    check('logit scale', p['logit_scale'], constants.LOGIT_SCALE)
    check('templates', p['templates'], templates)
    check('precision', p['precision'], constants.PAPER_PRECISION)
    if b is not None:
        check('crop/stride', p['crop_stride'], f'{b.crop}/{b.stride}')
        want_thd = PRESETS[rec.preset].prob_thd(b) if rec.preset in PRESETS else b.prob_thd
        if p['prob_thd'] is not None and not math.isclose(float(p['prob_thd']), want_thd, abs_tol=1e-9):
            out.append(f"prob_thd {show_value(p['prob_thd'])} (published: {show_value(_norm(want_thd))})")
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
        return show_value(next(iter(values)))
    ordered = sorted(values.items(), key=lambda kv: -len(kv[1]))
    main = show_value(ordered[0][0])
    rest = '; '.join(f'{", ".join(who)}: {show_value(v)}' for v, who in ordered[1:])
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
            if len(vals) > 1 and any(method_run(r) for r in recs):
                v = 'per benchmark'   # a method's own protocol varies by design: its row card shows it
            elif len(vals) > 1:
                disagreements.append(f'{label}, {name}: ' + '; '.join(
                    f'{show_value(v)} ({", ".join(bs)})' for v, bs in vals.items()))
                v = 'mixed'
            else:
                v = next(iter(vals))
            row_values.setdefault(v, []).append(label)
        common[f] = _summarise(row_values)
    per_bench: Dict[str, Dict[str, str]] = OrderedDict()
    benches = order_benchmarks(r.benchmark for _, r in entries)
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
                 ', '.join(bench_title(b) for b in order_benchmarks(benches_off)))
        deviations.append(f'{label}: {dev} on {where}')
    return ProtocolCard(common, per_bench, disagreements, deviations)

