"""Run one shared pass in this process: ``python -m clearclip_seg.sweep.worker UNIT.json``.

The benchmark runner writes a unit file per shared pass and runs this module
in a child process (its own process group, one GPU), as it runs
``tools/test.py`` for a single run. A unit file::

    {"log_interval": 10,
     "runs": [{"name": ..., "config": ..., "options": ["k=v", ...], "record": ..., "work_dir": ...,
               "run_info": {...}}]}

``options`` are ``--cfg-options`` items, parsed exactly as ``tools/test.py``
parses them (``Run.from_unit``). Exit codes: 0 every run recorded; 1 some runs
failed (each named in an ``error: run NAME: ...`` line and in a failure marker
next to its record; the others are recorded); 2 the whole pass failed
(``error: ...``).
"""
import json
import sys

from ..errors import ConfigError
from ..evaluation.run import Run
from ..evaluation.share import ShareError


def load_unit(path: str) -> dict:
    with open(path) as f:
        unit = json.load(f)
    if not isinstance(unit, dict) or not isinstance(unit.get('runs'), list) or not unit['runs']:
        raise ValueError(f"unit file '{path}': expected {{\"runs\": [...]}} with at least one run")
    return unit


def _line(e: BaseException) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)


def run_unit_file(path: str) -> int:
    """Run the unit in ``path``; returns the exit code."""
    try:
        unit = load_unit(path)
        runs = [Run.from_unit(r) for r in unit['runs']]
        from ..evaluation.passes import run_pass  # lazy: a bad unit file is reported before torch loads
        run_pass(runs, log=lambda line: print(line, flush=True), log_interval=int(unit.get('log_interval', 10)))
    except (ConfigError, ShareError, ValueError, OSError) as e:
        print(f'error: {_line(e)}', file=sys.stderr, flush=True)
        return 2
    failed = [r for r in runs if r.error is not None]
    for r in failed:
        print(f'error: run {r.name}: {_line(r.error)}', file=sys.stderr, flush=True)
    return 1 if failed else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print('usage: python -m clearclip_seg.sweep.worker UNIT.json', file=sys.stderr)
        return 2
    return run_unit_file(argv[0])


if __name__ == '__main__':
    sys.exit(main())
