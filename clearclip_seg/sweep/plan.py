"""Group the runs of a sweep into work units: shared passes and single runs.

Runs share a pass when everything up to the last block's input is the same:
the segmentor type, the CLIP (arch, weights, precision as resolved, QuickGELU),
the normalisation, the windows (``test_cfg``, all of it: a different batch of
windows would give different batches to the trunk), the random seed (random
weights are drawn from it) and the image set (data root, image folder, split
file, and the pipeline up to the labels: the resize). Everything after it may
differ per run: the method's last-block options, the vocabulary and templates,
the thresholds, the scoring, the post-processing and the labels and metric of
the benchmark. A model key this module does not know counts as "before the
last block": an unknown key never lets two runs share wrongly.

Only methods that declare ``shares_trunk`` (``DenseMethod``) are grouped;
``model.compile`` runs are not (the compiled graph would not see the shared
tokens). The engine checks again at run time that the grouped datasets list
the same images in the same order, and replays the trunk only on equal windows.
"""
import hashlib
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..runner.identity import as_plain

# model keys used only after the tokens entering the last block: they may differ within a pass
HEAD_KEYS = ('vocabulary', 'templates', 'logit_scale', 'logit_bias', 'prob_thd', 'area_thd', 'last_block',
             'method', 'text_cache', 'postprocess', 'scoring', 'fused_attn')
SHAREABLE_SEGMENTORS = ('ClearCLIPSegmentor',)


class ShareError(ValueError):
    """Runs asked to share a pass cannot; the message is one line naming them."""


@dataclass
class WorkUnit:
    """What one worker runs in one process: a shared pass of several runs, or one run.

    Attributes:
        runs: the runner's planned runs (``clearclip_seg.runner.plan.PlannedRun``).
        shared: run through the shared-pass engine (several runs, or ``--share`` of one).
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
        first = self.runs[0].run.name
        return first if len(self.runs) == 1 else f'{first}+{len(self.runs) - 1}'


def method_shares_trunk(model_cfg: dict) -> Tuple[bool, str]:
    """(shareable, why not) from a model config's method (``model.method`` or the legacy ``last_block``)."""
    if model_cfg.get('type') not in SHAREABLE_SEGMENTORS:
        return False, f"segmentor {model_cfg.get('type')!r} is not one the shared pass knows"
    if model_cfg.get('compile'):
        return False, 'model.compile=True'
    method = model_cfg.get('method')
    if not method:
        return True, ''  # the switchable last block (LastBlock)
    from ..methods import get_method_class
    name = method.get('type') if isinstance(method, dict) else None
    try:
        cls = get_method_class(name)
    except ValueError:
        return False, f'unknown method {name!r}'
    if not getattr(cls, 'shares_trunk', False):
        return False, f'method {name} does not declare shares_trunk'
    return True, ''


def image_set_key(cfg) -> dict:
    """The images a run reads, as its config says: root, folder, split, suffix and the pipeline before the labels."""
    ds = as_plain(cfg.test_dataloader.dataset)
    pipeline = [t for t in ds.get('pipeline') or [] if t.get('type') != 'LoadAnnotations']
    return dict(data_root=osp.abspath(ds['data_root']) if ds.get('data_root') else None,
                img_path=(ds.get('data_prefix') or {}).get('img_path'), ann_file=ds.get('ann_file'),
                img_suffix=ds.get('img_suffix'), pipeline=pipeline,
                batch_size=as_plain(cfg.test_dataloader).get('batch_size', 1))


def share_key(cfg, precision: str) -> Tuple[Optional[dict], str]:
    """The settings a run must have in common with the others of a shared pass.

    Args:
        cfg: the run's resolved config (overrides merged, data root absolute).
        precision: the precision ``'auto'`` resolves to where the run will execute.

    Returns:
        (key, '') or (None, why the run cannot share).
    """
    model = as_plain(cfg.model)
    ok, why = method_shares_trunk(model)
    if not ok:
        return None, why
    trunk = {k: v for k, v in model.items() if k not in HEAD_KEYS}
    trunk.setdefault('clip', {})['precision'] = precision
    randomness = as_plain(cfg.get('randomness') or {})
    return dict(model=trunk, seed=randomness.get('seed'), images=image_set_key(cfg)), ''


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_run_config(p):
    """A planned run's resolved config, loaded as its own process would load it."""
    from ..apis.config import load_config
    from ..checks import resolve_data_root
    from ..runner.identity import parse_cfg_options
    options = parse_cfg_options(p.options)
    cfg = load_config(p.config, options)
    resolve_data_root(cfg, options)
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
    if method.get('type') not in (None, 'LastBlock'):
        return 'qq', False  # cost of a ClearCLIP head, for the estimate only
    lb = {**dict(attn='qq', ffn=False), **dict(model.get('last_block') or {}), **dict(method)}
    return lb.get('attn', 'qq'), bool(lb.get('ffn', False))


def group_units(planned: Sequence, share: bool = True, loader=load_run_config) -> List[WorkUnit]:
    """Work units of planned runs, in the order of their first run.

    Args:
        planned: ``PlannedRun`` objects (each with ``config``, ``options``, ``identity``, ``run``).
        share: group runs into shared passes; False gives one unit per run.
        loader: ``PlannedRun -> config`` (tests pass a stub).

    Returns:
        Units; each run is in exactly one.
    """
    from ..protocol.benchmarks import BENCHMARKS
    from .cost import pass_factor, split_flops, vision_geometry
    units: List[WorkUnit] = []
    by_key: Dict[str, WorkUnit] = {}
    for p in planned:
        cfg = loader(p)
        precision = (p.identity or {}).get('precision') or (cfg.model.get('clip') or {}).get('precision', 'fp32')
        key, why = share_key(cfg, precision) if share else (None, '--no-share')
        bench = BENCHMARKS.get(cfg.get('benchmark') or p.run.benchmark or '')
        clip = cfg.model.get('clip') or {}
        geo = vision_geometry(clip.get('arch'), clip.get('arch_file'))
        crop = tuple((cfg.model.get('test_cfg') or {}).get('crop_size', (448, 448)))
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
        names = [f'{status(p)}{p.suite}/{p.run.name}' for p in u.runs]
        more = f' and {len(names) - show} more' if len(names) > show else ''
        lines.append(f"      {', '.join(names[:show])}{more}")
    return lines
