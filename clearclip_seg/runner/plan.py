"""The run matrix of one ``tools/benchmark.py`` call, validated before anything runs.

Typos must not turn into "0 runs, exit 0" or a silently ignored option: unknown
suites, benchmarks and ``--data-root`` keys are errors listing the valid names;
duplicate run names (which would share one record folder) are errors; and a
record only counts as done when its identity matches the run's (see
``identity.py``), otherwise the run is *stale* and the runner refuses to
continue, naming the difference, unless ``--force``.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..checks import DATA_ROOT_KEY
from ..protocol.benchmarks import BENCHMARKS
from ..suites import SUITES, Run, suite_runs
from .identity import identity_diff, parse_cfg_options, run_identity

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class PlanError(ValueError):
    """A mistake in the runner's arguments; the message is one line."""


@dataclass
class PlannedRun:
    suite: str
    run: Run
    config: str                 # absolute path
    options: List[str]          # every --cfg-options item the child gets (but the log interval)
    record: str
    identity: Dict = field(default_factory=dict)
    status: str = 'todo'        # todo | done | stale
    why: List[str] = field(default_factory=list)


def _names(keys) -> str:
    return ', '.join(keys)


def parse_benchmarks(text: Optional[str]) -> Optional[List[str]]:
    """``--benchmarks a,b`` -> ['a', 'b']; unknown names are an error listing the valid ones."""
    if text is None:
        return None
    keys = [k.strip() for k in text.split(',') if k.strip()]
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown or not keys:
        raise PlanError(f"unknown benchmark{'s' if len(unknown) > 1 else ''} {_names(unknown) or repr(text)} in "
                        f'--benchmarks: expected a comma-separated list of {_names(BENCHMARKS)}')
    return keys


def parse_data_roots(items: Sequence[str]) -> Dict[str, str]:
    """``--data-root KEY=PATH``: known keys only; paths absolute (relative to the current directory)."""
    roots = {}
    for item in items:
        key, sep, path = item.partition('=')
        if not sep or not key or not path:
            raise PlanError(f"--data-root '{item}' is not KEY=PATH (e.g. voc21=/data/VOCdevkit/VOC2012)")
        if key not in BENCHMARKS:
            raise PlanError(f"--data-root '{item}': unknown benchmark '{key}', expected one of {_names(BENCHMARKS)}")
        if not osp.isdir(path):
            raise PlanError(f"--data-root '{item}': no such folder '{osp.abspath(path)}'")
        roots[key] = osp.abspath(path)
    return roots


def _resolve_config(path: str, where: str) -> str:
    for candidate in ((path,) if osp.isabs(path) else (osp.abspath(path), osp.join(ROOT, path))):
        if osp.isfile(candidate):
            return candidate
    raise PlanError(f"config '{path}' ({where}) not found")


def _safe_name(name, where: str) -> str:
    if not isinstance(name, str) or not name.strip() or name in ('.', '..') or '/' in name or os.sep in name:
        raise PlanError(f"run name {name!r} in {where}: expected a non-empty name without '/' (it names a folder)")
    return name


def load_matrix(path: str) -> List[Run]:
    """Runs of a ``--matrix`` JSON file: ``[{"name", "config", "cfg_options": [...], "benchmark"}]``."""
    try:
        with open(path) as f:
            items = json.load(f)
        if not isinstance(items, list):
            raise TypeError('not a list')
        runs = [Run(_safe_name(i['name'], path), i['config'], list(i.get('cfg_options', [])), i.get('benchmark'))
                for i in items]
    except PlanError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PlanError(f"matrix file '{path}' is not a JSON list of "
                        f'{{"name", "config", "cfg_options"}} objects ({type(e).__name__}: {e})') from None
    for r in runs:
        if r.benchmark is not None and r.benchmark not in BENCHMARKS:
            raise PlanError(f"run '{r.name}' in {path}: unknown benchmark '{r.benchmark}', "
                            f'expected one of {_names(BENCHMARKS)}')
    return runs


def collect_runs(suites: Sequence[str], benchmarks: Optional[str], matrix: Optional[str],
                 configs: Sequence[str]) -> List[Tuple[str, Run]]:
    """Every (group, run) asked for; errors for unknown suites, empty selections and duplicate names."""
    keep = parse_benchmarks(benchmarks)
    groups: List[Tuple[str, List[Run], str]] = []
    for s in dict.fromkeys(suites):
        if s not in SUITES:
            raise PlanError(f"unknown suite '{s}': expected one of {_names(SUITES)}")
        runs = suite_runs(s, keep)
        if not runs:
            raise PlanError(f"suite '{s}' has no runs on --benchmarks {benchmarks}: its benchmarks are "
                            f"{_names(dict.fromkeys(r.benchmark for r in suite_runs(s)))}")
        groups.append((s, runs, f'suite {s}'))
    if matrix:
        groups.append((osp.splitext(osp.basename(matrix))[0], load_matrix(matrix), matrix))
    if configs:
        groups.append(('configs', [Run(osp.splitext(osp.basename(c))[0], c) for c in configs], '--configs'))
    if not groups:
        raise PlanError('nothing to run: give --suite, --matrix or --configs')
    seen: Dict[Tuple[str, str], str] = {}
    out = []
    for group, runs, where in groups:
        for run in runs:
            key = (group, run.name)
            if key in seen:
                raise PlanError(f"run name '{run.name}' appears twice ({seen[key]} and {where}): both would "
                                f"write {group}/{run.name}/record.json; names must be unique")
            seen[key] = where
            out.append((group, run))
    return out


def plan_runs(runs: List[Tuple[str, Run]], out: str, roots: Dict[str, str], extra: Sequence[str],
              force: bool = False) -> List[PlannedRun]:
    """Attach to each run its options, record path, identity and status (todo, done or stale)."""
    from ..apis.config import ConfigError, load_config
    from ..checks import resolve_data_root
    from ..records import load_record
    extra = list(extra)
    _parse(extra, '--cfg-options')  # one-line error for an item without '='
    planned = []
    for group, run in runs:
        config = _resolve_config(run.config, f'run {group}/{run.name}')
        opts = list(run.cfg_options) + extra
        if run.benchmark in roots:
            opts.append(f'{DATA_ROOT_KEY}={roots[run.benchmark]}')
        parsed = _parse(opts, f'run {group}/{run.name}: cfg_options')
        if DATA_ROOT_KEY in parsed and isinstance(parsed[DATA_ROOT_KEY], str):
            # typed relative to where the runner was started; the child gets it absolute
            parsed[DATA_ROOT_KEY] = osp.abspath(parsed[DATA_ROOT_KEY])
            opts.append(f'{DATA_ROOT_KEY}={parsed[DATA_ROOT_KEY]}')
        try:
            cfg = load_config(config, parsed)
        except ConfigError as e:
            raise PlanError(f'run {group}/{run.name}: {e}') from None
        resolve_data_root(cfg, parsed)
        p = PlannedRun(group, run, config, opts, osp.join(out, group, run.name, 'record.json'), run_identity(cfg))
        rec = load_record(p.record)
        if rec is not None:
            old = (rec.get('config') or {}).get('identity')
            if old is None:
                p.status, p.why = 'stale', ['the record has no run identity (written by an older version)']
            else:
                p.why = identity_diff(old, p.identity)
                p.status = 'stale' if p.why else 'done'
            if p.status == 'stale' and force:
                p.status = 'todo'
        planned.append(p)
    return planned


def _parse(items: Sequence[str], where: str) -> Dict:
    try:
        return parse_cfg_options(items, where)
    except ValueError as e:
        raise PlanError(str(e)) from None


def unused_roots(runs: List[Tuple[str, Run]], roots: Dict[str, str]) -> List[str]:
    """``--data-root`` keys that no run uses (a warning: a shared command line may name more)."""
    used = {r.benchmark for _, r in runs}
    return sorted(set(roots) - used)


def stale_message(planned: List[PlannedRun], limit: int = 3) -> Optional[str]:
    """One line naming the runs whose record was made with other settings (None when there are none)."""
    stale = [p for p in planned if p.status == 'stale']
    if not stale:
        return None
    shown = '; '.join(f"{p.suite}/{p.run.name} ({', '.join(p.why)})" for p in stale[:limit])
    more = f'; and {len(stale) - limit} more' if len(stale) > limit else ''
    return (f'{len(stale)} existing record(s) were made with other settings than asked for now: {shown}{more}. '
            'Use another --out, or --force to re-run them (their records are replaced)')
