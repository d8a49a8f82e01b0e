"""The one run loop of the benchmark runner: units to jobs, an executor, a report per run.

``plan_work`` turns the runs still to do into work units (shared passes unless
``--no-share``) and picks the parallel mode (``--parallel``):

* ``runs``: N workers (``--gpus N``) each take whole units, one GPU each. No
  communication between workers, and shared passes stay shared: what pays for
  a suite, where there are at least as many units as GPUs.
* ``data``: one run at a time over N processes (``torchrun``; the images are
  split between ranks). What pays for a single big run, where one unit would
  leave the other GPUs idle. Shared passes need one process, so this mode runs
  every run on its own.
* ``auto`` (default): ``data`` when the work is a single run, else ``runs``.

``run_units`` then runs them on an executor (``executors``) and checks each
run's record as its unit ends (``report_unit``), the same check for every
executor: a run is done when its record is complete and carries the identity
planned for it; a run that failed says why (its failure marker, else its log).
"""
import re
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from ..evaluation.identity import identity_diff
from ..evaluation.steps import read_failure
from ..records import load_record
from .commands import unit_command
from .executors import Executor, Job
from .plan import PlanError
from .process import Interrupted, interrupt_handlers, pid_file
from .units import WorkUnit, describe_units, group_units

PARALLEL_MODES = ('auto', 'runs', 'data')
PROGRESS = re.compile(r'Iter\(test\)\s*\[\s*(\d+)\s*/\s*(\d+)\]')


def resolve_parallel(mode: str, gpus: int, units: Sequence) -> str:
    """``auto`` -> ``data`` for a single run, else ``runs``; other modes as given."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"--parallel {mode}: expected one of {', '.join(PARALLEL_MODES)}")
    if mode != 'auto':
        return mode
    return 'data' if gpus > 1 and sum(len(u.runs) for u in units) == 1 else 'runs'


def plan_work(planned: Sequence, args) -> Tuple[List[WorkUnit], str]:
    """(units of the runs to do, parallel mode ``runs`` or ``data``).

    ``--parallel data`` runs one run at a time over all processes, so it runs
    no shared pass (a shared pass is one process).
    """
    for flag in ('time', 'gpus_per_job', 'cpus_per_job', 'array_parallelism'):
        value = getattr(args, flag, None)
        if value is not None and (not isinstance(value, int) or value < 1):
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
    """The last lines of a sweep, and its exit status: 1 if a run failed, else 0.

    Args:
        failures: ``'suite/name: why'`` of each failed run.
    """
    if failures:
        print(f'{len(failures)} run(s) failed (the others are recorded; the same command retries only these):')
        for line in failures:
            print(f'  {line}')
        return 1
    print(f'all {total} runs complete; tables: python tools/collect_results.py {out}')
    return 0


def check_run(run) -> Tuple[bool, Optional[dict], str]:
    """(ok, record, why not): the run's record exists, is complete and carries the planned identity."""
    rec = load_record(run.record)
    made = (rec or {}).get('config', {}).get('identity')
    if rec is None or made is None:
        failure = read_failure(run.record)
        return False, rec, (failure or {}).get('error') or 'no complete record'
    diff = identity_diff(made, run.identity)
    return (not diff), rec, (f'record identity differs: {diff}' if diff else '')


def report_unit(unit: WorkUnit, rc: int, seconds: float, log_path: str,
                write: Callable[[str], None] = print) -> List[str]:
    """Check each run's record after its unit ended; returns ``'suite/name: why'`` of the runs that failed.

    A run succeeded when its record is complete and carries the identity planned
    for it (in a shared pass, one failed run does not fail the others).
    """
    failed = []
    for p in unit.runs:
        ok, rec, why = check_run(p)
        if ok and (rc == 0 or unit.shared):
            write(f"{p.title}: mIoU {rec['metrics']['mIoU']:.2f} ({seconds:.0f}s"
                  + (f', shared pass of {len(unit.runs)})' if unit.shared else ')'))
        else:
            failed.append(f'{p.title}: {why}')
            write(f'FAILED {p.title} (exit {rc}): {why}; log: {log_path}')
    return failed


def run_units(units: Sequence[WorkUnit], out: str, executor: Executor, total: int, already: int,
              log_interval: int = 10, keep_going: bool = False) -> int:
    """Run the units on ``executor``, report each run, and return the sweep's exit code.

    After a failed run no new unit starts unless ``keep_going``. SIGINT/SIGTERM end
    the running units (exit 128 + signal).
    """
    from tqdm import tqdm

    try:  # settings the machine cannot honour end here, in one line, before anything runs
        executor.check()
    except ValueError as e:  # more workers than GPUs, submitit missing
        print(f'error: {e}', file=sys.stderr)
        return 2
    jobs = []
    for i, u in enumerate(units, 1):
        cmd, log = unit_command(u, i, out, log_interval, executor.procs_per_run)
        jobs.append(Job(u, cmd, log, pid_file(out, f'{i:03d}-{u.key or u.runs[0].name}')))
    failures: List[str] = []
    bar = tqdm(total=total, initial=already, desc='matrix', unit='run', position=0)
    active = {}   # id(job) -> (job, its progress bar)

    def on_start(job):
        bar.set_postfix_str(job.unit.name)
        active[id(job)] = (job, tqdm(total=0, desc=job.unit.name[:40], unit='img', position=1, leave=False))

    def on_output(job, line):
        m = PROGRESS.search(line)
        if m and id(job) in active:
            inner = active[id(job)][1]
            inner.total, inner.n = int(m.group(2)), int(m.group(1))
            inner.refresh()
        elif line.startswith('error:'):
            tqdm.write(f'  {job.unit.name}: {line.strip()}')

    def on_done(job, rc, seconds):
        if id(job) in active:
            active.pop(id(job))[1].close()
        failures.extend(report_unit(job.unit, rc, seconds, job.log, tqdm.write))
        bar.update(len(job.unit.runs))
    try:
        with interrupt_handlers():
            left = executor.run(jobs, on_done, stop=None if keep_going else (lambda: bool(failures)),
                                on_start=on_start, on_output=on_output)
            ids = getattr(executor, 'job_ids', None)
            if ids:
                tqdm.write(f'slurm jobs: {", ".join(map(str, ids[:5]))}{" ..." if len(ids) > 5 else ""}')
            if left:
                tqdm.write(f'stopped after a failure: {left} unit(s) not started (--keep-going runs them)')
    except Interrupted as e:
        for _, inner in active.values():
            inner.close()
        bar.close()
        names = [r.title for job, _ in active.values() for r in job.unit.runs]
        where = (f" during {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} (its processes were ended)"
                 if names else ' (running units were ended)')
        return interrupted_exit(e, where)
    bar.close()
    return sweep_exit(failures, total, out)
