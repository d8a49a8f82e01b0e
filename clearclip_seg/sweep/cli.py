"""``run_sweep``: what ``tools/benchmark.py`` does with its arguments.

Plan (``plan``), check, lock the results folder (``lock``), report what an
earlier runner left (``process.leftovers``), group the runs into work units
(``units``) and run them on an executor (``executors``) through the one run
loop (``loop.run_units``). A run is skipped when its complete record exists
and was made with the same settings; a record made with other settings stops
the sweep before anything runs (``--force`` re-runs those).
"""
import os.path as osp
import sys

from ..checks import probe_writable
from .executors import LocalExecutor, SlurmExecutor
from .lock import LockedError, ResultsLock
from .loop import dry_run_lines, plan_work, run_units
from .plan import PlanError, collect_runs, parse_data_roots, plan_runs, stale_message, unused_roots
from .process import leftovers


def _error(msg: str) -> int:
    print(f'error: {msg}', file=sys.stderr)
    return 2


def check_out(out: str) -> None:
    """The results folder can be made and written (not a file, not read-only, not on a full disk)."""
    try:
        probe_writable(out)
    except OSError as e:
        raise PlanError(f"results folder '{out}' (--out) cannot be written: {e.strerror or e}; "
                        'choose a writable folder') from None


def make_executor(args, out: str, mode: str):
    """The executor the arguments ask for."""
    if getattr(args, 'slurm', False):
        return SlurmExecutor(osp.join(out, '.slurm'), getattr(args, 'partition', None), getattr(args, 'time', 240),
                             getattr(args, 'gpus_per_job', 1), getattr(args, 'cpus_per_job', None),
                             getattr(args, 'array_parallelism', None), getattr(args, 'slurm_executor', 'slurm'),
                             procs_per_run=getattr(args, 'gpus_per_job', 1) if mode == 'data' else 1)
    return LocalExecutor(workers=1 if mode == 'data' else args.gpus, procs_per_run=args.gpus if mode == 'data' else 1)


def run_sweep(args) -> int:
    """Plan, check and run (see the module docstring). Returns the exit code.

    ``args`` has the fields of ``tools/benchmark.py``'s parser: suite, matrix, configs,
    benchmarks, cfg_options, data_root, out, gpus, parallel, no_share, slurm..., dry_run,
    keep_going, log_interval, force.
    """
    for value, flag in ((args.gpus, '--gpus'), (args.log_interval, '--log-interval')):
        if not isinstance(value, int) or value < 1:
            return _error(f'{flag} {value}: expected a positive integer')
    out = osp.abspath(args.out)
    try:
        runs = collect_runs(args.suite, args.benchmarks, args.matrix, args.configs)
        roots = parse_data_roots(args.data_root)
        for key in unused_roots(runs, roots):
            print(f'warning: --data-root {key}=... is not used by any of these runs', file=sys.stderr)
        if args.dry_run:
            planned = plan_runs(runs, out, roots, args.cfg_options, args.force, getattr(args, 'data_dir', None))
            _summary(planned, out)
            for p in planned:
                mark = {'done': 'done', 'stale': 'STALE', 'todo': '    '}[p.status]
                why = f"  ({'; '.join(p.why)})" if p.status == 'stale' else ''
                print(f"  [{mark}] {p.title}: {p.config} {' '.join(p.info()['overrides'])}{why}")
            print('\n'.join(dry_run_lines(planned, args)))
            return 0
        check_out(out)
        with ResultsLock(out):
            for line in leftovers(out):
                print(f'note: {line}', file=sys.stderr)
            planned = plan_runs(runs, out, roots, args.cfg_options, args.force, getattr(args, 'data_dir', None))
            stale = stale_message(planned)
            if stale:
                return _error(stale)
            return _run_planned(planned, out, args)
    except (PlanError, LockedError) as e:
        return _error(str(e))
    except OSError as e:  # the results folder filled up or went away mid-sweep
        return _error(f"results folder '{out}': {e.strerror or e}" + (f" ('{e.filename}')" if e.filename else ''))


def _summary(planned, out: str) -> None:
    n_done = sum(p.status == 'done' for p in planned)
    print(f'{len(planned)} runs, {n_done} already complete, {len(planned) - n_done} to go -> {out}/')


def _run_planned(planned, out: str, args) -> int:
    _summary(planned, out)
    n_done = sum(p.status == 'done' for p in planned)
    units, mode = plan_work(planned, args)
    return run_units(units, out, make_executor(args, out, mode), len(planned), n_done,
                     args.log_interval, args.keep_going)
