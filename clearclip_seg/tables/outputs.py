"""Writing the requested output formats of a table into a directory."""
import os
from typing import List, Sequence

from ..atomic import atomic_write
from .build import MainTable, PerClassTable
from .formats import to_csv, to_latex, to_markdown
from .long import long_rows, to_long_csv, to_long_jsonl
from .plot import plot_main_table

# long: results_long.csv and results_long.jsonl (one row per run x benchmark x class, tables/long.py)
FORMATS = ('md', 'csv', 'tex', 'png', 'long')


def _write_text(path: str, text: str) -> None:
    atomic_write(path, text)


def write_outputs(table: MainTable, out_dir: str, formats: Sequence[str],
                  per_class: Sequence[PerClassTable] = ()) -> List[str]:
    """Write the requested formats into a directory.

    Args:
        table: The main table.
        out_dir: Output directory (created if needed).
        formats: Any of ``md``, ``csv``, ``tex``, ``png``, ``long``.
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
    if 'long' in formats:
        rows = long_rows(table)
        for name, text in (('results_long.csv', to_long_csv(rows)), ('results_long.jsonl', to_long_jsonl(rows))):
            p = os.path.join(out_dir, name)
            _write_text(p, text)
            written.append(p)
    return written

