"""Per-class IoU of every run (sortable tables) and the classes that differ most between two runs."""
from typing import Dict, List, Optional, Sequence, Tuple

from ..tables.build import MainTable, build_per_class_tables
from ..tables.formats import fmt, fmt_diff
from ..tables.labels import bench_title
from ..tables.records import RecordError
from .html import esc, table_html

TOP_CLASSES = 10   # rows of the "differ most" table


def run_id(row_label: str, bench: str) -> str:
    """The key of one run (a table row on one benchmark) in the page's data and on the command line."""
    return f'{row_label} | {bench}'


def class_data(table: MainTable) -> Dict[str, object]:
    """The page's embedded data: every run's class names and IoU (None = undefined), in table order."""
    runs = {}
    for b in table.benchmarks:
        for r in table.rows:
            rec = r.records.get(b)
            if rec is None:
                continue
            iou = rec.iou
            vals = []
            for c in rec.classes:
                v = iou.get(c)
                vals.append(None if v is None or v != v else float(v))
            runs[run_id(r.label, b)] = dict(benchmark=b, classes=list(rec.classes), iou=vals)
    return dict(runs=runs, decimals=table.decimals, top=TOP_CLASSES)


def per_class_html(table: MainTable) -> str:
    """One sortable table per benchmark: classes x runs (click a header to sort)."""
    out = []
    for t in build_per_class_tables(table):
        header = ['Class'] + [c.label for c in t.columns]
        body = [[cls] + [(fmt(t.iou(cls, c), t.decimals), t.iou(cls, c)) for c in t.columns] for cls in t.classes]
        out.append(f'<h3>{esc(bench_title(t.benchmark))}</h3>')
        out.append(table_html(header, body, sortable=True, table_id=f'per-class-{t.benchmark}'))
        out += [f'<p class="note">{esc(n)}</p>' for n in t.notes]
    return '\n'.join(out) + '<p class="note">A dash marks a class absent from both the labels and the ' \
                            'predictions (IoU undefined); it sorts last.</p>'


def resolve_run(data: Dict[str, object], name: str) -> str:
    """A run named on the command line: its full key, or a unique part of one (``'NACLIP'``, ``'voc21'``).

    Raises:
        RecordError: No run or several runs match.
    """
    runs = list(data['runs'])
    if name in runs:
        return name
    hits = [r for r in runs if name.lower() in r.lower()]
    if len(hits) != 1:
        raise RecordError(f"--compare '{name}': {'no run' if not hits else f'{len(hits)} runs'} match; "
                          f"expected one of: {'; '.join(runs[:12])}{' ...' if len(runs) > 12 else ''}")
    return hits[0]


def differ_most(data: Dict[str, object], a: str, b: str, top: int = TOP_CLASSES) -> List[Tuple[str, float, float]]:
    """The classes whose IoU differs most between runs ``a`` and ``b`` (both defined), largest |B - A| first.

    Ties keep class order (the page's script sorts the same way).
    """
    ra, rb = data['runs'][a], data['runs'][b]
    rows = []
    for c, x in zip(ra['classes'], ra['iou']):
        if c in rb['classes']:
            y = rb['iou'][rb['classes'].index(c)]
            if x is not None and y is not None:
                rows.append((c, x, y))
    return sorted(rows, key=lambda t: -abs(t[2] - t[1]))[:top]


def compare_html(data: Dict[str, object], pair: Optional[Sequence[str]], decimals: int) -> str:
    """Two select boxes (preset to ``pair``) and the table of the classes that differ most.

    The table is rendered here for the preset pair (it reads without the script)
    and refilled by the page's script when another run is chosen.
    """
    runs = list(data['runs'])
    if len(runs) < 2:
        return '<p class="note">Only one run: nothing to compare.</p>'
    if pair:
        a, b = resolve_run(data, pair[0]), resolve_run(data, pair[1])
    else:   # the first two runs on one benchmark
        a = runs[0]
        b = next((r for r in runs[1:] if data['runs'][r]['benchmark'] == data['runs'][a]['benchmark']), runs[1])

    def select(ident: str, chosen: str) -> str:
        opts = ''.join(f'<option value="{esc(r)}"{" selected" if r == chosen else ""}>{esc(r)}</option>'
                       for r in runs)
        return f'<select id="{ident}">{opts}</select>'

    body = [[c, fmt(x, decimals), fmt(y, decimals), fmt_diff(y - x, decimals)] for c, x, y in
            differ_most(data, a, b)] if data['runs'][a]['benchmark'] == data['runs'][b]['benchmark'] else []
    return (f'<p>A: {select("cmp-a", a)} &nbsp; B: {select("cmp-b", b)}</p>'
            + table_html(['Class', 'IoU A', 'IoU B', 'B \u2212 A'], body, table_id='cmp-out'))
