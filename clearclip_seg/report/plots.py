"""The report's plots as inline SVG (matplotlib, imported only when plotting)."""
import io
import os
import tempfile
from typing import List, Optional, Tuple

from ..tables.build import MainTable
from ..tables.plot import plot_main_table


def _svg_only(text: str) -> str:
    """The ``<svg>`` element of an SVG file (no XML prolog or doctype: it goes inside the page)."""
    return text[text.index('<svg'):]


def _rc():
    import matplotlib
    matplotlib.use('Agg')
    # text as text (small, selectable), a fixed salt: the same records give the same page
    return matplotlib.rc_context({'svg.fonttype': 'none', 'svg.hashsalt': 'clearclip-seg-report'})


def miou_svg(table: MainTable) -> str:
    """mIoU per benchmark and average, one bar per row, published numbers as black ticks (ids ``published-N``)."""
    with _rc():
        fd, path = tempfile.mkstemp(suffix='.svg')
        os.close(fd)
        try:
            plot_main_table(table, path)
            with open(path, encoding='utf-8') as f:
                return _svg_only(f.read())
        finally:
            os.unlink(path)


def speed_points(table: MainTable) -> List[Tuple[str, float, float, str]]:
    """(row label, images/s, mean mIoU, device) of every row with timing and all the table's benchmarks."""
    out = []
    for r in table.rows:
        ips = r.images_per_s()
        avg, have = table.avg(r)
        if ips is not None and avg is not None and len(have) == len(table.avg_over):
            out.append((r.label, ips, avg, ', '.join(r.devices())))
    return out


def speed_svg(table: MainTable) -> Optional[str]:
    """Images/s against mean mIoU per row (method or backbone); None when fewer than one row has timing."""
    pts = speed_points(table)
    if not pts:
        return None
    import matplotlib.pyplot as plt
    with _rc():
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        cmap = plt.get_cmap('tab10' if len(pts) <= 10 else 'tab20')
        for i, (label, ips, avg, _) in enumerate(pts):
            ax.scatter([ips], [avg], color=cmap(i % cmap.N), label=label, s=36, zorder=3, gid=f'speed-{i}')
        speeds = [p[1] for p in pts]
        log = max(speeds) > 10 * min(speeds)   # a log axis only where the speeds span a decade
        if log:
            ax.set_xscale('log')
        devices = ', '.join(sorted({p[3] for p in pts}))
        ax.set_xlabel(f'images/s ({"log; " if log else ""}from the records\' timing on {devices})')
        ax.set_ylabel(f'mean mIoU over {len(table.avg_over)} benchmark(s) (%)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
        buf = io.StringIO()
        fig.savefig(buf, format='svg', bbox_inches='tight')
        plt.close(fig)
    return _svg_only(buf.getvalue())
