#!/usr/bin/env python
"""Evaluate a ClearCLIP-Seg config: prints mIoU / aAcc / mAcc and per-class IoU,
and writes one JSON record for the run.

    python tools/test.py CONFIG [--work-dir DIR] [--cfg-options k=v ...]
                                [--launcher none|pytorch] [--record PATH]

Multi-GPU: ``torchrun --nproc_per_node=N tools/test.py CONFIG --launcher pytorch``
(or ``tools/dist_test.sh CONFIG N``). Without a GPU it runs on the CPU.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Evaluate a ClearCLIP-Seg config (mIoU + JSON record)')
    parser.add_argument('config', help='config file, e.g. configs/clearclip/clearclip_vit-b16_voc21.py')
    parser.add_argument('--work-dir', help='where logs and the record go (default work_dirs/<config name>)')
    parser.add_argument('--record', help='record path (default <work-dir>/record.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. model.last_block.attn=qk model.prob_thd=0.2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--show-dir', help='save image | ground truth | prediction panels here')
    parser.add_argument('--show-n', type=int, default=None, help='with --show-dir: at most this many images')
    parser.add_argument('--run-info', default=None, help='JSON object stored as the record\'s "run" (tools/benchmark.py)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def fail(msg: str) -> None:
    print(f'error: {msg}', file=sys.stderr)
    sys.exit(2)


def check_data_root(cfg) -> None:
    """Refuse to start on a missing or empty data root, naming the fix."""
    from clearclip_seg.protocol.benchmarks import BENCHMARKS
    ds = cfg.test_dataloader.dataset
    root = ds.get('data_root') or ''
    img_dir = osp.join(root, ds.get('data_prefix', {}).get('img_path', ''))
    bench = BENCHMARKS.get(cfg.get('benchmark', ''))
    how = (f"prepare it with '{bench.prepare}' (see data/README.md)" if bench
           else 'see data/README.md for the expected layout')
    if not osp.isdir(img_dir) or not os.listdir(img_dir):
        fail(f"data root '{root}' has no images at '{img_dir}': {how}, "
             'or point test_dataloader.dataset.data_root at it with --cfg-options')


def unwrap(model):
    return getattr(model, 'module', model)


def check_vocabulary(model, dataset, cfg) -> None:
    classes = dataset.metainfo['classes']
    if model.num_classes != len(classes):
        fail(f"vocabulary '{model.vocabulary.name}' (model.vocabulary) has {model.num_classes} classes "
             f"but dataset {type(dataset).__name__} has {len(classes)}: use the benchmark's vocabulary "
             f"('{cfg.get('benchmark', '?')}') or a file with {len(classes)} lines")


def build_record(cfg, args, model, dataset, metrics, details, wall_s, world_size):
    import torch

    from clearclip_seg.records import RECORD_VERSION, git_commit, library_versions, now_iso
    voc = model.vocabulary
    tc = dict(model.test_cfg)
    n = len(dataset)
    enc = model.encoder
    return dict(
        record_version=RECORD_VERSION,
        complete=True,
        created=now_iso(),
        benchmark=cfg.get('benchmark'),
        method=cfg.get('method'),
        config=dict(path=osp.relpath(osp.abspath(args.config), ROOT), cfg_options=args.cfg_options,
                    resolved=cfg.pretty_text),
        model=dict(arch=model.arch, pretrained=model.pretrained, precision=model.precision,
                   last_block=dict(attn=enc.attn_mode, residual=enc.residual, ffn=enc.ffn),
                   vocabulary=dict(name=voc.name, digest=voc.digest(), num_classes=voc.num_classes,
                                   num_queries=len(voc.queries)),
                   templates=dict(name=model.template_spec, count=len(model.templates)),
                   logit_scale=model.logit_scale, prob_thd=model.prob_thd, test_cfg=tc),
        protocol=dict(resize=_resize_scale(cfg), mode=tc.get('mode'), crop=tc.get('crop_size'),
                      stride=tc.get('stride'), prob_thd=model.prob_thd, logit_scale=model.logit_scale,
                      templates=f'{model.template_spec} ({len(model.templates)})', vocab_digest=voc.digest(),
                      precision=model.precision),
        dataset=dict(type=type(dataset).__name__, data_root=cfg.test_dataloader.dataset.get('data_root'),
                     num_images=n, classes=list(dataset.metainfo['classes'])),
        metrics=dict(mIoU=details['mIoU'], aAcc=details['aAcc'], mAcc=details['mAcc'],
                     mmseg=dict(metrics), IoU=details['IoU'], Acc=details['Acc'],
                     area_intersect=details['area_intersect'], area_union=details['area_union'],
                     area_pred=details['area_pred'], area_label=details['area_label']),
        timing=dict(wall_s=wall_s, images_per_s=n / wall_s if wall_s > 0 else None, world_size=world_size,
                    device=(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'),
                    torch_threads=torch.get_num_threads()),
        versions=library_versions(),
        git_commit=git_commit(),
    )


def _resize_scale(cfg):
    for t in cfg.test_dataloader.dataset.get('pipeline', []):
        if t.get('type') == 'Resize':
            return list(t.get('scale'))
    return None


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.dist import get_rank, get_world_size
    from mmengine.runner import Runner

    import clearclip_seg
    clearclip_seg.register_all_modules()
    from clearclip_seg.records import atomic_write_json

    if not osp.isfile(args.config):
        fail(f"config '{args.config}' not found")
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    import torch
    if not torch.cuda.is_available():
        cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    else:
        cfg.test_dataloader.setdefault('pin_memory', True)
    if args.launcher != 'none':
        # evaluation needs no DDP; see clearclip_seg/models/wrapper.py
        cfg.model_wrapper_cfg = dict(type='ClearCLIPTestWrapper')
        if args.launcher == 'pytorch' and not torch.cuda.is_available():
            import torch.distributed as dist
            if not dist.is_initialized():  # MMEngine's init calls torch.cuda.set_device
                dist.init_process_group('gloo')
    if args.show_dir:
        from clearclip_seg.visualization import add_show_hook
        add_show_hook(cfg, args.show_dir, args.show_n)
    check_data_root(cfg)

    try:
        runner = Runner.from_cfg(cfg)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        # config mistakes (unknown arch/tag/mode, missing vocabulary or weights) name the
        # key in their message: show that line, not a traceback; anything else is a bug
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        if isinstance(e, RuntimeError) and 'model.' not in msg:
            raise
        fail(msg)
    model = unwrap(runner.model)
    loop = runner.test_loop
    dataset = loop.dataloader.dataset
    if len(dataset) == 0:
        fail(f"dataset at '{cfg.test_dataloader.dataset.get('data_root')}' lists no images")
    check_vocabulary(model, dataset, cfg)

    t0 = time.perf_counter()
    metrics = runner.test()
    wall = time.perf_counter() - t0

    if get_rank() == 0:
        details = loop.evaluator.metrics[0].details
        record = build_record(cfg, args, model, dataset, metrics, details, wall, get_world_size())
        if args.run_info:
            record['run'] = json.loads(args.run_info)
            record['method'] = record['method'] or record['run'].get('preset')
        path = args.record or osp.join(cfg.work_dir, 'record.json')
        atomic_write_json(record, path)
        print_summary(record, path)
    return metrics


def print_summary(record, path):
    m = record['metrics']
    t = record['timing']
    print(f"\n{record['benchmark'] or record['config']['path']}: "
          f"mIoU {m['mIoU']:.2f}  aAcc {m['aAcc']:.2f}  mAcc {m['mAcc']:.2f}  "
          f"({record['dataset']['num_images']} images, {t['wall_s']:.1f}s, {t['images_per_s']:.2f} img/s)")
    print(f'record: {path}')


if __name__ == '__main__':
    main()
