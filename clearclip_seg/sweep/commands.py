"""The process boundary: the command that runs one work unit, in its own process.

A single run is ``tools/test.py`` (``torchrun`` over N processes with
``--parallel data``); a shared pass is ``python -m clearclip_seg.sweep.worker
UNIT.json``. Here, and only here, a run's options (data) become
``--cfg-options`` strings (``Run.option_items`` / ``Run.to_unit``); the child
parses them back as ``tools/test.py`` parses them, so every record's
``config.cfg_options`` is what a separate ``tools/test.py`` call would store.
"""
import json
import os
import os.path as osp
import socket
import sys
from typing import List, Tuple

from ..evaluation.identity import render_options
from ..repo_root import ROOT

PASSES_DIR = '.passes'   # unit files and logs of shared passes, inside the results folder
LOG_KEY = 'default_hooks.logger.interval'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def child_command(run, gpus: int = 1, log_interval: int = 10) -> List[str]:
    """The ``tools/test.py`` (or ``torchrun``) command of one planned run."""
    test = osp.join(ROOT, 'tools', 'test.py')
    if gpus > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={gpus}',
               f'--master_port={_free_port()}', test, run.config, '--launcher', 'pytorch']
    else:
        cmd = [sys.executable, test, run.config]
    cmd += ['--work-dir', osp.dirname(run.record), '--record', run.record, '--run-info', json.dumps(run.info())]
    return cmd + ['--cfg-options', *render_options({**run.options, LOG_KEY: log_interval},
                                                   f'run {run.title}: cfg_options')]


def unit_command(unit, index: int, out: str, log_interval: int = 10,
                 procs_per_run: int = 1) -> Tuple[List[str], str]:
    """(command, log path) of one unit; a shared pass's unit file is written here."""
    for run in unit.runs:
        os.makedirs(osp.dirname(run.record), exist_ok=True)
    if not unit.shared:
        run = unit.runs[0]
        return child_command(run, procs_per_run, log_interval), osp.join(osp.dirname(run.record), 'log.txt')
    folder = osp.join(out, PASSES_DIR, f'{index:03d}-{unit.key}')
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, 'unit.json')
    with open(path, 'w') as f:
        json.dump(dict(log_interval=log_interval, runs=[r.to_unit({LOG_KEY: log_interval}) for r in unit.runs]),
                  f, indent=1)
    return [sys.executable, '-m', 'clearclip_seg.sweep.worker', path], osp.join(folder, 'log.txt')
