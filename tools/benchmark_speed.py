#!/usr/bin/env python
"""Speed, FLOP-efficiency and memory figures for ClearCLIPSegmentor (no pass/fail).

Builds a segmentor with random weights (``pretrained=None``) under a
benchmark's protocol (default voc21: crop 448 / stride 224, images whose
short side was resized to 448) and measures, on synthetic normalised images:

* images/s and windows/s of the batched path (``--max-windows``, default
  ``auto``: the segmentor's own default, 1 for fp32 on a CPU, so the default
  path is the one timed) and, with ``--baseline``, of the plain
  one-window-at-a-time path (``max_windows=1``) on the same inputs, with their
  speed ratio, the argmax agreement and the max abs difference of the query
  logits;
* the encoder's achieved GFLOP/s (ViT FLOPs counted analytically) against a
  ``torch.matmul`` peak measured on the same device and dtype in the same run;
* peak memory (CPU: resident-set high-water mark, reset per phase where the
  kernel allows; GPU: ``torch.cuda.max_memory_allocated``);
* the text-classifier build time, cold (fresh cache folder) and cached;
* with ``--compare-precision``: fp32 against a low precision on the same images.

Examples::

    python tools/benchmark_speed.py --baseline                       # ViT-B-16, voc21, fp32 on CPU
    python tools/benchmark_speed.py --compare-precision --precision bf16 --skip-text
    python tools/benchmark_speed.py --precision bf16 --max-windows 4 --profile --vocab coco_stuff164k  # where the time goes
    python tools/benchmark_speed.py --text-templates a_photo_of --skip-images
    python tools/benchmark_speed.py --arch ViT-L-14 --vocab cityscapes --image-size 1024x2048 \\
        --protocol-resize --num-images 1 --baseline --skip-text       # Cityscapes protocol: 448x896
    python tools/benchmark_speed.py --arch ViT-L-14 --image-size 1024x2048 --crop 224 --stride 224 \\
        --vocab cityscapes --num-images 1 --warmup 0 --skip-text      # full frame: memory peak
    python tools/benchmark_speed.py --arch-file tests/assets/clearclip-tiny-vit.json --num-images 1 --baseline
    python tools/benchmark_speed.py --gpu-check            # < 5 min on one GPU; --tiny on a CPU
    python tools/benchmark_speed.py --sweep-ratio --num-images 4    # ablation: shared passes vs one run at a time
    python tools/benchmark_speed.py --methods --num-images 2        # every method's images/s relative to ClearCLIP
    python tools/benchmark_speed.py --methods naclip resclip --methods-protocol own   # under their own protocols
    python tools/benchmark_speed.py --methods proxyclip gem --stages --arch-file tests/assets/tiny12oa.json
        # where a method's time goes: trunk blocks, VFM forward, the method's rest, classify, text

Everything printed is also written to ``--json OUT``. The measurements live
in ``clearclip_seg.perf`` (``speed_report`` and its pieces).

Timings are ``torch.utils.benchmark`` measurements (median and IQR over blocks
of calls, ``--min-run-time`` seconds each); two timings of the same thing in one
run that differ by more than their noise give a warning. The CPU model is
printed beside every speed figure, and the peak memory of each case.
``--scaling`` and ``--methods`` take ``--arch``/``--arch-file`` like the rest;
``--methods`` alone measures every method card.

On a shared machine, compare figures within one run: the tool interleaves the
settings it compares, keeps the best of ``--repeats`` and prints the process
CPU time and the load average alongside the wall time.
"""
import argparse

from clearclip_seg.perf import DTYPES, parse_size, speed_report


def _size(text: str):
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _max_windows(text: str):
    if text == 'auto':
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'auto' or an integer >= 1") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Speed / FLOP / memory figures of ClearCLIPSegmentor '
                                            '(random weights, synthetic images).')
    p.add_argument('--arch', default=None, help='open_clip architecture (default ViT-B-16, or the --arch-file one)')
    p.add_argument('--arch-file', default=None, help='JSON architecture to register (e.g. the tiny test one)')
    p.add_argument('--precision', default='fp32', choices=list(DTYPES))
    p.add_argument('--compare-precision', action='store_true',
                   help='also run fp32 and the low --precision (bf16 on CPU / fp16 on GPU if --precision is '
                        'fp32) on the same images: speed-up and agreement with fp32')
    p.add_argument('--device', default=None, help='cpu | cuda (default: cuda when available)')
    p.add_argument('--vocab', default='voc21', help='benchmark key / vocabulary of the image runs (default voc21); '
                                                    'sets crop, stride and prob_thd unless given')
    p.add_argument('--crop', type=int, default=None)
    p.add_argument('--stride', type=int, default=None)
    p.add_argument('--max-windows', type=_max_windows, default='auto',
                   help="windows per encoder batch (default 'auto': the segmentor's own default for the device "
                        'and precision, so the default path is the one timed)')
    p.add_argument('--min-run-time', type=float, default=0.0,
                   help='seconds of calls per torch.utils.benchmark measurement (default 0: one block)')
    p.add_argument('--baseline', action='store_true', help='also time the plain path (max_windows=1)')
    p.add_argument('--image-size', type=_size, action='append', default=None, metavar='HxW',
                   help='segmentor input size(s), repeatable (default 448x597, 597x448, 448x448: VOC after '
                        'the resize); add --protocol-resize to treat them as raw image sizes')
    p.add_argument('--protocol-resize', action='store_true',
                   help='resize the --image-size sizes as the protocol does (short side 448, long <= 2048)')
    p.add_argument('--num-images', type=int, default=3, help='images (the sizes are cycled; default 3)')
    p.add_argument('--warmup', type=int, default=1, help='untimed passes over the images first (default 1)')
    p.add_argument('--repeats', type=int, default=1, help='timed passes; the best is kept (default 1)')
    p.add_argument('--skip-images', action='store_true', help='only the text-classifier timing')
    p.add_argument('--skip-encoder-only', action='store_true', help='skip the encoder-only timing')
    p.add_argument('--profile', action='store_true',
                   help='also break one batched pass down by kind of work (matmul, attention kernel, GELU, '
                        'layer norm, copies, window resize, sums) with torch.profiler')
    p.add_argument('--skip-text', action='store_true', help='skip the text-classifier timing')
    p.add_argument('--text-vocab', default='coco_stuff164k', help='vocabulary of the text timing (default '
                                                                  'coco_stuff164k: 171 classes)')
    p.add_argument('--text-templates', default=None,
                   help="templates of the text timing (default: the protocol's, openai_imagenet, 80; a_photo_of = 1)")
    p.add_argument('--matmul-size', type=int, default=None, help='n of the n x n matmul peak (default 2048 '
                                                                 'CPU / 8192 GPU)')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, metavar='OUT', help='write every figure to this JSON file')
    g = p.add_argument_group('GPU check and shared-pass ratio (clearclip_seg.perf.gpu_check / sweep_ratio)')
    g.add_argument('--gpu-check', action='store_true',
                   help='ViT-B/16 and ViT-L/14 in fp32/fp16/bf16: images/s, windows/s, peak memory, fp16-vs-fp32 '
                        'labels, and the whole paper\'s estimated wall time with and without shared passes')
    g.add_argument('--tiny', action='store_true', help='with --gpu-check: a tiny random ViT (CPU, CI)')
    g.add_argument('--sweep-ratio', action='store_true',
                   help='time a suite with shared passes and one run at a time in this process (random weights, '
                        'synthetic data) and print the ratio; --suite, --benchmarks, --num-images, --max-runs')
    g.add_argument('--suite', default='ablation', help='with --sweep-ratio: the suite (default ablation)')
    g.add_argument('--benchmarks', default=None, help='with --sweep-ratio: comma-separated benchmark keys')
    g.add_argument('--max-runs', type=int, default=None, help='with --sweep-ratio: the first runs only')
    m = p.add_argument_group('Methods (clearclip_seg.perf.method_speed)')
    m.add_argument('--methods', nargs='*', default=None, metavar='CARD',
                   help='images/s of these method cards (none named: all) and ClearCLIP, ViT-B/16 random weights, '
                        'whole predictions on --num-images synthetic VOC-sized images; prints the CPU model')
    m.add_argument('--methods-protocol', choices=('common', 'own'), default='common',
                   help="with --methods: ClearCLIP's protocol for all (the method's own cost; default) or each "
                        "method's own (resize, windows, PAMR)")
    m.add_argument('--methods-benchmark', default='voc21', help='with --methods: whose configs (default voc21)')
    m.add_argument('--stages', action='store_true',
                   help='with --methods: also time one prediction per method by stage (trunk blocks, VFM forward, '
                        "the method's rest, classify, text classifier cold build)")
    p.add_argument('--scaling', default=None, metavar='PNG',
                   help='windows/s against max_windows (1, 2, 4, 8) for fp32 and bf16, plotted to PNG '
                        '(clearclip_seg.perf.scaling)')
    args = p.parse_args(argv)
    problem = check_counts(args)
    if problem:
        p.exit(2, f'error: {problem}\n')  # one line, exit code 2 (argparse's own error adds the usage)
    return args


# Count arguments and their least value: zero images or zero timed passes would report no figure
# (or divide by zero), a negative warmup is meaningless.
COUNTS = {'num_images': 1, 'repeats': 1, 'warmup': 0, 'max_windows': 1, 'crop': 1, 'stride': 1,
          'matmul_size': 1, 'threads': 1, 'max_runs': 1}


def check_counts(args) -> str:
    """The first count argument below its least value, as a one-line message ('' when all are fine)."""
    for key, least in COUNTS.items():
        value = getattr(args, key, None)
        if isinstance(value, int) and value < least:
            return (f'--{key.replace("_", "-")}={value}: expected an integer >= {least}'
                    + (' (images to time)' if key == 'num_images' else ' (timed passes)' if key == 'repeats'
                       else ''))
    return ''


def main(argv=None) -> dict:
    args = vars(parse_args(argv))
    if args['gpu_check']:
        from clearclip_seg.perf.gpu_check import gpu_check
        return gpu_check(device=args['device'], tiny=args['tiny'], json_path=args['json'])
    if args['scaling']:
        from clearclip_seg.perf.scaling import throughput_grid
        return throughput_grid(arch=args['arch'] or (None if args['arch_file'] else 'ViT-B-16'),
                               arch_file=args['arch_file'], device=args['device'], num_images=args['num_images'],
                               warmup=args['warmup'], repeats=args['repeats'], min_run_time=args['min_run_time'],
                               plot_path=args['scaling'], json_path=args['json'])
    if args['methods'] is not None:
        from clearclip_seg.perf.method_speed import method_speed
        return method_speed(args['methods'] or None, protocol=args['methods_protocol'],
                            benchmark=args['methods_benchmark'], arch=args['arch'], arch_file=args['arch_file'],
                            precision=args['precision'], device=args['device'], num_images=args['num_images'],
                            warmup=args['warmup'], repeats=args['repeats'], min_run_time=args['min_run_time'],
                            stages=args['stages'], seed=args['seed'], threads=args['threads'], json_path=args['json'])
    if args['sweep_ratio']:
        from clearclip_seg.perf.sweep_ratio import measure_sharing
        benchmarks = args['benchmarks'].split(',') if args['benchmarks'] else None
        return measure_sharing(args['suite'], benchmarks, num_images=args['num_images'],
                               arch=args['arch'] or (None if args['arch_file'] else 'ViT-B-16'),
                               arch_file=args['arch_file'], precision=args['precision'], max_runs=args['max_runs'],
                               json_path=args['json'])
    for key in ('gpu_check', 'tiny', 'sweep_ratio', 'suite', 'benchmarks', 'max_runs', 'scaling', 'methods',
                'methods_protocol', 'methods_benchmark', 'stages'):
        args.pop(key)
    args['protocol_resize_sizes'] = args.pop('protocol_resize')
    args['json_path'] = args.pop('json')
    return speed_report(**args)


if __name__ == '__main__':
    main()
