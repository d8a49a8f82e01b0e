"""Run one work unit in this process: ``python -m clearclip_seg.sweep.worker UNIT.json``.

The benchmark runner writes a unit file per shared pass and runs this module
in a child process (its own process group, one GPU), as it runs
``tools/test.py`` for a single run. A unit file::

    {"log_interval": 10,
     "runs": [{"config": ..., "options": ["k=v", ...], "record": ..., "work_dir": ..., "run_info": {...}}]}

``options`` are ``--cfg-options`` items, parsed exactly as ``tools/test.py``
parses them, so each record's ``config.cfg_options`` is the one a separate
run would store. Exit codes: 0 done, 2 a one-line error (``error: ...``).
"""
import json
import sys
from typing import List

from .engine import RunSpec


def load_unit(path: str) -> dict:
    with open(path) as f:
        unit = json.load(f)
    if not isinstance(unit, dict) or not isinstance(unit.get('runs'), list) or not unit['runs']:
        raise ValueError(f"unit file '{path}': expected {{\"runs\": [...]}} with at least one run")
    return unit


def unit_specs(unit: dict) -> List[RunSpec]:
    from ..runner.identity import parse_cfg_options
    return [RunSpec(config=r['config'], cfg_options=parse_cfg_options(r.get('options') or []),
                    record=r['record'], work_dir=r.get('work_dir'), run_info=r.get('run_info'),
                    name=(r.get('run_info') or {}).get('name', ''))
            for r in unit['runs']]


def run_unit_file(path: str) -> int:
    """Run the unit in ``path``; returns the exit code."""
    from ..apis.config import ConfigError
    from .plan import ShareError
    try:
        unit = load_unit(path)
        from .engine import run_shared_pass
        run_shared_pass(unit_specs(unit), log=lambda line: print(line, flush=True),
                        log_interval=int(unit.get('log_interval', 10)))
    except (ConfigError, ShareError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        print(f'error: {msg}', file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print('usage: python -m clearclip_seg.sweep.worker UNIT.json', file=sys.stderr)
        return 2
    return run_unit_file(argv[0])


if __name__ == '__main__':
    sys.exit(main())
