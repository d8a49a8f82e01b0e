"""Shared passes against one run at a time, side by side in one process (``--sweep-ratio``).

Writes a synthetic copy of each benchmark a suite needs, plans the suite's runs
as ``tools/benchmark.py`` does (random weights of the chosen backbone, CPU
threads as configured), then times:

* *shared*: each work unit through ``evaluation.passes.run_pass``;
* *separate*: each run through ``apis.evaluate`` (what ``tools/test.py`` runs,
  without the process start-up the real ``--no-share`` path adds, so the ratio
  is a lower bound);

checks that every run's record has the same areas and mIoU both ways, and
prints the wall-time ratio with the FLOP model's expectation, the CPU model
and the load average. Text classifiers are built once beforehand (in the
usual text cache), so neither side pays the cold text cost; on a CPU that
first build takes minutes per vocabulary (80 templates), a second call none.
"""
import os.path as osp
import shutil
import tempfile
import time
from typing import Callable, Optional, Sequence, Tuple

from ..apis import evaluate
from ..apis.inference import init_segmentor
from ..evaluation.passes import run_pass
from ..protocol.benchmarks import BENCHMARKS
from ..records import atomic_write_json, load_record
from ..suites import suite_runs
from ..sweep.plan import plan_runs
from ..sweep.units import group_units
from ..synthetic import write_benchmark
from .inputs import load_average, machine_info


def _data_roots(benchmarks: Sequence[str], folder: str, num_images: int, size: Tuple[int, int]) -> dict:
    """One synthetic tree per image set (VOC21 and VOC20 share theirs), keyed by benchmark."""
    roots, by_set = {}, {}
    for key in benchmarks:
        b = BENCHMARKS[key]
        root = by_set.setdefault(b.data_root, osp.join(folder, key))
        # every benchmark of a set writes into the set's tree: COCO-Object and COCO-Stuff have
        # their own label files next to the same images (same sizes, so any writer's images fit)
        write_benchmark(key, root, sizes=[size] * num_images, seed=0)
        roots[key] = root
    return roots


def measure_sharing(suite: str = 'ablation', benchmarks: Optional[Sequence[str]] = None, num_images: int = 4,
                    image_size: Tuple[int, int] = (375, 500), arch: str = 'ViT-B-16',
                    arch_file: Optional[str] = None, precision: str = 'fp32', max_runs: Optional[int] = None,
                    folder: Optional[str] = None, json_path: Optional[str] = None,
                    log: Callable[[str], None] = print) -> dict:
    """Time a suite with shared passes and one run at a time, in this process.

    Args:
        suite: a suite of ``clearclip_seg.suites`` (default the ablation grid).
        benchmarks: restrict to these benchmark keys (default: the suite's).
        num_images: synthetic images per image set.
        image_size: (h, w) of each synthetic image before the protocol's resize.
        arch, arch_file: the backbone (random weights).
        precision: ``fp32 | bf16 | fp16``.
        max_runs: keep only the first runs of the suite (a quick check).
        folder: where data, records and the text cache go (default: a temporary folder, removed).
        json_path: also write the figures there.
        log: where the lines go.

    Returns:
        ``shared_s``, ``separate_s``, ``ratio``, ``expected_ratio`` (FLOPs),
        ``runs``, ``units``, ``identical`` (every record's areas and mIoU equal) and ``machine``.
    """
    import torch

    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix='clearclip-sweep-ratio-')
    # the text cache is the usual one ($CLEARCLIP_CACHE): its keys include the (seeded, random)
    # weights' digest, so a second measurement skips the slow 80-template text encoding
    try:
        def suite_copy():  # each side plans (and records) its own runs
            runs = suite_runs(suite, benchmarks)[:max_runs] if max_runs else suite_runs(suite, benchmarks)
            for r in runs:
                r.suite = suite
            return runs
        runs = suite_copy()
        roots = _data_roots(sorted({r.benchmark for r in runs}), osp.join(folder, 'data'), num_images, image_size)
        if arch_file:  # a JSON architecture is registered under its file name
            arch = osp.splitext(osp.basename(arch_file))[0]
        extra = [f'model.clip.arch={arch}', f'model.clip.arch_file={arch_file}' if arch_file else None,
                 'model.clip.pretrained=None', f'model.clip.precision={precision}',
                 'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
        extra = [e for e in extra if e]
        planned = {side: plan_runs(suite_copy(), osp.join(folder, side), roots,
                                   extra + ['default_hooks.logger.interval=1000'])
                   for side in ('shared', 'separate')}
        units = group_units(planned['shared'])
        machine = machine_info('cpu')
        log(f"{suite}: {len(runs)} runs in {len(units)} shared pass(es), {num_images} images "
            f"{image_size[0]}x{image_size[1]} per image set, {arch or arch_file} {precision}, "
            f"{torch.get_num_threads()} threads on {machine.get('cpu')}")

        from mmengine.runner import set_random_seed
        for p in {p.benchmark: p for p in planned['shared']}.values():  # warm the text cache
            set_random_seed(0)  # the runs' seed (configs' randomness): the same random weights, the same cache key
            init_segmentor(p.config, device='cpu', cfg_options=p.options)
        load0 = load_average()
        t0 = time.perf_counter()
        for u in units:
            run_pass(u.runs, log=None)
        shared_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in planned['separate']:
            evaluate(p.config, p.options, work_dir=p.work_dir, record_path=p.record, run_info=p.info())
        separate_s = time.perf_counter() - t0
        load1 = load_average()
        identical = _same_records(planned['shared'], planned['separate'])
        trunk = sum(u.passes[0] for u in units)
        expected = sum(u.passes[1] for u in units) / trunk if trunk else None
        out = dict(suite=suite, runs=len(runs), units=len(units), num_images=num_images, image_size=image_size,
                   arch=arch or arch_file, precision=precision, shared_s=shared_s, separate_s=separate_s,
                   ratio=separate_s / shared_s, expected_ratio=expected, identical=identical,
                   loadavg_1min=[load0, load1], machine=machine)
        log(f'shared passes {shared_s:.1f}s, one run at a time {separate_s:.1f}s: {out["ratio"]:.2f}x '
            f'(FLOP model: {expected:.2f}x); records identical: {identical}; '
            f'load average {load0:.1f} -> {load1:.1f}')
        if json_path:
            atomic_write_json(out, json_path)
        return out
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def _same_records(a: Sequence, b: Sequence) -> bool:
    keys = ('area_intersect', 'area_union', 'area_pred', 'area_label', 'mIoU')
    for pa, pb in zip(a, b):
        ra, rb = load_record(pa.record), load_record(pb.record)
        if ra is None or rb is None or any(ra['metrics'][k] != rb['metrics'][k] for k in keys):
            return False
    return True
