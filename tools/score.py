#!/usr/bin/env python
"""Score saved predictions (``tools/test.py CONFIG --out DIR``) later: the same metric, the same record.

    python tools/score.py PRED_DIR --config CONFIG [--cfg-options k=v ...]
                                   [--work-dir DIR] [--record PATH]

PRED_DIR holds one ``<image stem>.png`` per image of the config's benchmark, as
``tools/test.py --out`` writes them (MMSeg's convention). The benchmark's labels
are read and checked exactly as in a live run, and the record (printed summary,
``<work-dir>/record.json`` or ``--record``) equals the live run's record but for
its creation time, timing and ``predictions`` (the folder scored). Give the same
``--cfg-options`` as the live run. Exit code 2 for bad input (a missing folder or
prediction file, a prediction of the wrong size), with a one-line error.
The work is done by ``clearclip_seg.apis.score_predictions``.
"""
import argparse
import sys


def parse_args(argv=None):
    from clearclip_seg.checks import strict_dict_action
    p = argparse.ArgumentParser(description='Score saved predictions with the same metric and record as tools/test.py')
    p.add_argument('predictions', metavar='PRED_DIR', help='folder of predicted label maps (tools/test.py --out)')
    p.add_argument('--config', required=True, help='the config the predictions were made with')
    p.add_argument('--cfg-options', nargs='+', action=strict_dict_action(), default={},
                   help='the live run\'s overrides, e.g. test_dataloader.dataset.data_root=/data/VOC2012')
    p.add_argument('--work-dir', help='where the record goes (default work_dirs/<config name>)')
    p.add_argument('--record', help='record path (default <work-dir>/record.json)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from clearclip_seg.apis.config import quiet_known_warnings
    quiet_known_warnings()
    from clearclip_seg.apis import ConfigError, score_predictions
    try:
        record = score_predictions(args.predictions, args.config, cfg_options=args.cfg_options,
                                   work_dir=args.work_dir, record_path=args.record)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        where = f" '{e.filename}'" if e.filename else ''
        print(f'error: cannot write{where}: {e.strerror or e}', file=sys.stderr)
        sys.exit(2)
    m = record['metrics']
    print(f"{record['benchmark'] or args.config}: mIoU {m['mIoU']:.2f}  aAcc {m['aAcc']:.2f}  mAcc {m['mAcc']:.2f}  "
          f"({record['dataset']['num_images']} images scored from {record['predictions']})")
    print(f"record: {record['_path']}")
    return record


if __name__ == '__main__':
    main()
