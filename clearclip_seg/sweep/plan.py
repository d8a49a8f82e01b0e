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
from typing import Dict, List, Optional, Sequence

from ..checks import DATA_ROOT_KEY, resolve_data_root
from ..cli_args import under_data_dir
from ..config import load_config
from ..errors import ConfigError
from ..evaluation.identity import flatten_options, identity_diff, parse_cfg_options, run_identity
from ..evaluation.run import Run
from ..protocol.benchmarks import BENCHMARKS
from ..records import load_record
from ..repo_root import ROOT
from ..suites import SUITES, suite_runs


class PlanError(ConfigError):
    """A mistake in the runner's arguments; the message is one line."""


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
        runs = [Run(_safe_name(i['name'], path), i['config'], _parse(list(i.get('cfg_options', [])),
                                                                     f"run '{i['name']}' in {path}: cfg_options"),
                    i.get('benchmark')) for i in items]
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
                 configs: Sequence[str]) -> List[Run]:
    """Every run asked for, its ``suite`` set (a matrix's is the file's stem; ``--configs``: ``configs``);
    errors for unknown suites, empty selections and duplicate names."""
    keep = parse_benchmarks(benchmarks)
    groups = []
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
    seen: Dict[tuple, str] = {}
    out = []
    for group, runs, where in groups:
        for run in runs:
            key = (group, run.name)
            if key in seen:
                raise PlanError(f"run name '{run.name}' appears twice ({seen[key]} and {where}): both would "
                                f"write {group}/{run.name}/record.json; names must be unique")
            seen[key] = where
            run.suite = group
            out.append(run)
    return out


def plan_runs(runs: List[Run], out: str, roots: Dict[str, str], extra: Sequence[str],
              force: bool = False, data_dir: Optional[str] = None) -> List[Run]:
    """Give each run its full options, record path, identity and status (todo, done or stale), in place.

    The record's ``run`` keeps what the suite says (its own overrides); the options
    add ``extra`` (``--cfg-options`` of the runner) and the ``--data-root`` of its benchmark:
    its own root (``roots``), else its config's ``data/...`` root moved under the data
    folder ``data_dir`` (``--data-root DIR``, ``cli_args.under_data_dir``).
    """
    if data_dir is not None and not osp.isdir(data_dir):
        raise PlanError(f"--data-root '{data_dir}': no such data folder '{osp.abspath(data_dir)}'")
    added = _parse(list(extra), '--cfg-options')
    for run in runs:
        where = f'run {run.title}'
        run.config = _resolve_config(run.config, where)
        run.run_info = run.info()
        options = flatten_options({**run.options, **added})  # what the run's own process will parse
        if run.benchmark in roots:
            options[DATA_ROOT_KEY] = roots[run.benchmark]
        if isinstance(options.get(DATA_ROOT_KEY), str):
            # typed relative to where the runner was started; the child gets it absolute
            options[DATA_ROOT_KEY] = osp.abspath(options[DATA_ROOT_KEY])
        run.options = options
        try:
            run.option_items()  # options that would not survive the command line fail here, named
            cfg = load_config(run.config, options)
        except (ConfigError, ValueError) as e:
            raise PlanError(f'{where}: {e}') from None
        moved = under_data_dir(cfg.test_dataloader.dataset.get('data_root') or '', data_dir) \
            if data_dir is not None and DATA_ROOT_KEY not in options else None
        if moved is not None:  # the same as the child's load_config with this override
            options[DATA_ROOT_KEY] = cfg.test_dataloader.dataset['data_root'] = osp.abspath(moved)
        resolve_data_root(cfg, options)
        run.cfg = cfg
        run.record = osp.join(out, run.suite, run.name, 'record.json')
        run.work_dir = osp.dirname(run.record)
        run.identity = run_identity(cfg)
        run.status, run.why = 'todo', []
        rec = load_record(run.record)
        if rec is not None:
            old = (rec.get('config') or {}).get('identity')
            if old is None:
                run.status, run.why = 'stale', ['the record has no run identity (written by an older version)']
            else:
                run.why = identity_diff(old, run.identity)
                run.status = 'stale' if run.why else 'done'
            if run.status == 'stale' and force:
                run.status = 'todo'
    return runs


def _parse(items: Sequence[str], where: str) -> Dict:
    try:
        return parse_cfg_options(items, where)
    except ValueError as e:
        raise PlanError(str(e)) from None


def unused_roots(runs: List[Run], roots: Dict[str, str]) -> List[str]:
    """``--data-root`` keys that no run uses (a warning: a shared command line may name more)."""
    used = {r.benchmark for r in runs}
    return sorted(set(roots) - used)


def stale_message(planned: List[Run], limit: int = 3) -> Optional[str]:
    """One line naming the runs whose record was made with other settings (None when there are none)."""
    stale = [p for p in planned if p.status == 'stale']
    if not stale:
        return None
    shown = '; '.join(f"{p.title} ({', '.join(p.why)})" for p in stale[:limit])
    more = f'; and {len(stale) - limit} more' if len(stale) > limit else ''
    return (f'{len(stale)} existing record(s) were made with other settings than asked for now: {shown}{more}. '
            'Use another --out, or --force to re-run them (their records are replaced)')
