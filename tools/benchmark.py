#!/usr/bin/env python
"""Run a matrix of evaluations (benchmarks x presets/backbones x overrides).

Each run is ``tools/test.py`` in its own process and writes one JSON record
to ``OUT/SUITE/RUN/record.json``. Runs whose complete record exists are
skipped, so an interrupted sweep resumes where it stopped; records are
written atomically, so a killed run never leaves a partial one.

    python tools/benchmark.py --suite main                  # the paper's main table
    python tools/benchmark.py --suite ablation              # attention x residual x FFN
    python tools/benchmark.py --suite backbones             # OpenCLIP / MetaCLIP
    python tools/benchmark.py --matrix my_runs.json         # [{"name", "config", "cfg_options"}]
    python tools/benchmark.py --suite main --gpus 8         # torchrun per run
    python tools/benchmark.py --suite main --dry-run        # list the runs

Then: ``python tools/collect_results.py results/`` builds the tables.
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

PROGRESS = re.compile(r'Iter\(test\)\s*\[\s*(\d+)\s*/\s*(\d+)\]')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Run a matrix of ClearCLIP-Seg evaluations, resumably.')
    p.add_argument('--suite', action='append', default=[], help='main | baselines | ablation | backbones')
    p.add_argument('--matrix', help='JSON file: a list of {"name", "config", "cfg_options": [...]}')
    p.add_argument('--configs', nargs='+', default=[], help='config files to run as they are')
    p.add_argument('--benchmarks', help='comma-separated benchmark keys to keep (default: the suite\'s)')
    p.add_argument('--cfg-options', nargs='+', default=[], help='overrides added to every run')
    p.add_argument('--data-root', action='append', default=[], metavar='KEY=PATH',
                   help='data root for one benchmark, e.g. voc21=/data/VOC2012')
    p.add_argument('--out', default='results', help='results folder (default: results/)')
    p.add_argument('--gpus', type=int, default=1, help='processes per run (torchrun) when > 1')
    p.add_argument('--dry-run', action='store_true', help='list the runs and whether they are done')
    p.add_argument('--keep-going', action='store_true', help='continue after a failed run')
    p.add_argument('--log-interval', type=int, default=10, help='per-run progress granularity (images)')
    return p.parse_args(argv)


def collect_runs(args):
    from clearclip_seg.suites import Run, suite_runs
    keep = args.benchmarks.split(',') if args.benchmarks else None
    groups = []
    for s in args.suite:
        groups.append((s, suite_runs(s, keep)))
    if args.matrix:
        try:
            with open(args.matrix) as f:
                items = json.load(f)
            runs = [Run(i['name'], i['config'], list(i.get('cfg_options', [])), i.get('benchmark')) for i in items]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit(f"error: matrix file '{args.matrix}' is not a JSON list of "
                     f'{{"name", "config", "cfg_options"}} objects ({e})')
        groups.append((osp.splitext(osp.basename(args.matrix))[0], runs))
    if args.configs:
        groups.append(('configs', [Run(osp.splitext(osp.basename(c))[0], c) for c in args.configs]))
    if not groups:
        sys.exit('error: nothing to run: give --suite, --matrix or --configs')
    return [(suite, run) for suite, runs in groups for run in runs]


def data_root_options(args):
    roots = {}
    for item in args.data_root:
        if '=' not in item:
            sys.exit(f"error: --data-root '{item}' is not KEY=PATH (e.g. voc21=/data/VOCdevkit/VOC2012)")
        k, v = item.split('=', 1)
        roots[k] = v
    return roots


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_command(args, run, record_path, suite, extra):
    test = osp.join(ROOT, 'tools', 'test.py')
    if args.gpus > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={args.gpus}',
               f'--master_port={free_port()}', test, run.config, '--launcher', 'pytorch']
    else:
        cmd = [sys.executable, test, run.config]
    cmd += ['--work-dir', osp.dirname(record_path), '--record', record_path,
            '--run-info', json.dumps(run.info(suite))]
    opts = list(run.cfg_options) + extra + [f'default_hooks.logger.interval={args.log_interval}']
    return cmd + ['--cfg-options', *opts]


def main(argv=None):
    args = parse_args(argv)
    from tqdm import tqdm

    from clearclip_seg.records import load_record
    runs = collect_runs(args)
    roots = data_root_options(args)
    todo = []
    for suite, run in runs:
        record = osp.join(args.out, suite, run.name, 'record.json')
        done = load_record(record) is not None
        todo.append((suite, run, record, done))
    n_done = sum(d for *_, d in todo)
    print(f'{len(todo)} runs, {n_done} already complete, {len(todo) - n_done} to go -> {args.out}/')
    if args.dry_run:
        for suite, run, record, done in todo:
            print(f"  [{'done' if done else '    '}] {suite}/{run.name}: {run.config} {' '.join(run.cfg_options)}")
        return 0
    failures = []
    bar = tqdm(total=len(todo), initial=n_done, desc='matrix', unit='run', position=0)
    for suite, run, record, done in todo:
        if done:
            continue
        extra = list(args.cfg_options)
        if run.benchmark in roots:
            extra.append(f'test_dataloader.dataset.data_root={roots[run.benchmark]}')
        cmd = run_command(args, run, record, suite, extra)
        os.makedirs(osp.dirname(record), exist_ok=True)
        log_path = osp.join(osp.dirname(record), 'log.txt')
        bar.set_postfix_str(run.name)
        t0 = time.perf_counter()
        inner = tqdm(total=0, desc=run.name[:40], unit='img', position=1, leave=False)
        with open(log_path, 'w') as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1)
            for line in proc.stdout:
                log.write(line)
                m = PROGRESS.search(line)
                if m:
                    inner.total = int(m.group(2))
                    inner.n = int(m.group(1))
                    inner.refresh()
                elif line.startswith('error:'):
                    tqdm.write(f'  {run.name}: {line.strip()}')
            rc = proc.wait()
        inner.close()
        if rc != 0 or load_record(record) is None:
            failures.append(run.name)
            tqdm.write(f'FAILED {suite}/{run.name} (exit {rc}); log: {log_path}')
            if not args.keep_going:
                break
        else:
            rec = load_record(record)
            tqdm.write(f"{suite}/{run.name}: mIoU {rec['metrics']['mIoU']:.2f} "
                       f'({time.perf_counter() - t0:.0f}s)')
        bar.update(1)
    bar.close()
    if failures:
        print(f'{len(failures)} run(s) failed: {", ".join(failures)}')
        return 1
    print(f'all {len(todo)} runs complete; tables: python tools/collect_results.py {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
