"""Group the runs of a sweep into work units: shared passes and single runs.

Which runs may share a pass is ``clearclip_seg.evaluation.share``'s rule; this
module applies it to the runs still to do, estimates each unit's cost
(``cost``) and describes the units for the dry run.
"""
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..checks import resolve_data_root
from ..config import load_config
from ..evaluation.share import key_digest, share_key
from ..protocol import constants
from ..protocol.benchmarks import BENCHMARKS
from .cost import pass_factor, split_flops, vision_geometry


@dataclass
class WorkUnit:
    """What one worker runs in one process: a shared pass of several runs, or one run.

    Attributes:
        runs: the planned runs (``clearclip_seg.evaluation.run.Run``).
        shared: a pass of several runs (a unit of one runs as a single run).
        key: digest of the sharing key (None when the runs cannot share).
        label: backbone, precision and image set, for the dry run and the logs.
        images: images of the image set by the protocol (None for an unknown benchmark).
        passes: (shared, separate) estimated cost in encoder passes.
        why_alone: why a run is a unit of its own ('' when it shares or was not asked to).
    """
    runs: list
    shared: bool = False
    key: Optional[str] = None
    label: str = ''
    images: Optional[int] = None
    passes: Tuple[float, float] = (0.0, 0.0)
    why_alone: str = ''
    heads: List[Tuple[float, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        first = self.runs[0].name
        return first if len(self.runs) == 1 else f'{first}+{len(self.runs) - 1}'


def load_run_config(run):
    """A planned run's resolved config (``plan.plan_runs`` loaded it), loaded as its own process would load it."""
    if run.cfg is not None:
        return run.cfg
    cfg = load_config(run.config, run.options)
    resolve_data_root(cfg, run.options)
    return cfg


def _label(cfg, precision: str) -> str:
    clip = cfg.model.get('clip') or {}
    arch = clip.get('arch') or osp.splitext(osp.basename(clip.get('arch_file') or '?'))[0]
    ds = cfg.test_dataloader.dataset
    where = osp.join(ds.get('data_root') or '', (ds.get('data_prefix') or {}).get('img_path') or '')
    return f"{arch} {clip.get('pretrained')} {precision} on {where}"


def _heads(cfg) -> Tuple[str, bool]:
    model = cfg.model
    method = model.get('method') or {}
    clearclip = constants.CLEARCLIP_LAST_BLOCK
    if method.get('type') not in (None, 'LastBlock'):
        return clearclip['attn'], bool(clearclip['ffn'])  # cost of a ClearCLIP head, for the estimate only
    lb = {**clearclip, **dict(model.get('last_block') or {}), **dict(method)}
    return lb['attn'], bool(lb['ffn'])


def group_units(planned: Sequence, share: bool = True, loader=load_run_config) -> List[WorkUnit]:
    """Work units of planned runs, in the order of their first run.

    Args:
        planned: planned ``Run`` objects (each with ``config``, ``options``, ``identity``).
        share: group runs into shared passes; False gives one unit per run.
        loader: ``Run -> config`` (tests pass a stub).

    Returns:
        Units; each run is in exactly one.
    """
    units: List[WorkUnit] = []
    by_key: Dict[str, WorkUnit] = {}
    for p in planned:
        cfg = loader(p)
        precision = (p.identity or {}).get('precision') or (cfg.model.get('clip') or {}).get('precision', 'fp32')
        key, why = share_key(cfg, precision) if share else (None, '--no-share')
        bench = BENCHMARKS.get(cfg.get('benchmark') or p.benchmark or '')
        clip = cfg.model.get('clip') or {}
        geo = vision_geometry(clip.get('arch'), clip.get('arch_file'))
        crop = tuple((cfg.model.get('test_cfg') or {}).get('crop_size', (constants.SLIDE_CROP,) * 2))
        attn, ffn = _heads(cfg)
        trunk, head = split_flops(geo, crop, attn, ffn)
        if key is None:
            unit = WorkUnit([p], False, None, _label(cfg, precision), bench.num_images if bench else None,
                            why_alone=why)
            unit.heads.append((trunk, head))
            units.append(unit)
            continue
        digest = key_digest(key)
        unit = by_key.get(digest)
        if unit is None:
            unit = by_key[digest] = WorkUnit([], True, digest, _label(cfg, precision),
                                             bench.num_images if bench else None)
            units.append(unit)
        unit.runs.append(p)
        unit.heads.append((trunk, head))
    for unit in units:
        trunk = max(t for t, _ in unit.heads)
        shared, separate = pass_factor(trunk, [h for _, h in unit.heads])
        n = unit.images or 0
        unit.passes = (n * (shared if unit.shared else separate), n * separate)
        if unit.shared and len(unit.runs) == 1:
            unit.shared = False  # nothing to share: the plain one-run path
    return units


def describe_units(units: Sequence[WorkUnit], status=lambda p: '', show: int = 3) -> List[str]:
    """Lines of the dry run: the total cost, then per unit its settings and (the first ``show`` of) its runs."""
    lines = []
    shared_total = sum(u.passes[0] for u in units)
    separate_total = sum(u.passes[1] for u in units)
    n_shared = sum(u.shared for u in units)
    lines.append(f'{len(units)} work unit(s) ({n_shared} shared pass(es)) for {sum(len(u.runs) for u in units)} '
                 f'run(s): ~{shared_total:,.0f} encoder passes (image x forward) instead of '
                 f'~{separate_total:,.0f} one run at a time'
                 + (f' ({separate_total / shared_total:.1f}x less)' if shared_total else ''))
    for i, u in enumerate(units, 1):
        kind = f'shared pass of {len(u.runs)} runs' if u.shared else 'single run'
        alone = f'; alone: {u.why_alone}' if u.why_alone and u.why_alone != '--no-share' else ''
        images = f'{u.images} images' if u.images else 'images: ?'
        lines.append(f'  unit {i}: {kind}, {u.label}, {images}, ~{u.passes[0]:,.0f} passes{alone}')
        names = [f'{status(p)}{p.title}' for p in u.runs]
        more = f' and {len(names) - show} more' if len(names) > show else ''
        lines.append(f"      {', '.join(names[:show])}{more}")
    return lines
