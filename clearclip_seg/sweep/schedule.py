"""Execute work units: one after the other, on N local workers, or as a Slurm job array.

A work unit (``plan.WorkUnit``) is a shared pass or a single run; each runs in
a child process of its own: ``python -m clearclip_seg.sweep.worker UNIT.json``
for a shared pass, ``tools/test.py`` (or ``torchrun`` with ``--parallel data``)
for a single run. How units are spread (``--parallel``):

* ``runs``: N workers (``--gpus N``) each take whole units from the queue, one
  GPU each (``CUDA_VISIBLE_DEVICES`` per worker; on a CPU, N processes that
  split the cores). No communication between workers, and shared passes stay
  shared: what pays for a suite, where there are at least as many units as GPUs.
* ``data``: one run at a time over N processes (``torchrun``; the images are
  split between ranks). What pays for a single big run, where one unit would
  leave the other GPUs idle. Shared passes need one process, so this mode
  runs every run on its own.
* ``auto`` (default): ``data`` when the work is a single run, else ``runs``.

``--slurm`` submits the units as a job array through submitit (``--partition``,
``--time``, ``--gpus-per-job``); the jobs write their records into the same
results folder, and the runner waits for them and checks each record as it does
locally. A later call plans again from the records, so it resumes the same way.
"""
import json
import os
import os.path as osp
import subprocess
import sys
import time
from collections import deque
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PARALLEL_MODES = ('auto', 'runs', 'data')
PASSES_DIR = '.passes'   # unit files and logs of shared passes, inside the results folder


def resolve_parallel(mode: str, gpus: int, units: Sequence) -> str:
    """``auto`` -> ``data`` for a single run, else ``runs``; other modes as given."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"--parallel {mode}: expected one of {', '.join(PARALLEL_MODES)}")
    if mode != 'auto':
        return mode
    return 'data' if gpus > 1 and sum(len(u.runs) for u in units) == 1 else 'runs'


def unit_command(unit, index: int, out: str, log_interval: int = 10,
                 procs_per_run: int = 1) -> Tuple[List[str], str]:
    """(command, log path) of one unit; a shared pass's unit file is written here."""
    from ..runner.sweep import child_command
    if not unit.shared:
        p = unit.runs[0]
        os.makedirs(osp.dirname(p.record), exist_ok=True)
        return child_command(p, procs_per_run, log_interval), osp.join(osp.dirname(p.record), 'log.txt')
    folder = osp.join(out, PASSES_DIR, f'{index:03d}-{unit.key}')
    os.makedirs(folder, exist_ok=True)
    runs = [dict(config=p.config, options=list(p.options) + [f'default_hooks.logger.interval={log_interval}'],
                 record=p.record, work_dir=osp.dirname(p.record), run_info=p.run.info(p.suite))
            for p in unit.runs]
    for p in unit.runs:
        os.makedirs(osp.dirname(p.record), exist_ok=True)
    path = osp.join(folder, 'unit.json')
    with open(path, 'w') as f:
        json.dump(dict(log_interval=log_interval, runs=runs), f, indent=1)
    return [sys.executable, '-m', 'clearclip_seg.sweep.worker', path], osp.join(folder, 'log.txt')


def check_run(p) -> Tuple[bool, Optional[dict], str]:
    """(ok, record, why not): the run's record exists, is complete and carries the planned identity."""
    from ..records import load_record
    from ..runner.identity import identity_diff
    rec = load_record(p.record)
    made = (rec or {}).get('config', {}).get('identity')
    if rec is None or made is None:
        return False, rec, 'no complete record'
    diff = identity_diff(made, p.identity)
    return (not diff), rec, (f'record identity differs: {diff}' if diff else '')


def worker_envs(workers: int, environ=None) -> List[Dict[str, str]]:
    """Environment changes of each local worker: one GPU each, or a share of the CPU cores.

    Raises:
        ValueError: more workers than visible GPUs.
    """
    import torch
    environ = os.environ if environ is None else environ
    if torch.cuda.is_available():
        visible = environ.get('CUDA_VISIBLE_DEVICES')
        ids = [d.strip() for d in visible.split(',') if d.strip()] if visible else \
            [str(i) for i in range(torch.cuda.device_count())]
        if workers > len(ids):
            raise ValueError(f'--gpus {workers}: only {len(ids)} GPU(s) visible ({", ".join(ids)})')
        return [dict(CUDA_VISIBLE_DEVICES=ids[i]) for i in range(workers)]
    threads = environ.get('OMP_NUM_THREADS') or str(max(1, (os.cpu_count() or 1) // workers))
    return [dict(OMP_NUM_THREADS=threads) for _ in range(workers)]


def run_local_workers(jobs: Sequence[Tuple[object, List[str], str]], workers: int,
                      on_done: Callable[[object, int, float], None], poll_s: float = 0.2,
                      stop: Optional[Callable[[], bool]] = None) -> int:
    """Run ``(unit, command, log)`` jobs on ``workers`` slots, each child in its own process group.

    ``on_done(unit, exit code, seconds)`` is called as each finishes. Once
    ``stop()`` is true no new job starts (running ones finish). SIGINT/SIGTERM
    (``runner.process.Interrupted``) end every running child's group, then propagate.

    Returns:
        The number of jobs never started.
    """
    from ..runner.process import end_group, spawn
    envs = worker_envs(workers)
    queue = deque(jobs)
    total = len(queue)
    started = 0
    active: Dict[int, tuple] = {}
    try:
        while queue or active:
            if stop is not None and stop():
                queue.clear()
            for slot in range(workers):
                if slot not in active and queue:
                    unit, cmd, log_path = queue.popleft()
                    os.makedirs(osp.dirname(log_path), exist_ok=True)
                    log = open(log_path, 'w')
                    spawn(cmd, lambda proc: active.__setitem__(slot, (proc, unit, log, time.perf_counter())),
                          stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **envs[slot]})
                    started += 1
            for slot, (proc, unit, log, t0) in list(active.items()):
                rc = proc.poll()
                if rc is not None:
                    log.close()
                    del active[slot]
                    on_done(unit, rc, time.perf_counter() - t0)
            if queue or active:
                time.sleep(poll_s)
    except BaseException:
        for proc, _, log, _ in active.values():
            end_group(proc)
            log.close()
        raise
    return total - started


def run_logged(cmd: List[str], log_path: str, env: Optional[dict] = None) -> int:
    """Run a command with its output in ``log_path``: what a Slurm job of the array executes."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'w') as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, **(env or {})}).returncode


def slurm_executor(folder: str, partition: Optional[str] = None, time_min: int = 240, gpus_per_job: int = 1,
                   cpus_per_job: Optional[int] = None, array_parallelism: Optional[int] = None,
                   kind: str = 'slurm'):
    """A submitit executor: Slurm (``kind='slurm'``) or submitit's local executor (``'local'``, for tests).

    Raises:
        ValueError: submitit is not installed, or an unknown ``kind``.
    """
    try:
        import submitit
    except ImportError:
        raise ValueError("--slurm needs submitit: pip install submitit") from None
    if kind == 'local':
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=time_min)
        return ex
    if kind != 'slurm':
        raise ValueError(f"--slurm-executor {kind}: expected slurm or local")
    ex = submitit.AutoExecutor(folder=folder, cluster='slurm')
    params = dict(timeout_min=time_min, gpus_per_node=gpus_per_job, tasks_per_node=1, nodes=1,
                  name='clearclip-seg')
    if partition:
        params['slurm_partition'] = partition
    if cpus_per_job:
        params['cpus_per_task'] = cpus_per_job
    if array_parallelism:
        params['slurm_array_parallelism'] = array_parallelism
    ex.update_parameters(**params)
    return ex


def run_slurm_jobs(jobs: Sequence[Tuple[object, List[str], str]], executor,
                   on_done: Callable[[object, int, float], None], poll_s: float = 1.0) -> List[str]:
    """Submit ``(unit, command, log)`` jobs as one array and wait; returns the job ids.

    A job that raised (timeout, node failure) counts as exit code 1; its
    submitit log is under the executor's folder. SIGINT/SIGTERM cancel the
    jobs still pending or running, then propagate.
    """
    if not jobs:
        return []
    units, cmds, logs = zip(*jobs)
    submitted = executor.map_array(run_logged, list(cmds), list(logs))
    t0 = time.perf_counter()
    pending = dict(enumerate(submitted))
    try:
        while pending:
            for i, job in list(pending.items()):
                if job.done():
                    try:
                        rc = int(job.result())
                    except Exception as e:  # the job itself failed: say so in the unit's log
                        with open(logs[i], 'a') as f:
                            f.write(f'\nslurm job {job.job_id} failed: {type(e).__name__}: {str(e)[-2000:]}\n')
                        rc = 1
                    del pending[i]
                    on_done(units[i], rc, time.perf_counter() - t0)
            if pending:
                time.sleep(poll_s)
    except BaseException:
        for job in pending.values():
            try:
                job.cancel(check=False)
            except Exception:  # already gone
                pass
        raise
    return [j.job_id for j in submitted]
