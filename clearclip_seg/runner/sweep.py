"""Run a matrix of evaluations, resumably: shared passes and single runs, each in its own process.

Runs that share backbone, weights, precision, resize, windows and image set go
through one shared pass (``clearclip_seg.sweep``; ``--no-share``: one
``tools/test.py`` process per run); ``--gpus N`` spreads the work units over N
workers, ``--slurm`` over a job array.

``tools/benchmark.py`` is the command line over ``run_sweep``. A run is skipped
when its complete record exists and was made with the same settings; a record
made with other settings stops the sweep before anything runs (``--force``
re-runs those). The results folder is locked for the sweep's duration, child
runs live in their own process groups and end with the runner (SIGINT,
SIGTERM), and a killed sweep resumes where it stopped.
"""
import json
import os.path as osp
import re
import socket
import sys
import time
from typing import List

from .lock import LockedError, ResultsLock
from .plan import PlanError, PlannedRun, collect_runs, parse_data_roots, plan_runs, stale_message, unused_roots
from .process import Interrupted, interrupt_handlers, run_child

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PROGRESS = re.compile(r'Iter\(test\)\s*\[\s*(\d+)\s*/\s*(\d+)\]')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def child_command(p: PlannedRun, gpus: int = 1, log_interval: int = 10) -> List[str]:
    """The ``tools/test.py`` (or ``torchrun``) command of one planned run."""
    test = osp.join(ROOT, 'tools', 'test.py')
    if gpus > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={gpus}',
               f'--master_port={_free_port()}', test, p.config, '--launcher', 'pytorch']
    else:
        cmd = [sys.executable, test, p.config]
    cmd += ['--work-dir', osp.dirname(p.record), '--record', p.record, '--run-info', json.dumps(p.run.info(p.suite))]
    return cmd + ['--cfg-options', *p.options, f'default_hooks.logger.interval={log_interval}']


def _error(msg: str) -> int:
    print(f'error: {msg}', file=sys.stderr)
    return 2


def run_sweep(args) -> int:
    """Plan, check and run (see the module docstring). Returns the exit code.

    ``args`` has the fields of ``tools/benchmark.py``'s parser: suite, matrix, configs,
    benchmarks, cfg_options, data_root, out, gpus, dry_run, keep_going, log_interval, force.
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
            planned = plan_runs(runs, out, roots, args.cfg_options, args.force)
            _summary(planned, out)
            for p in planned:
                mark = {'done': 'done', 'stale': 'STALE', 'todo': '    '}[p.status]
                why = f"  ({'; '.join(p.why)})" if p.status == 'stale' else ''
                print(f"  [{mark}] {p.suite}/{p.run.name}: {p.config} {' '.join(p.run.cfg_options)}{why}")
            from ..sweep.execute import dry_run_lines  # how the runs group into shared passes, and the cost
            print('\n'.join(dry_run_lines(planned, args)))
            return 0
        with ResultsLock(out):
            planned = plan_runs(runs, out, roots, args.cfg_options, args.force)
            stale = stale_message(planned)
            if stale:
                return _error(stale)
            return _run_planned(planned, out, args)
    except (PlanError, LockedError) as e:
        return _error(str(e))


def _summary(planned: List[PlannedRun], out: str) -> None:
    n_done = sum(p.status == 'done' for p in planned)
    print(f'{len(planned)} runs, {n_done} already complete, {len(planned) - n_done} to go -> {out}/')


def _run_planned(planned: List[PlannedRun], out: str, args) -> int:
    """Run what is to do as work units: shared passes and single runs (``clearclip_seg.sweep``),
    one after the other here, or on ``--gpus N`` workers / a Slurm array there."""
    from tqdm import tqdm

    from ..sweep.execute import interrupted_exit, plan_work, report_unit, run_units_in_parallel, sweep_exit
    from ..sweep.schedule import unit_command
    _summary(planned, out)
    n_done = sum(p.status == 'done' for p in planned)
    units, mode = plan_work(planned, args)
    if getattr(args, 'slurm', False) or (mode == 'runs' and args.gpus > 1):
        return run_units_in_parallel(units, out, args, mode, len(planned), n_done)
    procs = args.gpus if mode == 'data' else 1
    failures = []
    bar = tqdm(total=len(planned), initial=n_done, desc='matrix', unit='run', position=0)
    current = None
    try:
        with interrupt_handlers():
            for i, unit in enumerate(units, 1):
                current = unit
                bar.set_postfix_str(unit.name)
                t0 = time.perf_counter()
                cmd, log_path = unit_command(unit, i, out, args.log_interval, procs)
                inner = tqdm(total=0, desc=unit.name[:40], unit='img', position=1, leave=False)

                def on_line(line, inner=inner, name=unit.name):
                    m = PROGRESS.search(line)
                    if m:
                        inner.total, inner.n = int(m.group(2)), int(m.group(1))
                        inner.refresh()
                    elif line.startswith('error:'):
                        tqdm.write(f'  {name}: {line.strip()}')
                rc = run_child(cmd, log_path, on_line)
                inner.close()
                # each run's record must carry the identity planned here (a mismatch is a bug, and
                # would otherwise make the next sweep call the run stale)
                failed = report_unit(unit, rc, time.perf_counter() - t0, log_path, tqdm.write)
                failures.extend(failed)
                bar.update(len(unit.runs))
                current = None
                if failed and not args.keep_going:
                    break
    except Interrupted as e:
        bar.close()
        where = f" during {', '.join(f'{p.suite}/{p.run.name}' for p in current.runs[:3])}" \
                f"{' ...' if len(current.runs) > 3 else ''} (its processes were ended)" if current else ''
        return interrupted_exit(e, where)
    bar.close()
    return sweep_exit(failures, len(planned), out)
