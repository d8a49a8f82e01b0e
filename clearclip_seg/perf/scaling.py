"""Throughput against window batch (``max_windows``) and precision, with a plot.

Every (precision, max_windows) setting scores the same synthetic VOC-sized
images in one process; within a precision the settings are interleaved
(``measure_paths``), so load from other processes hits them alike. The CPU or
GPU model is printed beside the figures, and each precision's labels are
compared with fp32's.
"""
from typing import Optional, Sequence

import torch

from ..records import atomic_write_json
from .inputs import benchmark_slide, bf16_advice, build_segmentor, machine_info, synthetic_images, voc_sizes
from .paths import measure_paths


def throughput_grid(arch: Optional[str] = 'ViT-B-16', arch_file: Optional[str] = None,
                    precisions: Sequence[str] = ('fp32', 'bf16'), max_windows: Sequence[int] = (1, 2, 4, 8),
                    num_images: int = 3, device: Optional[str] = None, warmup: int = 1, repeats: int = 2,
                    min_run_time: float = 0.0, plot_path: Optional[str] = None, json_path: Optional[str] = None,
                    log=print) -> dict:
    """windows/s for every precision x ``max_windows``; optionally a PNG plot.

    ``arch`` None with ``arch_file``: the file's architecture. Timings are
    ``torch.utils.benchmark`` medians (``perf.paths.measure_paths``), each
    printed with its IQR, the CPU model and the peak memory of the case.

    Returns:
        ``dict(machine, rows=[{precision, max_windows, windows_per_s, images_per_s, time_s, iqr_s,
        achieved_gflops, peak_mib, label_agreement_vs_fp32}], plot)``.
    """
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    crop, stride, prob_thd = benchmark_slide('voc21')
    sizes = voc_sizes()[:num_images]
    info = machine_info(device)
    log(f"machine: {info.get('cpu')} ({info.get('cpus')} CPUs, torch threads {info['threads']}); "
        f"torch {info['torch']}, device {device}"
        + (f"; load average {info['loadavg_at_start'][0]:.2f}" if 'loadavg_at_start' in info else ''))
    if torch.device(device).type == 'cpu':
        log(bf16_advice(info.get('bf16_units')))
    cpu = f"{info.get('cpu') or device}, {info['threads']} threads"
    rows, labels_fp32 = [], None
    images = synthetic_images(sizes, device=device)
    for precision in precisions:
        seg = build_segmentor(arch, arch_file, precision, 'voc21', (crop, crop), (stride, stride), 1, prob_thd,
                              device)
        results = measure_paths(seg, images, list(max_windows), warmup=warmup, repeats=repeats,
                                min_run_time=min_run_time)
        labels = [seg.classify(l.float())[1] for l in results[0]['logits']]
        if labels_fp32 is None and precision == 'fp32':
            labels_fp32 = labels
        agree = None
        if labels_fp32 is not None:
            same = sum(int((a == b).sum()) for a, b in zip(labels, labels_fp32))
            agree = 100.0 * same / sum(a.numel() for a in labels)
        for r in results:
            best = r['times_s'].index(r['time_s'])
            rows.append(dict(precision=precision, max_windows=r['max_windows'], windows=r['windows'],
                             windows_per_s=r['windows_per_s'], images_per_s=r['images_per_s'],
                             time_s=r['time_s'], iqr_s=r['iqrs_s'][best], achieved_gflops=r['achieved_gflops'],
                             peak_mib=r['memory']['peak_mib'], timing_warning=r['timing_warning'],
                             label_agreement_vs_fp32=agree))
            log(f"{precision:>5} max_windows={r['max_windows']:<3} {r['windows_per_s']:.3f} windows/s "
                f"{r['images_per_s']:.3f} images/s (median {r['time_s']:.3f} s, IQR {r['iqrs_s'][best]:.3f} s) "
                f"{r['achieved_gflops']:.1f} GFLOP/s, peak {r['memory']['peak_mib']:.0f} MiB [{cpu}]"
                + (f'  labels vs fp32 {agree:.3f} %' if agree is not None else ''))
        del seg
    if plot_path:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for precision in precisions:
            pts = [r for r in rows if r['precision'] == precision]
            ax.plot([r['max_windows'] for r in pts], [r['windows_per_s'] for r in pts], marker='o', label=precision)
        ax.set_xscale('log', base=2)
        ax.set_xlabel('windows per encoder batch (max_windows)')
        ax.set_ylabel('windows/s (448x448)')
        ax.set_title(f"{arch or arch_file}, {info.get('cpu') or device}"[:60], fontsize=8)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_path, dpi=120)
        plt.close(fig)
        log(f'plot: {plot_path}')
    out = dict(machine=info, arch=arch, arch_file=arch_file, rows=rows, plot=plot_path)
    if json_path:
        atomic_write_json(out, json_path)
    return out
