"""The protocol card of every row: what each benchmark of a row ran under, read from its records.

Methods run their own protocols (SCLIP: short side 336, 224/112 windows cut to
whole patches, logit scale 40/50/65, ...), which vary per benchmark, so besides
the table's protocol card every row gets its own: resize, windows (or whole
image), patch fit, logit scale, prob_thd, area_thd, PAMR and vocabulary per
benchmark. Values that differ from the row's protocol (its card's own setting,
or the common one) carry ``OFF_MARK``.
"""
from collections import OrderedDict
from typing import Dict, List

from .build import MainTable, Row
from .labels import bench_title
from .methods import SETTING_FIELDS, method_run, record_setting, setting_values

OFF_MARK = '*'


def _protocol_name(row: Row) -> str:
    if row.card is None:
        return "ClearCLIP's protocol" + (' + PAMR' if row.pamr else '')
    if row.protocol == 'common':
        return 'common protocol' + (' + PAMR' if row.pamr else '')
    return 'own protocol'   # PAMR on or off: the row's label and its PAMR line say which


def row_card(row: Row) -> Dict[str, Dict[str, str]]:
    """benchmark -> field -> value text (marked where it differs from the row's protocol)."""
    out: Dict[str, Dict[str, str]] = OrderedDict()
    for b, rec in row.records.items():
        got = record_setting(rec)
        mr = method_run(rec)
        want = setting_values(mr.expected) if mr is not None else {}
        cells = {}
        for f, _ in SETTING_FIELDS:
            text = 'n/a' if got.get(f) is None else str(got[f])
            if f in want and got.get(f) is not None and str(got[f]) != str(want[f]) and f != 'pamr':
                text += OFF_MARK
            cells[f] = text
        out[b] = cells
    return out


def row_card_summary(row: Row, order: List[str]) -> str:
    """One line: each field's most common value, with the benchmarks that differ in parentheses."""
    card = row_card(row)
    parts = []
    for f, label in SETTING_FIELDS:
        values: Dict[str, List[str]] = OrderedDict()
        for b in order:
            if b in card:
                values.setdefault(card[b][f], []).append(bench_title(b))
        if not values:
            continue
        ranked = sorted(values.items(), key=lambda kv: -len(kv[1]))
        text = f'{label} {ranked[0][0]}'
        if len(ranked) > 1:
            text += ' (' + '; '.join(f'{", ".join(bs)}: {v}' for v, bs in ranked[1:]) + ')'
        parts.append(text)
    return f'{row.label} [{_protocol_name(row)}]: ' + ', '.join(parts)


def needs_row_cards(table: MainTable) -> bool:
    """Rows of registered methods or with PAMR: their protocols differ, so each row gets its card."""
    return any(r.card is not None or r.pamr for r in table.rows)


def row_cards_markdown(table: MainTable) -> List[str]:
    """One small Markdown table per row (fields x benchmarks)."""
    out = ['**Protocol of each row** (from the records; '
           f'{OFF_MARK} = differs from the row\'s protocol):', '']
    for row in table.rows:
        benches = [b for b in table.benchmarks if b in row.records]
        card = row_card(row)
        named = row.card is not None and row.protocol == 'common'   # the label says so already
        header = [row.label + ('' if named else f' ({_protocol_name(row)})')] + [bench_title(b) for b in benches]
        lines = ['| ' + ' | '.join(h.replace('|', '\\|') for h in header) + ' |',
                 '|' + '|'.join([':---'] * len(header)) + '|']
        for f, label in SETTING_FIELDS:
            lines.append('| ' + ' | '.join([label] + [card[b][f] for b in benches]) + ' |')
        out += lines + ['']
    return out
