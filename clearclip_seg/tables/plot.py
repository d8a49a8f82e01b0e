"""PNG bar plot of the main table (matplotlib is imported only when plotting)."""
import os
import textwrap

from .build import MainTable
from .labels import bench_title
from .protocol import ROW_FIELDS


def plot_title(table: MainTable) -> str:
    """The plot's title: the protocol, and how many runs (records) left the published one."""
    c = table.card.common
    title = 'mIoU per benchmark; protocol: ' + ', '.join(
        f'{label} {c[f]}' if len(c[f]) < 40 else f'{label} varies' for f, label in ROW_FIELDS if f in c)
    runs = sum(len(r.records) for r in table.rows)
    off = sum(len(r.off_protocol) for r in table.rows)   # runs, not (run, difference) lines
    if off:
        title += f' ({off} of {runs} run{"s" if runs != 1 else ""} off the published protocol)'
    return title


def plot_main_table(table: MainTable, path: str) -> str:
    """Bar plot of our mIoU per benchmark (and the average), published values marked.

    One bar per model in each benchmark group; a black tick marks the
    published number where one exists. With ``group_by`` each group gets its
    own panel (e.g. ``preset``: backbones compared within each method;
    ``backbone``: methods compared within each backbone).

    Args:
        table: The main table.
        path: File to write: PNG, or SVG (by its extension; the report inlines the SVG).

    Returns:
        ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    groups = table.groups()
    cols = table.benchmarks + ['avg']
    titles = [bench_title(b) for b in table.benchmarks] + ['Avg']
    nmax = max(len(rows) for _, rows in groups)
    width = max(6.0, 0.9 + len(cols) * (0.35 + 0.22 * nmax))
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, 3.6 * len(groups) + 0.6), squeeze=False)
    cmap = plt.get_cmap('tab10' if nmax <= 10 else 'tab20')
    n_pub = 0
    for ax, (name, rows) in zip(axes[:, 0], groups):
        n = len(rows)
        bw = 0.8 / max(n, 1)
        drew_pub = False
        for i, r in enumerate(rows):
            xs, ys, pubs = [], [], []
            for j, b in enumerate(cols):
                if b == 'avg':
                    v, have = table.avg(r)
                    if v is not None and len(have) < len(table.avg_over):
                        v = None   # partial averages are not comparable: not drawn
                    p = table.avg_published(r)
                else:
                    v, p = r.ours(b), r.published.get(b)
                if v is None:
                    continue
                x = j - 0.4 + bw * (i + 0.5)
                xs.append(x)
                ys.append(v)
                if p is not None:
                    pubs.append((x, p))
            ax.bar(xs, ys, bw * 0.92, label=r.label, color=cmap(i % cmap.N))
            for x, p in pubs:
                (tick,) = ax.plot([x - bw * 0.46, x + bw * 0.46], [p, p], color='black', lw=1.6,
                                  label=None if drew_pub else 'published')
                tick.set_gid(f'published-{n_pub}')   # an SVG id: the report's tests count the marks
                n_pub += 1
                drew_pub = True
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(titles, rotation=20, ha='right')
        ax.set_ylabel('mIoU (%)')
        ax.set_xlim(-0.6, len(cols) - 0.4)
        ax.grid(axis='y', alpha=0.3)
        ax.set_axisbelow(True)
        if name:
            ax.set_title(f'{table.group_by}: {name}', fontsize=10)
        ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(textwrap.fill(plot_title(table), int(width * 13)), fontsize=8)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches='tight')
    plt.close(fig)
    return path

