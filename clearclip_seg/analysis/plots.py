"""The analysis figures (norms, entropy, per-component mIoU) and its summary table."""
import os.path as osp
from typing import List

MODE_TITLES = {'qk': 'q-k (CLIP)', 'qq': 'q-q (ClearCLIP)', 'kk': 'k-k', 'vv': 'v-v',
               'qq+kk': 'qq+kk (SCLIP)', 'identity': 'identity (MaskCLIP)'}


def _bars(ax, modes, series, colors=None):
    import numpy as np
    x = np.arange(len(modes))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        vals = [float('nan') if v is None else v for v in values]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=label,
               color=None if colors is None else colors[k])
    ax.set_xticks(x)
    ax.set_xticklabels([MODE_TITLES.get(m, m) for m in modes], rotation=20, ha='right', fontsize=8)


def plot_figures(analysis: dict, out_dir: str, title: str = '', benchmark: str = '') -> List[str]:
    """Write norms.png, entropy.png and (with mIoU) miou.png.

    Args:
        analysis: a record's ``analysis`` section.
        out_dir: where the files go.
        title: second line of every title (e.g. the model).
        benchmark: named in the mIoU title.

    Returns:
        The paths written.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    modes = analysis['modes']
    paths = []
    suffix = f"\n{title}" if title else ''

    def save(fig, name):
        fig.tight_layout()
        paths.append(osp.join(out_dir, name))
        fig.savefig(paths[-1])
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    norms = analysis['norms']
    _bars(ax, modes, {'||X_res||_F': [norms[m]['x_res'] for m in modes],
                      '||X_attn||_F': [norms[m]['x_attn'] for m in modes]}, ['#4c72b0', '#dd8452'])
    vals = [v for m in modes for v in (norms[m]['x_res'], norms[m]['x_attn']) if v > 0]
    if vals and max(vals) / min(vals) > 20:
        ax.set_yscale('log')
    ax.set_ylabel('Frobenius norm')
    ax.set_title(f"Last-block component norms ({analysis['num_images']} images){suffix}", fontsize=9)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    save(fig, 'norms.png')

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    _bars(ax, modes, {'normalised entropy': [analysis['entropy'][m]['mean'] for m in modes]}, ['#55a868'])
    for bars in ax.containers:
        ax.bar_label(bars, fmt='%.3f', fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel('-sum p log p / log N')
    ax.set_title(f"Attention entropy, mean over heads and queries{suffix}", fontsize=9)
    save(fig, 'entropy.png')

    if 'miou' in analysis:
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
        miou = analysis['miou']
        _bars(ax, modes, {s: [miou[m][s] for m in modes] for s in ('x_res', 'x_attn', 'x_res+x_attn')},
              ['#4c72b0', '#dd8452', '#8172b3'])
        ax.set_ylabel('mIoU (%)')
        ax.set_title(f"Segmentation from each component ({benchmark or 'benchmark'}){suffix}", fontsize=9)
        ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
        save(fig, 'miou.png')
    return paths


def format_summary(analysis: dict) -> str:
    """One line per mode: norms, entropy and (when measured) the three mIoUs."""
    modes = analysis['modes']
    has_miou = 'miou' in analysis
    lines = [f"{'mode':<10} {'|X_res|':>10} {'|X_attn|':>10} {'entropy':>8}"
             + (f" {'mIoU res':>9} {'mIoU attn':>9} {'mIoU sum':>9}" if has_miou else '')]

    def f(v):
        return f'{"nan":>9}' if v is None else f'{v:9.2f}'
    for m in modes:
        line = (f"{m:<10} {analysis['norms'][m]['x_res']:10.2f} {analysis['norms'][m]['x_attn']:10.2f} "
                f"{analysis['entropy'][m]['mean']:8.4f}")
        if has_miou:
            mi = analysis['miou'][m]
            line += f" {f(mi['x_res'])} {f(mi['x_attn'])} {f(mi['x_res+x_attn'])}"
        lines.append(line)
    return '\n'.join(lines)
