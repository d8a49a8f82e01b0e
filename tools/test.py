#!/usr/bin/env python
"""Evaluate a ClearCLIP-Seg config: prints mIoU / aAcc / mAcc and writes one JSON record.

    python tools/test.py CONFIG [--work-dir DIR] [--cfg-options k=v ...]
                                [--launcher none|pytorch] [--record PATH]
                                [--out DIR [--format-only]]

``--out DIR`` also saves the predicted label maps, one ``<image stem>.png`` per
image in MMSeg's convention (8-bit class ids, 16-bit past 255 classes; on
``reduce_zero_label`` datasets the dataset's own values, class i saved as i + 1);
``tools/score.py DIR --config CONFIG`` scores them later into the same record.
``--format-only`` saves them without scoring (no record). Exit code 2 for bad input.

Multi-GPU: ``torchrun --nproc_per_node=N tools/test.py CONFIG --launcher pytorch``
(or ``tools/dist_test.sh CONFIG N``). Without a GPU it runs on the CPU.
The work is done by ``clearclip_seg.apis.evaluate``.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    from clearclip_seg.checks import strict_dict_action
    parser = argparse.ArgumentParser(description='Evaluate a ClearCLIP-Seg config (mIoU + JSON record)')
    parser.add_argument('config', help='config file, e.g. configs/clearclip/clearclip_vit-b16_voc21.py')
    parser.add_argument('--work-dir', help='where logs and the record go (default work_dirs/<config name>)')
    parser.add_argument('--record', help='record path (default <work-dir>/record.json)')
    parser.add_argument('--cfg-options', nargs='+', action=strict_dict_action(), default={},
                        help='override config keys, e.g. model.last_block.attn=qk model.prob_thd=0.2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--show-dir', help='save image | ground truth | prediction panels here')
    parser.add_argument('--show-n', type=int, default=None, help='with --show-dir: at most this many images')
    parser.add_argument('--out', help='also save the predicted label maps here (one PNG per image, MMSeg\'s '
                                      'convention; tools/score.py scores them later)')
    parser.add_argument('--format-only', action='store_true',
                        help='with --out: save the predictions without scoring them (no record)')
    parser.add_argument('--run-info', default=None, help='JSON object stored as the record\'s "run" (tools/benchmark.py)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def print_summary(record, path):
    m, t = record['metrics'], record['timing']
    print(f"\n{record['benchmark'] or record['config']['path']}: "
          f"mIoU {m['mIoU']:.2f}  aAcc {m['aAcc']:.2f}  mAcc {m['mAcc']:.2f}  "
          f"({record['dataset']['num_images']} images, {t['wall_s']:.1f}s, {t['images_per_s']:.2f} img/s)")
    print(f'record: {path}')


def parse_run_info(text):
    """``--run-info``: a JSON object (None when not given)."""
    from clearclip_seg.apis import ConfigError
    if text is None:
        return None
    shown = text if len(text) <= 80 else text[:77] + '...'
    try:
        info = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"--run-info '{shown}' is not JSON ({e})") from None
    if not isinstance(info, dict):
        raise ConfigError(f"--run-info '{shown}': expected a JSON object, e.g. '{{\"name\": \"r1\"}}'")
    return info


def main(argv=None):
    args = parse_args(argv)
    from clearclip_seg.apis.config import quiet_known_warnings
    quiet_known_warnings()
    from clearclip_seg.apis import ConfigError, evaluate
    try:
        record = evaluate(args.config, cfg_options=args.cfg_options, work_dir=args.work_dir,
                          record_path=args.record, launcher=args.launcher, show_dir=args.show_dir,
                          show_n=args.show_n, run_info=parse_run_info(args.run_info), predictions=args.out,
                          format_only=args.format_only)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # an output folder that filled up or went away mid-run
        where = f" '{e.filename}'" if e.filename else ''
        print(f'error: cannot write{where}: {e.strerror or e}', file=sys.stderr)
        sys.exit(2)
    if record is not None and record.get('format_only'):
        print(f"\n{record['benchmark'] or args.config}: {record['num_images']} predictions saved in "
              f"{record['predictions']} (format only: not scored, no record)")
    elif record is not None:
        print_summary(record, record['_path'])
        if args.out:
            print(f'predictions: {os.path.abspath(args.out)}')
    return record


if __name__ == '__main__':
    main()
