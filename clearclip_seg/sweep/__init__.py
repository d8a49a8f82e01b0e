"""The benchmark runner (``tools/benchmark.py``): plan, lock, group, run, resume.

A sweep is many runs over few image sets: the ablation grid is 20 last-block
variants on each of five image sets, and VOC21/VOC20, Context60/59 and
COCO-Object/COCO-Stuff read the same images. Runs that agree on everything up
to the last block's input share one pass (``clearclip_seg.evaluation.passes``):
blocks 0..L-2 run once per window, each run's last block, head, scoring and
metric run on the shared tokens, and each run still gets its own record, the
record a separate ``tools/test.py`` run writes.

Layers, each importing only those above it in this list and the package's
lower layers (``evaluation``, ``suites``, ``records``, ``checks``, ``protocol``):

* ``lock``: one runner per results folder;
* ``process``: child processes in their own group, ended with the runner; pid files;
* ``cost``: encoder passes and the whole-paper estimate;
* ``plan``: the matrix of one call, validated; each run's options, record, identity, status;
* ``units``: runs grouped into work units (shared passes and single runs);
* ``commands``: the process boundary (``tools/test.py`` or ``worker`` command of a unit);
* ``worker``: a shared pass in its own process (``python -m clearclip_seg.sweep.worker``);
* ``executors``: where units run (in this process, N local workers, a Slurm array);
* ``loop``: the one run loop (progress, per-run report, stop, signals);
* ``cli``: ``run_sweep``, what ``tools/benchmark.py`` calls.

Importing it does not import MMSeg.
"""
from .cli import run_sweep
from .lock import LockedError, ResultsLock
from .plan import PlanError, collect_runs, parse_benchmarks, parse_data_roots, plan_runs
from .units import WorkUnit, group_units

__all__ = ['run_sweep', 'LockedError', 'ResultsLock', 'PlanError', 'collect_runs', 'parse_benchmarks',
           'parse_data_roots', 'plan_runs', 'WorkUnit', 'group_units']
