"""The report's tables: the paper-layout main table, the methods table, the backbone table, the ablation grid.

Each is built from the same ``MainTable`` rows as ``tools/collect_results.py``'s
tables (``clearclip_seg.tables``); here they are laid out as HTML. Rows are
split by kind: named presets of ClearCLIP and its baselines (main table;
backbone table when several backbones ran), rows of method cards (methods
table, whatever cards ``protocol/methods.py`` holds), and last-block points of
the ablation grid.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from ..protocol.presets import ABLATION_ATTENTION
from ..tables.build import MainTable, Row, build_main_table
from ..tables.formats import OFF_PROTOCOL_MARK, QUOTED_MARK, fmt, fmt_diff, fmt_published
from ..tables.labels import bench_title, onoff
from ..tables.records import Record
from ..tables.row_cards import row_card
from ..tables.methods import SETTING_FIELDS
from .html import esc, table_html


def _quiet(msg: str) -> None:
    """Sub-tables re-read records the full table already warned about."""


def sub_table(table: MainTable, rows: Sequence[Row], group_by: Optional[str] = None) -> Optional[MainTable]:
    """A table of some rows' records (None when there are none)."""
    recs = [rec for r in rows for rec in r.records.values()]
    return build_main_table(recs, group_by=group_by, decimals=table.decimals, warn=_quiet) if recs else None


def is_ablation_point(row: Row) -> bool:
    """A last-block row that is no named preset (a point of the attention x residual x FFN grid)."""
    return row.card is None and row.block is not None and row.preset is None


def cell_html(table: MainTable, row: Row, bench: str) -> Tuple[str, Optional[float]]:
    """Ours, with the published number and the difference under it; and the value to sort by."""
    d = table.decimals
    ours = row.ours(bench)
    if ours is None:
        return '-', None
    text = esc(fmt(ours, d)) + (OFF_PROTOCOL_MARK if bench in row.off_protocol else '')
    pub = row.published.get(bench)
    if pub is not None:
        diff = row.diff(bench)
        mark = QUOTED_MARK if bench in row.quoted else ''
        cls = 'up' if diff >= 0 else 'down'
        text += (f'<br><span class="pub">{esc(fmt_published(pub))}{mark} '
                 f'<span class="{cls}">{esc(fmt_diff(diff, d))}</span></span>')
    return text, ours


def avg_html(table: MainTable, row: Row) -> Tuple[str, Optional[float]]:
    """The row's average (marked when over a subset), with the published average and difference."""
    d = table.decimals
    avg, have = table.avg(row)
    if avg is None:
        return '-', None
    text = esc(fmt(avg, d)) + ('\u00a7' if len(have) < len(table.avg_over) else '')
    pub = table.avg_published(row)
    if pub is not None:
        diff = avg - pub
        text += (f'<br><span class="pub">{esc(fmt(pub, d))} '
                 f'<span class="{"up" if diff >= 0 else "down"}">{esc(fmt_diff(diff, d))}</span></span>')
    return text, avg


def legend_html(table: MainTable) -> str:
    """How to read a cell, what the average is over, and the markers."""
    lines = ['Cells: our mIoU (%); under it the published number and ours \u2212 published, where one exists.',
             table.avg_note()]
    if any(r.quoted for r in table.rows):
        lines.append(f'{QUOTED_MARK} published number quoted by a later paper or read from a figure.')
    if any(r.off_protocol for r in table.rows):
        lines.append(f'{OFF_PROTOCOL_MARK} the run differs from its protocol (see Provenance).')
    lines += table.notes
    return ''.join(f'<p class="note">{esc(x)}</p>' for x in lines)


def paper_table_html(table: MainTable, family: bool = False, ident: str = 'main-table') -> str:
    """The paper layout: Method, Backbone, the benchmarks, Avg (grouped when the table is; ids ``ident-N``)."""
    extra = ['Size', 'Params (M)', 'img/s'] if family else []
    header = ['Method', 'Backbone'] + extra + [bench_title(b) for b in table.benchmarks] + [table.avg_header()]
    out = []
    for i, (name, rows) in enumerate(table.groups()):
        if name:
            out.append(f'<h3>{esc(name)}</h3>')
        body = []
        for r in rows:
            cells = [esc(r.method), esc(r.backbone_title)]
            if family:
                p, ips = r.params(), r.images_per_s()
                cells += [esc(r.size), ('-' if p is None else f'{p / 1e6:.1f}', p),
                          ('-' if ips is None else f'{ips:.2f}', ips)]
            cells += [cell_html(table, r, b) for b in table.benchmarks] + [avg_html(table, r)]
            body.append(cells)
        out.append(table_html(header, body, sortable=True, left=2, raw=True, table_id=f'{ident}-{i}'))
    return '\n'.join(out) + legend_html(table)


# ----------------------------------------------------------------------------- methods table

def _method_base(row: Row) -> str:
    """A methods-table row: the method (with variant options), without its protocol or PAMR words."""
    label = row.method
    for sep in (' (common protocol', ', PAMR off', ' + PAMR'):
        if sep in label:
            label = label[:label.index(sep)]
    return label


def _protocol_column(row: Row) -> str:
    """The column of a row in the methods table: own, common, common + PAMR, or own with PAMR switched."""
    if row.protocol == 'common' or (row.card is None and row.pamr):   # ClearCLIP + PAMR: the common one
        return 'common + PAMR' if row.pamr else 'common'
    rest = row.method[len(_method_base(row)):].strip(' ,')
    return f'own ({rest})' if rest else 'own'


def methods_table_html(table: MainTable) -> str:
    """Methods with their own and the common protocol side by side, each row's protocol card in a details row.

    Rows: (method, backbone); per benchmark and for the average one column per
    protocol present (own, common, common + PAMR, ...). ClearCLIP's own protocol
    is the common one: its row shows the same run under both.
    """
    kinds = list(OrderedDict.fromkeys(_protocol_column(r) for r in table.rows))
    order = sorted(kinds, key=lambda k: (not k.startswith('own'), k != 'common', k))
    groups: Dict[Tuple[str, str], Dict[str, Row]] = OrderedDict()
    for r in table.rows:
        g = groups.setdefault((_method_base(r), r.backbone_title), {})
        g[_protocol_column(r)] = r
        if r.card is None and r.preset == 'clearclip' and 'common' in order:
            g.setdefault('common', r)    # ClearCLIP's own protocol is the common one
    cols = table.benchmarks + ['avg']
    head1 = '<th class="l" rowspan="2">Method</th><th class="l" rowspan="2">Backbone</th>' + ''.join(
        f'<th colspan="{len(order)}">{esc(bench_title(b) if b != "avg" else table.avg_header())}</th>'
        for b in cols)
    head2 = ''.join(f'<th>{esc(k)}</th>' for _ in cols for k in order)
    body = []
    ncol = 2 + len(cols) * len(order)
    for (method, backbone), by_kind in groups.items():
        cells = [f'<td class="l">{esc(method)}</td>', f'<td class="l">{esc(backbone)}</td>']
        for b in cols:
            for k in order:
                r = by_kind.get(k)
                html_, v = ('-', None) if r is None else (avg_html(table, r) if b == 'avg' else
                                                          cell_html(table, r, b))
                cells.append(f'<td data-v="{esc(v) if v is not None else ""}">{html_}</td>')
        body.append('<tr>' + ''.join(cells) + '</tr>')
        cards = ''.join(_row_card_html(table, r, k) for k, r in by_kind.items())
        body.append(f'<tr class="details"><td colspan="{ncol}"><details><summary>protocol of '
                    f'{esc(method)} ({esc(backbone)})</summary>{cards}</details></td></tr>')
    return (f'<table id="methods-table"><thead><tr>{head1}</tr><tr>{head2}</tr></thead><tbody>'
            + '\n'.join(body) + '</tbody></table>' + legend_html(table))


def _row_card_html(table: MainTable, row: Row, kind: str) -> str:
    card = row_card(row)
    benches = [b for b in table.benchmarks if b in card]
    rows = [[label] + [card[b][f] for b in benches] for f, label in SETTING_FIELDS]
    return f'<p class="note">{esc(kind)}: {esc(row.method)}</p>' + table_html(
        [''] + [bench_title(b) for b in benches], rows)


# ----------------------------------------------------------------------------- ablation grid

def ablation_html(table: MainTable) -> str:
    """The paper's ablation grid: attention rows x (residual, FFN) columns, one grid per backbone.

    The first grid holds the average over the benchmarks present; one grid per
    benchmark follows (folded). The best cell of each grid is bold.
    """
    out = []
    by_backbone: Dict[str, List[Row]] = OrderedDict()
    for r in table.rows:
        if r.block is not None and r.card is None and not r.pamr:
            by_backbone.setdefault(r.backbone_title, []).append(r)
    combos = [(res, ffn) for res in (True, False) for ffn in (True, False)]
    header = ['attention'] + [f'residual {onoff(res)}, FFN {onoff(ffn)}' for res, ffn in combos]
    for backbone, rows in by_backbone.items():
        cell: Dict[Tuple[str, bool, bool], Row] = {r.block: r for r in rows}
        attns = [a for a in ABLATION_ATTENTION if any(k[0] == a for k in cell)]
        attns += sorted({k[0] for k in cell} - set(attns))
        # the grid's benchmarks: where the points of the grid ran (the presets may have run more)
        points = [r for r in rows if is_ablation_point(r)] or rows
        benches = [b for b in table.benchmarks if any(b in r.records for r in points)]

        def value(r: Optional[Row], bench: Optional[str]) -> Optional[float]:
            if r is None:
                return None
            if bench is None:   # the mean over the grid's benchmarks; a point missing one has none
                vals = [r.ours(b) for b in benches]
                return None if None in vals else sum(vals) / len(vals)
            return r.ours(bench)

        def grid(bench: Optional[str]) -> str:
            vals = {(a, res, ffn): value(cell.get((a, res, ffn)), bench) for a in attns for res, ffn in combos}
            best = max((v for v in vals.values() if v is not None), default=None)
            body = []
            for a in attns:
                tds = [f'<td class="l">{esc(a)}</td>']
                for res, ffn in combos:
                    v = vals[(a, res, ffn)]
                    r = cell.get((a, res, ffn))
                    name = f' title="{esc(r.method)}"' if r is not None else ''
                    cls = ' class="best"' if v is not None and v == best else ''
                    tds.append(f'<td{cls}{name}>{esc(fmt(v, table.decimals))}</td>')
                body.append('<tr>' + ''.join(tds) + '</tr>')
            head = ''.join(f'<th{" class=l" if i == 0 else ""}>{esc(h)}</th>' for i, h in enumerate(header))
            return (f'<table class="grid" id="ablation-{esc(bench or "avg")}"><thead><tr>{head}</tr></thead>'
                    f'<tbody>{"".join(body)}</tbody></table>')

        out.append(f'<h3>{esc(backbone)}: mean mIoU over {esc(", ".join(bench_title(b) for b in benches))}</h3>')
        out.append(grid(None))
        out.append('<details><summary>per benchmark</summary>' + ''.join(
            f'<h4>{esc(bench_title(b))}</h4>' + grid(b) for b in benches) + '</details>')
    return '\n'.join(out)


def split_rows(table: MainTable) -> Dict[str, List[Row]]:
    """The rows of each section: ``main`` (named presets), ``methods`` (cards, with ClearCLIP), ``ablation``."""
    presets = [r for r in table.rows if r.card is None and not is_ablation_point(r)]
    cards = [r for r in table.rows if r.card is not None]
    ablation_points = [r for r in table.rows if is_ablation_point(r)]
    # the grid holds the preset points too (qq/off/off is ClearCLIP, qk/on/on vanilla CLIP)
    grid = [r for r in table.rows if r.card is None and r.block is not None
            and any(a.backbone == r.backbone for a in ablation_points)]
    methods = cards + [r for r in presets if r.preset == 'clearclip' and
                       any(c.backbone == r.backbone for c in cards)] if cards else []
    return dict(main=presets, methods=methods, ablation=grid if ablation_points else [])


def records_of(rows: Sequence[Row]) -> List[Record]:
    """The records the rows use."""
    return [rec for r in rows for rec in r.records.values()]
