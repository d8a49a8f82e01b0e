"""The benchmark runner's side of shared passes and parallel work (``tools/benchmark.py``).

``plan_work`` turns the runs still to do into work units (shared passes unless
``--no-share``) and picks the parallel mode; ``run_units_in_parallel`` runs them
on ``--gpus N`` local workers or as a Slurm array (``--slurm``);
``report_unit`` checks each run's record after its unit ends, the same check
for every mode. The one-after-the-other mode is the runner's own loop
(``clearclip_seg.runner.sweep``), over units instead of runs.
"""
import os.path as osp
import sys
from typing import Callable, List, Sequence, Tuple

from .plan import WorkUnit, describe_units, group_units
from .schedule import (check_run, resolve_parallel, run_local_workers, run_slurm_jobs, slurm_executor,
                       unit_command, worker_envs)


def plan_work(planned: Sequence, args) -> Tuple[List[WorkUnit], str]:
    """(units of the runs to do, parallel mode ``runs`` or ``data``).

    ``--parallel data`` runs one run at a time over all processes, so it runs
    no shared pass (a shared pass is one process).
    """
    for flag in ('time', 'gpus_per_job', 'cpus_per_job', 'array_parallelism'):
        value = getattr(args, flag, None)
        if value is not None and (not isinstance(value, int) or value < 1):
            from ..runner.plan import PlanError
            raise PlanError(f"--{flag.replace('_', '-')} {value}: expected a positive integer")
    todo = [p for p in planned if p.status == 'todo']
    share = not getattr(args, 'no_share', False)
    units = group_units(todo, share=share)
    mode = resolve_parallel(getattr(args, 'parallel', 'auto'), args.gpus, units)
    if mode == 'data' and any(u.shared for u in units):
        units = group_units(todo, share=False)
    return units, mode


def dry_run_lines(planned: Sequence, args) -> List[str]:
    """The grouping of every planned run (done ones marked) and its estimated cost."""
    share = not getattr(args, 'no_share', False)
    units = group_units(list(planned), share=share)
    mode = resolve_parallel(getattr(args, 'parallel', 'auto'), args.gpus,
                            [u for u in units if any(p.status != 'done' for p in u.runs)] or units)
    marks = {'done': '[done] ', 'stale': '[STALE] ', 'todo': ''}
    lines = describe_units(units, status=lambda p: marks.get(p.status, ''))
    where = ('as a Slurm job array' if getattr(args, 'slurm', False) else
             f'{args.gpus} worker(s) taking whole units' if mode == 'runs' else
             f'one run at a time over {args.gpus} processes (no shared passes)')
    lines.insert(1, f'parallel: {mode} ({where})')
    return lines


def interrupted_exit(e, detail: str = '') -> int:
    """Say that a sweep was interrupted (``detail``: what was running) and return its exit status."""
    print(f'interrupted by {e}{detail}; complete records are kept: run the same command again to resume',
          file=sys.stderr)
    return 128 + e.signum


def sweep_exit(failures: Sequence[str], total: int, out: str) -> int:
    """The last line of a sweep, and its exit status: 1 if a run failed, else 0."""
    if failures:
        print(f'{len(failures)} run(s) failed: {", ".join(failures)}')
        return 1
    print(f'all {total} runs complete; tables: python tools/collect_results.py {out}')
    return 0


def report_unit(unit: WorkUnit, rc: int, seconds: float, log_path: str,
                write: Callable[[str], None] = print) -> List[str]:
    """Check each run's record after its unit ended; returns the names of the runs that failed.

    A run succeeded when its record is complete and carries the identity planned
    for it (a shared pass that fails late may still have written some records:
    those count).
    """
    failed = []
    for p in unit.runs:
        ok, rec, why = check_run(p)
        if ok and (rc == 0 or unit.shared):
            write(f"{p.suite}/{p.run.name}: mIoU {rec['metrics']['mIoU']:.2f} ({seconds:.0f}s"
                  + (f', shared pass of {len(unit.runs)})' if unit.shared else ')'))
        else:
            failed.append(p.run.name)
            detail = '' if rc != 0 or not why else f' ({why})'
            write(f'FAILED {p.suite}/{p.run.name} (exit {rc}){detail}; log: {log_path}')
    return failed


def run_units_in_parallel(units: Sequence[WorkUnit], out: str, args, mode: str, total: int,
                          already: int) -> int:
    """Run units on ``--gpus N`` local workers (``mode='runs'``) or as a Slurm array; the exit code."""
    from tqdm import tqdm

    from ..runner.process import Interrupted, interrupt_handlers
    slurm = getattr(args, 'slurm', False)
    try:  # settings the machine cannot honour end here, in one line, before anything runs
        if slurm:
            ex = slurm_executor(osp.join(out, '.slurm'), getattr(args, 'partition', None),
                                getattr(args, 'time', 240), getattr(args, 'gpus_per_job', 1),
                                getattr(args, 'cpus_per_job', None), getattr(args, 'array_parallelism', None),
                                getattr(args, 'slurm_executor', 'slurm'))
            procs = getattr(args, 'gpus_per_job', 1) if mode == 'data' else 1
        else:
            workers = 1 if mode == 'data' else args.gpus
            worker_envs(workers)
            procs = args.gpus if mode == 'data' else 1
    except ValueError as e:  # more workers than GPUs, submitit missing
        print(f'error: {e}', file=sys.stderr)
        return 2
    jobs = []
    for i, u in enumerate(units, 1):
        cmd, log = unit_command(u, i, out, args.log_interval, procs)
        jobs.append((u, cmd, log))
    logs = {id(u): log for u, _, log in jobs}
    failures: List[str] = []
    bar = tqdm(total=total, initial=already, desc='matrix', unit='run')

    def on_done(unit, rc, seconds):
        failures.extend(report_unit(unit, rc, seconds, logs[id(unit)], tqdm.write))
        bar.update(len(unit.runs))
    try:
        with interrupt_handlers():
            if slurm:
                ids = run_slurm_jobs(jobs, ex, on_done)
                tqdm.write(f'slurm jobs: {", ".join(map(str, ids[:5]))}{" ..." if len(ids) > 5 else ""}')
            else:
                left = run_local_workers(jobs, workers, on_done,
                                         stop=(lambda: bool(failures)) if not args.keep_going else None)
                if left:
                    tqdm.write(f'stopped after a failure: {left} unit(s) not started (--keep-going runs them)')
    except Interrupted as e:
        bar.close()
        return interrupted_exit(e, ' (running units were ended)')
    bar.close()
    return sweep_exit(failures, total, out)
