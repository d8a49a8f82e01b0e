"""A static HTML report of a sweep: one folder that opens offline in any browser.

``write_report(records, out_dir)`` writes ``out_dir/index.html`` (inline CSS,
JS and SVG plots; no network) and ``out_dir/images/`` (the qualitative panels,
where runs saved them). Sections:

- the paper-layout main table (published number and difference per benchmark
  and average), the methods table (own and common protocol side by side, each
  row's protocol card in a details row), the backbone table grouped by family;
- the ablation as the paper's grid (attention x residual x FFN);
- per-class IoU of every run (sortable), and the classes that differ most
  between two runs (preset by ``compare``, changeable with select boxes);
- plots: mIoU per benchmark with published markers; images/s against mIoU;
- qualitative panels (image | ground truth | each run's prediction);
- the provenance of every number.

One job per module: ``html`` (page, tables, CSS/JS), ``sections`` (tables),
``classes`` (per-class and comparison), ``plots`` (SVG), ``panels`` (pictures),
``provenance``. ``tools/report.py`` is the command line.
"""
import os
from typing import Optional, Sequence

from ..atomic import atomic_write
from ..tables.build import build_main_table
from ..tables.labels import bench_title
from ..tables.records import Record, warn_stderr
from .classes import class_data, compare_html, per_class_html
from .html import esc, page
from .panels import find_show_dirs, panels_html
from .plots import miou_svg, speed_svg
from .provenance import is_random, provenance_html
from .sections import ablation_html, methods_table_html, paper_table_html, records_of, split_rows, sub_table

RANDOM_BANNER = ('These numbers come from random weights (runs without pretrained CLIP weights, e.g. the tiny '
                 'test model): they show what the report looks like, not how well any method segments.')


def write_report(records: Sequence[Record], out_dir: str, compare: Optional[Sequence[str]] = None,
                 show_dirs: Sequence[str] = (), decimals: int = 2, title: str = 'ClearCLIP-Seg results',
                 warn=warn_stderr) -> str:
    """Write the report folder.

    Args:
        records: Complete records (``clearclip_seg.tables.load_records``).
        out_dir: Folder to write (created; ``index.html`` and ``images/`` are replaced).
        compare: Two runs preset in the comparison (``'row label | benchmark'`` or a unique part).
        show_dirs: ``RUN=DIR`` items naming the ``--show-dir`` folder of runs whose panels are
            not under their record's folder.
        decimals: Decimals of our numbers (1 or 2).
        title: The page's title.
        warn: Called with one-line messages (records dropped as duplicates).

    Returns:
        The path of ``index.html``.

    Raises:
        RecordError: A ``compare`` or ``show_dirs`` item matches no run (or several).
    """
    table = build_main_table(records, decimals=decimals, warn=warn)
    data = class_data(table)
    compare_section = compare_html(data, compare, decimals)   # bad --compare fails before anything is written
    dirs = find_show_dirs(table, show_dirs)
    os.makedirs(os.path.join(out_dir, 'images'), exist_ok=True)
    parts = split_rows(table)
    nav, sections = [], []

    def section(anchor: str, heading: str, body: str) -> None:
        nav.append((anchor, heading))
        sections.append(f'<section id="{anchor}"><h2>{esc(heading)}</h2>{body}</section>')

    runs = sum(len(r.records) for r in table.rows)
    intro = (f'<p>{runs} run(s), {len(table.rows)} row(s), benchmarks: '
             f'{esc(", ".join(bench_title(b) for b in table.benchmarks))}.</p>')
    if any(is_random(rec) for rec in records):
        intro = f'<div class="banner" id="random-weights">{esc(RANDOM_BANNER)}</div>' + intro
    sections.append(intro)
    main = sub_table(table, parts['main'])
    if main is not None:
        section('main', 'Main table', paper_table_html(main))
    methods = sub_table(table, parts['methods'])
    if methods is not None:
        section('methods', 'Methods: own and common protocol', methods_table_html(methods))
    if main is not None and len({r.backbone_title for r in main.rows}) > 1:
        section('backbones', 'Backbones by family', paper_table_html(sub_table(table, parts['main'], 'family'),
                                                                    family=True, ident='backbone-table'))
    if parts['ablation']:
        section('ablation', 'Ablation: attention x residual x FFN',
                ablation_html(sub_table(table, parts['ablation'])))
    plots = f'<div class="plot" id="plot-miou">{miou_svg(table)}</div>'
    speed = speed_svg(table)
    plots += (f'<h3>Speed against mIoU</h3><div class="plot" id="plot-speed">{speed}</div>' if speed else
              '<p class="note">No row has timing on all benchmarks: no speed plot.</p>')
    section('plots', 'Plots', plots)
    section('per-class', 'Per-class IoU', per_class_html(table))
    section('compare', 'Classes that differ most between two runs', compare_section)
    panels = panels_html(table, out_dir, dirs)
    if panels:
        section('panels', 'Qualitative panels', panels)
    section('provenance', 'Provenance', provenance_html(table, os.curdir))
    html_text = page(title, nav, sections, data)
    path = os.path.join(out_dir, 'index.html')
    atomic_write(path, html_text)
    return path
