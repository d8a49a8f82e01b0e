#!/usr/bin/env python
"""Run a matrix of evaluations (benchmarks x presets/backbones x overrides).

Each work unit (a shared pass of several runs, or one run through
``tools/test.py``) runs in its own process (and process group), and each run
writes one JSON record to ``OUT/SUITE/RUN/record.json``; a run that fails leaves
``record.json.failed`` (its error) instead, without stopping the other runs of
its shared pass, and the summary lists it. A run whose complete
record exists *and was made with the same settings* is skipped, so an
interrupted sweep resumes where it stopped; a record made with other settings
(overrides, data root, architecture...) stops the sweep with one line naming
the difference, unless ``--force``. Records are written atomically, so a killed
run never leaves a partial one; SIGINT/SIGTERM end the current run's processes
too, and workers end with a runner killed outright (a resume reports what a
killed runner left); a second runner on the same results folder refuses to start.

    python tools/benchmark.py --suite main                  # the paper's main table
    python tools/benchmark.py --suite ablation              # attention x residual x FFN
    python tools/benchmark.py --suite backbones             # every other backbone family
    python tools/benchmark.py --suite methods               # every method under its own protocol
    python tools/benchmark.py --matrix my_runs.json         # [{"name", "config", "cfg_options"}]
    python tools/benchmark.py --suite main --gpus 8         # 8 workers, one GPU each, whole work units
    python tools/benchmark.py --configs C.py --gpus 8       # one run: torchrun over 8 GPUs (--parallel data)
    python tools/benchmark.py --suite ablation --slurm --partition gpu --time 120   # a Slurm job array
    python tools/benchmark.py --suite main --dry-run        # the runs (done / to do / stale), the shared
                                                            # passes they group into and their cost
    python tools/benchmark.py --suite main --no-share       # one tools/test.py process per run
    python tools/benchmark.py --suite main --data-root /datasets/data          # a data folder of the layouts
    python tools/benchmark.py --suite main --data-root voc21=/datasets/VOC2012 # one benchmark's own root

Suites: see ``--help`` (the suite registry, ``clearclip_seg.suites``). ``--data-root`` means
what it means in ``tools/check_data.py`` and ``tools/prepare_data.py``.

Runs that share backbone, weights, precision, resize, windows and image set are
evaluated in one shared pass (blocks 0..L-2 once per window, then each run's
last block, scoring, metric and record); records are identical to separate runs.

Then: ``python tools/collect_results.py results/`` builds the tables.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


from clearclip_seg.cli_args import add_data_root_arguments, parse_data_roots  # noqa: E402 (after the path set-up)
from clearclip_seg.suites import SUITES  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Run a matrix of ClearCLIP-Seg evaluations, resumably.')
    p.add_argument('--suite', action='append', default=[], metavar='SUITE',
                   help='a named run matrix (repeatable): ' + ', '.join(SUITES))
    p.add_argument('--matrix', help='JSON file: a list of {"name", "config", "cfg_options": [...], "benchmark"}')
    p.add_argument('--configs', nargs='+', default=[], help='config files to run as they are')
    p.add_argument('--benchmarks', help='comma-separated benchmark keys to keep (default: the suite\'s)')
    p.add_argument('--cfg-options', nargs='+', default=[], help='overrides added to every run')
    add_data_root_arguments(p)
    p.add_argument('--out', default='results', help='results folder (default: results/)')
    p.add_argument('--gpus', type=int, default=1,
                   help='GPUs to use (on a CPU: worker processes); how, see --parallel')
    p.add_argument('--parallel', choices=('auto', 'runs', 'data'), default='auto',
                   help='runs: N workers each take whole work units (shared passes or runs), one GPU each: pays '
                        'for suites; data: one run at a time over N processes (torchrun), no shared passes: pays '
                        'for a single big run; auto (default): data for a single run, else runs')
    p.add_argument('--no-share', action='store_true',
                   help='one tools/test.py process per run (no shared passes)')
    s = p.add_argument_group('Slurm (through submitit)')
    s.add_argument('--slurm', action='store_true', help='submit the work units as a Slurm job array and wait')
    s.add_argument('--partition', default=None, help='Slurm partition')
    s.add_argument('--time', type=int, default=240, help='time limit per job, minutes (default 240)')
    s.add_argument('--gpus-per-job', type=int, default=1, help='GPUs per job (default 1)')
    s.add_argument('--cpus-per-job', type=int, default=None, help='CPUs per job')
    s.add_argument('--array-parallelism', type=int, default=None, help='jobs of the array running at once')
    s.add_argument('--slurm-executor', choices=('slurm', 'local'), default='slurm',
                   help='local: submitit\'s local executor runs the jobs on this machine (tests)')
    p.add_argument('--dry-run', action='store_true', help='list the runs and whether they are done or stale')
    p.add_argument('--keep-going', action='store_true', help='continue after a failed run')
    p.add_argument('--force', action='store_true',
                   help='re-run runs whose record was made with other settings (replacing the record)')
    p.add_argument('--log-interval', type=int, default=10, help='per-run progress granularity (images)')
    args = p.parse_args(argv)
    # --data-root: the data folder (args.data_dir) and KEY=PATH roots (args.data_root), as in check_data/prepare_data
    args.data_dir, roots = parse_data_roots(args.data_root, args.data_root_override)  # ValueError: a bad one
    args.data_root = [f'{k}={v}' for k, v in roots.items()]
    return args


def main(argv=None):
    from clearclip_seg.sweep import run_sweep
    try:
        args = parse_args(argv)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return run_sweep(args)


if __name__ == '__main__':
    sys.exit(main())
