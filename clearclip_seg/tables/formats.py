"""Rendering tables as text: Markdown, CSV and LaTeX (booktabs)."""
import csv
import io
import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from ..protocol.published import PAPER, VANILLA_CLIP_BACKGROUND_PROB_THD
from ..protocol.published_methods import method_source
from .build import MainTable, PerClassTable, Row
from .labels import bench_title, onoff
from .methods import OWN_SCORING_MARK, SETTING_FIELDS, record_setting
from .protocol import BENCH_FIELDS, ROW_FIELDS, ProtocolCard, protocol_deviations, record_protocol, show_value
from .row_cards import needs_row_cards, row_card_summary, row_cards_markdown

QUOTED_MARK = '\u2020'      # dagger: published number as quoted by later papers
OFF_PROTOCOL_MARK = '*'     # our run differs from the published protocol
PARTIAL_AVG_MARK = '\u00a7'  # section sign: average over a subset of the columns


def fmt(v: Optional[float], decimals: int) -> str:
    """A number with fixed decimals; '-' for None. NaN or inf is an error, never a cell.

    Records with a non-finite metric are refused when read (``tables.records``);
    reaching here with one is a bug, so it raises instead of printing 'nan'.
    """
    if v is None:
        return '-'
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f'non-finite number {v!r} in a table cell: a record with a NaN metric was not refused')
    return f'{v:.{decimals}f}'


def fmt_diff(v: Optional[float], decimals: int) -> str:
    """A signed difference with fixed decimals ('+0.00', never '-0.00'); '' for None."""
    if v is None:
        return ''
    if round(v, decimals) == 0:
        v = 0.0
    return f'{v:+.{decimals}f}'


def fmt_published(v: Optional[float]) -> str:
    """A published number, as printed (one decimal, two where the source has two); '' for None."""
    if v is None:
        return ''
    return f'{v:.1f}' if abs(round(v, 1) - v) < 1e-9 else f'{v:.2f}'


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


def _legend(table: MainTable, warnings: bool = True) -> List[str]:
    """Lines explaining cells, the average and the markers actually used."""
    lines = ['Cells: ours (published, ours \u2212 published) where a published number exists; '
             'mIoU in %.', table.avg_note()]
    if any(r.quoted for r in table.rows):
        lines.append(f'{QUOTED_MARK} published number as quoted by later papers, or read from a figure or a '
                     'secondary source (docs/protocol.md; the sources below).')
    partial = [r for r in table.rows if r.records and len(table.avg(r)[1]) < len(table.avg_over)]
    for r in partial:
        lines.append(f'{PARTIAL_AVG_MARK} {r.label}: average over its own benchmarks only '
                     f'({", ".join(bench_title(b) for b in table.avg(r)[1])}); not comparable.')
    if any(r.off_protocol for r in table.rows):
        lines.append(f'{OFF_PROTOCOL_MARK} run differs from its protocol (the published one, or the common one '
                     'for rows so labelled; see the protocol card).')
    if any(r.card is not None and r.protocol == 'common' for r in table.rows):
        lines.append('(common protocol): the method under ClearCLIP\'s protocol (448 short side, 448/224 windows, '
                     'logit scale 50, ClearCLIP\'s vocabularies and thresholds, no PAMR unless "+ PAMR"); no '
                     'method published numbers under it.')
    if any(r.method.endswith(OWN_SCORING_MARK) for r in table.rows):
        lines.append(f'{OWN_SCORING_MARK} the method\'s own scoring (CLIPtrase: only the central square of the image '
                     'resized to the square\'s side, its own metric and background rules): its numbers, ours and '
                     'published, are not comparable with the other rows (docs/protocol.md, "Other methods").')
    if any(r.preset == 'clip' and r.published for r in table.rows):
        lines.append('Vanilla CLIP was published with prob_thd '
                     f'{VANILLA_CLIP_BACKGROUND_PROB_THD} on the sets with background.')
    if any(r.preset in ('maskclip', 'maskclip-nores', 'sclip-style', 'sclip-style-nores') and r.published
           for r in table.rows):
        lines.append('MaskCLIP/SCLIP-style: "plain" keeps the last block\'s residual and FFN; '
                     '"+ no-residual" drops both (as in the authors\' code).')
    lines.append(f'Published numbers: {PAPER}.')
    seen = set()
    for r in table.rows:
        e = r.entry
        if e is not None and r.published and (e.card, e.title, e.backbone, e.pamr) not in seen:
            seen.add((e.card, e.title, e.backbone, e.pamr))
            lines.append(f'{r.label}: published "{e.title}" from {method_source(e)}' + (f'; {e.note}' if e.note
                                                                                           else '') + '.')
    if table.group_by == 'family':
        devices = sorted({d for r in table.rows for d in r.devices()})
        lines.append('Params: image tower (and a method\'s own model) in millions; img/s: images over wall time '
                     f'of the row\'s records, measured on {", ".join(devices) or "n/a"}.')
    return lines + table.notes + (table.warnings if warnings else [])


def _family_cells(row: Row) -> List[str]:
    """Size, parameters (millions) and images/s of a row (the backbone table's extra columns)."""
    p, ips = row.params(), row.images_per_s()
    return [row.size, '-' if p is None else f'{p / 1e6:.0f}', '-' if ips is None else f'{ips:.2f}']


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
    family = table.group_by == 'family'
    extra = ['Size', 'Params (M)', 'img/s'] if family else []
    header = ['Method', 'Backbone'] + extra + [bench_title(b) for b in table.benchmarks] + [table.avg_header()]
    align = ['l', 'l'] + ['r'] * (len(extra) + len(table.benchmarks) + 1)
    out = ['## Results (mIoU, %)', '']
    for name, rows in table.groups():
        if name:
            out += [f'### {table.group_by}: {name}', '']
        body = [[r.method, r.backbone_title] + (_family_cells(r) if family else [])
                + [_combined(_cell_parts(table, r, b)) for b in table.benchmarks]
                + [_combined(_avg_parts(table, r))] for r in rows]
        out += _md_table(header, body, align) + ['']
    out += [f'{line}  ' for line in _legend(table)]
    out += [''] + card_markdown(table.card)
    if needs_row_cards(table):
        out += [''] + row_cards_markdown(table)
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

# per-benchmark setting columns; prob_thd is a BENCH_FIELDS column (the run's own value) and the
# logit scale a row-level one, so the method setting's copies of those two are not repeated
CSV_SETTING_FIELDS = tuple(f for f, _ in SETTING_FIELDS if f not in ('logit_scale', 'prob_thd'))


def _row_protocol(row: Row, benchmarks: Sequence[str]) -> Dict[str, str]:
    """Row-level and per-benchmark protocol columns for one CSV row."""
    out = {}
    for f, _ in ROW_FIELDS:
        vals: Dict[object, List[str]] = OrderedDict()
        for b in benchmarks:
            if b in row.records:
                vals.setdefault(record_protocol(row.records[b])[f], []).append(b)
        out[f] = (show_value(next(iter(vals))) if len(vals) == 1 else
                  '; '.join(f'{show_value(v)} ({" ".join(bs)})' for v, bs in vals.items()))
    for b in benchmarks:
        p = record_protocol(row.records[b]) if b in row.records else {}
        for f, _ in BENCH_FIELDS:
            out[f'{b}_{f}'] = show_value(p[f]) if f in p else ''
        st = record_setting(row.records[b]) if b in row.records else {}
        for f in CSV_SETTING_FIELDS:
            out[f'{b}_{f}'] = '' if st.get(f) is None else str(st[f])
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
            w.writerow([cls] + [fmt(table.iou(cls, c), d) for c in table.columns])  # '-': undefined IoU
        w.writerow(['mIoU'] + [fmt(c.ours(table.benchmark), d) for c in table.columns])
        for f, _ in ROW_FIELDS + BENCH_FIELDS:
            w.writerow([f'protocol.{f}'] + [show_value(record_protocol(c.records[table.benchmark])[f])
                                            for c in table.columns])
        w.writerow(['protocol.off_protocol'] + [', '.join(protocol_deviations(c.records[table.benchmark]))
                                                for c in table.columns])
        return buf.getvalue()
    d = table.decimals
    ident = ['group', 'method', 'backbone', 'arch', 'pretrained', 'attn', 'residual', 'ffn', 'preset',
             'method_type', 'card', 'protocol', 'pamr', 'family', 'size', 'params', 'images_per_s']
    per_b = [f'{b}{s}' for b in table.benchmarks for s in ('', '_published', '_diff', '_quoted')]
    avg = ['avg', 'avg_published', 'avg_diff', 'avg_over']
    proto = [f for f, _ in ROW_FIELDS] + [f'{b}_{f}' for b in table.benchmarks
                                          for f in [f for f, _ in BENCH_FIELDS] + list(CSV_SETTING_FIELDS)
                                          + ['off_protocol']]
    w.writerow(ident + per_b + avg + proto)
    for r in table.rows:
        attn, res, ffn = r.last_block or ('', None, None)
        params, ips = r.params(), r.images_per_s()
        line = [r.group(table.group_by), r.method, r.backbone_title, r.arch, r.pretrained, attn,
                '' if res is None else onoff(res), '' if ffn is None else onoff(ffn), r.preset or '',
                r.method_type, r.card or '', r.protocol, onoff(r.pamr), r.family, r.size,
                '' if params is None else str(params), '' if ips is None else f'{ips:.4g}']
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


# an absolute path (a file vocabulary, a data root): a paper's footnote shows its file name only
_ABS_PATH = re.compile(r'(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s,;:()\[\]/\\]+[/\\])+([^\s,;:()\[\]/\\]+)')


def strip_abs_paths(text: str) -> str:
    """``/data/me/classes.txt`` -> ``classes.txt`` (no machine's paths in LaTeX footnotes)."""
    return _ABS_PATH.sub(r'\1', str(text))


def _tex_cell(parts: Tuple[str, str, str]) -> str:
    ours, pub, diff = parts
    if pub and diff:
        return f'{tex_escape(ours)}\\,{{\\scriptsize({tex_escape(pub)}, {tex_escape(diff)})}}'
    return tex_escape(ours)


def _tex_card(card: ProtocolCard) -> List[str]:
    text = '; '.join(tex_escape(strip_abs_paths(line)) for line in card.lines())
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
        out.append('\\par\\smallskip\\footnotesize\\raggedright '
                   + ' '.join(tex_escape(strip_abs_paths(n)) for n in notes))
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
    family = table.group_by == 'family'
    extra = ['Size', 'Params (M)', 'img/s'] if family else []
    header = (['Method', 'Backbone'] + extra + [tex_escape(bench_title(b)) for b in table.benchmarks]
              + [table.avg_header()])
    blocks = []
    for name, rows in table.groups():
        lines = [[tex_escape(r.method), tex_escape(r.backbone_title)]
                 + ([tex_escape(c) for c in _family_cells(r)] if family else [])
                 + [_tex_cell(_cell_parts(table, r, b)) for b in table.benchmarks]
                 + [_tex_cell(_avg_parts(table, r))] for r in rows]
        blocks.append((f'{table.group_by}: {name}' if name else '', lines))
    notes = _legend(table, warnings=False)   # runner warnings name files: the Markdown has them
    if needs_row_cards(table):
        notes = notes + ['Protocol of each row: ' + ' | '.join(row_card_summary(r, table.benchmarks)
                                                               for r in table.rows) + '.']
    out = _tex_env('Open-vocabulary semantic segmentation, mIoU (\\%).', 'tab:results',
                   'll' + 'r' * (len(extra) + len(table.benchmarks) + 1), header, blocks, table.card, notes)
    for t in per_class:
        out += [''] + to_latex(t).rstrip('\n').split('\n')
    return '\n'.join(out) + '\n'

