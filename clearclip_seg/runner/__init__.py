"""The benchmark runner (``tools/benchmark.py``): plan, lock, run, resume.

``plan`` validates the matrix and decides which records are done or stale,
``identity`` says what makes two runs the same, ``lock`` keeps a second runner
out of a results folder, ``process`` runs each evaluation in its own process
group, and ``sweep`` ties them together. Importing it does not import MMSeg.
"""
from .identity import identity_diff, parse_cfg_options, run_identity
from .lock import LockedError, ResultsLock
from .plan import PlanError, collect_runs, parse_benchmarks, parse_data_roots, plan_runs
from .sweep import run_sweep

__all__ = ['identity_diff', 'parse_cfg_options', 'run_identity', 'LockedError', 'ResultsLock', 'PlanError',
           'collect_runs', 'parse_benchmarks', 'parse_data_roots', 'plan_runs', 'run_sweep']
