"""Where work units run: one interface, three executors.

An executor takes jobs (a unit, its command, its log and pid file), runs them
and calls ``on_done(job, exit code, seconds)`` as each ends; ``loop.run_units``
drives every executor the same way (progress, reporting, stopping, signals).

* ``InProcessExecutor``: each unit's pass in this process (``passes.run_pass``;
  an API for scripts and tests: no process isolation).
* ``LocalExecutor``: N workers on this machine (``--gpus N``), each taking whole
  units, one GPU each (``CUDA_VISIBLE_DEVICES`` per worker; on a CPU, N
  processes that split the cores); with one worker, the unit's output is also
  streamed for the progress bar. Each child runs in its own process group and
  dies with the runner (``process``).
* ``SlurmExecutor``: a Slurm job array through submitit (``--slurm``:
  ``--partition``, ``--time``, ``--gpus-per-job``), or submitit's local
  executor (``--slurm-executor local``, for tests). The jobs write their records
  into the same results folder; the runner waits for them and checks each
  record as it does locally.
"""
import os
import os.path as osp
import subprocess
import threading
import time
from collections import deque
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from ..repo_root import ROOT
from .process import end_group, remove_pid_file, run_child, spawn


class Job(NamedTuple):
    unit: object            # units.WorkUnit
    cmd: List[str]
    log: str
    pid_file: str


Done = Callable[[Job, int, float], None]


class Executor:
    """Runs jobs; ``run`` returns the number of jobs never started (``stop()`` became true)."""

    procs_per_run = 1   # processes of one run (``--parallel data``: torchrun over them)

    def check(self) -> None:
        """Raise ``ValueError`` (one line) for settings this machine cannot honour, before anything runs."""

    def run(self, jobs: Sequence[Job], on_done: Done, stop: Optional[Callable[[], bool]] = None,
            on_start: Optional[Callable[[Job], None]] = None,
            on_output: Optional[Callable[[Job, str], None]] = None) -> int:
        """Run ``jobs``: ``on_start(job)`` as each starts, ``on_done(job, exit code, seconds)`` as each ends,
        ``on_output(job, line)`` for its output lines where the executor sees them."""
        raise NotImplementedError


class InProcessExecutor(Executor):
    """Each unit's pass in this process, one after the other (exit code 0, or 1 if a run failed)."""

    def run(self, jobs, on_done, stop=None, on_start=None, on_output=None) -> int:
        from ..evaluation.passes import run_pass  # lazy: it imports torch; the runner plans without it

        def execute(job: Job) -> int:
            with open(job.log, 'w') as log:
                try:
                    run_pass(job.unit.runs, log=lambda line: print(line, file=log, flush=True))
                    return 0 if all(r.error is None for r in job.unit.runs) else 1
                except Exception as e:  # the whole pass failed (its runs are marked failed)
                    print(f'error: {e}', file=log)
                    return 1
        return one_at_a_time(jobs, execute, on_done, stop, on_start)


def one_at_a_time(jobs: Sequence[Job], execute: Callable[[Job], int], on_done: Done,
                  stop: Optional[Callable[[], bool]] = None, on_start: Optional[Callable[[Job], None]] = None) -> int:
    """Run ``execute(job)`` for each job in turn (the in-process and the one-worker local loops).

    Returns the number of jobs not started because ``stop()`` said so.
    """
    for i, job in enumerate(jobs):
        if stop is not None and stop():
            return len(jobs) - i
        if on_start is not None:
            on_start(job)
        t0 = time.perf_counter()
        rc = execute(job)
        on_done(job, rc, time.perf_counter() - t0)
    return 0


def worker_envs(workers: int, environ=None) -> List[Dict[str, str]]:
    """Environment changes of each local worker: one GPU each, or a share of the CPU cores.

    Raises:
        ValueError: more workers than visible GPUs.
    """
    import torch  # lazy: planning and the dry run do not need it
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


class LocalExecutor(Executor):
    """``workers`` child processes at a time on this machine, each unit in its own process group.

    Args:
        workers: units running at once (one GPU each).
        procs_per_run: processes of one run (torchrun; ``--parallel data``).
        poll_s: how often finished children are looked for.
    """

    def __init__(self, workers: int = 1, procs_per_run: int = 1, poll_s: float = 0.2):
        self.workers = workers
        self.procs_per_run = procs_per_run
        self.poll_s = poll_s

    def check(self) -> None:
        self._envs = worker_envs(self.workers)

    def run(self, jobs, on_done, stop=None, on_start=None, on_output=None) -> int:
        envs = getattr(self, '_envs', None) or worker_envs(self.workers)
        if self.workers == 1 and on_output is not None:  # one at a time: its output is streamed too
            return one_at_a_time(jobs, lambda job: run_child(
                job.cmd, job.log, lambda line: on_output(job, line), env={**os.environ, **envs[0]},
                pid_path=job.pid_file, unit=job.unit.name), on_done, stop, on_start)
        return self._pool(jobs, on_done, stop, on_start, envs)

    def _pool(self, jobs, on_done, stop, on_start, envs) -> int:
        queue = deque(jobs)
        started = 0
        active: Dict[int, tuple] = {}
        try:
            while queue or active:
                if stop is not None and stop():
                    queue.clear()
                for slot in range(self.workers):
                    if slot not in active and queue:
                        job = queue.popleft()
                        os.makedirs(osp.dirname(job.log), exist_ok=True)
                        log = open(job.log, 'w')
                        spawn(job.cmd, lambda proc: active.__setitem__(slot, (proc, job, log, time.perf_counter())),
                              job.pid_file, job.unit.name, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **envs[slot]})
                        started += 1
                        if on_start is not None:
                            on_start(job)
                for slot, (proc, job, log, t0) in list(active.items()):
                    rc = proc.poll()
                    if rc is not None:
                        log.close()
                        remove_pid_file(job.pid_file)
                        del active[slot]
                        on_done(job, rc, time.perf_counter() - t0)
                if queue or active:
                    time.sleep(self.poll_s)
        except BaseException:
            for proc, job, log, _ in active.values():
                end_group(proc)
                log.close()
                remove_pid_file(job.pid_file)
            raise
        return len(jobs) - started


def _watch_runner(runner_pid: int, child: subprocess.Popen, poll_s: float = 0.5) -> None:
    """End ``child``'s group once the runner is gone (submitit's local controller outlives it)."""
    import signal
    while child.poll() is None:
        try:
            os.kill(runner_pid, 0)
        except ProcessLookupError:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            return
        except PermissionError:
            pass
        time.sleep(poll_s)


def run_logged(cmd: List[str], log_path: str, pid_file: Optional[str] = None, unit: str = '',
               runner_pid: Optional[int] = None, env: Optional[dict] = None) -> int:
    """What a Slurm job of the array executes: ``cmd`` with its output in ``log_path``.

    The command runs in its own process group, noted in ``pid_file`` while it
    runs. With ``runner_pid`` (submitit's local executor: the jobs run on the
    runner's machine), the command is ended when the runner is gone.
    """
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    children: List[subprocess.Popen] = []
    with open(log_path, 'w') as log:
        try:
            spawn(cmd, children.append, pid_file, unit, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                  env={**os.environ, **(env or {})})
            if runner_pid is not None:
                threading.Thread(target=_watch_runner, args=(runner_pid, children[0]), daemon=True).start()
            return children[0].wait()
        finally:
            if pid_file:
                remove_pid_file(pid_file)


class SlurmExecutor(Executor):
    """The units as one Slurm job array (submitit); ``kind='local'``: submitit's local executor.

    A job that raised (timeout, node failure) counts as exit code 1; its
    submitit log is under the executor's folder. SIGINT/SIGTERM cancel the
    jobs still pending or running, then propagate.
    """

    def __init__(self, folder: str, partition: Optional[str] = None, time_min: int = 240, gpus_per_job: int = 1,
                 cpus_per_job: Optional[int] = None, array_parallelism: Optional[int] = None,
                 kind: str = 'slurm', procs_per_run: int = 1, poll_s: float = 1.0):
        self.folder, self.partition, self.time_min = folder, partition, time_min
        self.gpus_per_job, self.cpus_per_job, self.array_parallelism = gpus_per_job, cpus_per_job, array_parallelism
        self.kind, self.procs_per_run, self.poll_s = kind, procs_per_run, poll_s
        self.job_ids: List[str] = []
        self._ex = None

    def check(self) -> None:
        """Build the submitit executor. Raises ValueError: submitit missing, or an unknown kind."""
        try:
            import submitit
        except ImportError:
            raise ValueError('--slurm needs submitit: pip install submitit') from None
        if self.kind == 'local':
            ex = submitit.LocalExecutor(folder=self.folder)
            ex.update_parameters(timeout_min=self.time_min)
        elif self.kind == 'slurm':
            ex = submitit.AutoExecutor(folder=self.folder, cluster='slurm')
            params = dict(timeout_min=self.time_min, gpus_per_node=self.gpus_per_job, tasks_per_node=1, nodes=1,
                          name='clearclip-seg')
            if self.partition:
                params['slurm_partition'] = self.partition
            if self.cpus_per_job:
                params['cpus_per_task'] = self.cpus_per_job
            if self.array_parallelism:
                params['slurm_array_parallelism'] = self.array_parallelism
            ex.update_parameters(**params)
        else:
            raise ValueError(f'--slurm-executor {self.kind}: expected slurm or local')
        self._ex = ex

    def run(self, jobs, on_done, stop=None, on_start=None, on_output=None) -> int:
        if not jobs:
            return 0
        if self._ex is None:
            self.check()
        runner = os.getpid() if self.kind == 'local' else None
        n = len(jobs)
        submitted = self._ex.map_array(run_logged, [j.cmd for j in jobs], [j.log for j in jobs],
                                       [j.pid_file for j in jobs], [j.unit.name for j in jobs], [runner] * n)
        self.job_ids = [j.job_id for j in submitted]
        for job in jobs if on_start is not None else ():
            on_start(job)
        t0 = time.perf_counter()
        pending = dict(enumerate(submitted))
        try:
            while pending:
                for i, job in list(pending.items()):
                    if job.done():
                        try:
                            rc = int(job.result())
                        except Exception as e:  # the job itself failed: say so in the unit's log
                            with open(jobs[i].log, 'a') as f:
                                f.write(f'\nslurm job {job.job_id} failed: {type(e).__name__}: {str(e)[-2000:]}\n')
                            rc = 1
                        del pending[i]
                        on_done(jobs[i], rc, time.perf_counter() - t0)
                if pending:
                    time.sleep(self.poll_s)
        except BaseException:
            for job in pending.values():
                try:
                    job.cancel(check=False)
                except Exception:  # already gone
                    pass
            raise
        return 0
