"""Run matrices: which (config, overrides) pairs make up each named suite.

A run (``clearclip_seg.evaluation.run.Run``) is a name, a config path and its
config overrides as data (``{'a.b': value}``). Suites:

* ``main``: ClearCLIP with ViT-B/16 and ViT-L/14 (OpenAI) on all eight benchmarks.
* ``baselines``: vanilla CLIP, and the paper's MaskCLIP and SCLIP-style rows
  ("plain" = residual + FFN kept, "+ no-residual" = both dropped) with ViT-B/16
  on all eight.
* ``ablation``: attention {qk, qq, kk, vv, qq+kk} x residual x FFN with
  ViT-B/16 on the five benchmarks without background.
* ``backbones``: vanilla CLIP and ClearCLIP for every backbone family of
  ``protocol/backbones.py`` besides OpenAI's (OpenCLIP, MetaCLIP, DFN,
  MetaCLIP 2, SigLIP, SigLIP2, EVA02, PE-Core) on all eight benchmarks.
* ``methods``: ClearCLIP and every method card of ``protocol/methods.py``
  (SCLIP, NACLIP, ResCLIP, ProxyCLIP, SC-CLIP, GEM) with ViT-B/16 on all eight
  benchmarks, each under its own protocol (its generated configs as they are).
* ``methods-common``: the same runs under the common protocol (ClearCLIP's:
  448 short side, 448/224 windows, padding, logit scale 50, ClearCLIP's
  vocabularies and thresholds, no PAMR): the own configs plus the overrides of
  ``common_setting``; ``methods-common-pamr``: the same with PAMR for all.
* ``floss``: FLOSS's own cards (``floss-naclip``, ``floss-maskclip``) on the five
  benchmarks without background; ``floss-common``: ClearCLIP and every method
  under the common protocol on those five, each without and with the FLOSS text
  head (the NACLIP base's rankings).

A run's ``protocol`` (``own``, ``common``, ``common+pamr``) and ``card`` are stored
in its record (``run``), so the tables label the rows.

Each suite is one function registered with ``@register_suite(name)``
(``SUITE_BUILDERS``); adding one is docs/extending.md, "A sweep suite".
"""
from typing import Callable, Dict, List, Optional, Sequence

from .evaluation.run import Run
from .protocol.backbones import BACKBONE_TABLE
from .protocol.benchmarks import BENCHMARKS, PAPER_ORDER
from .protocol import constants
from .protocol.constants import config_path
from .protocol.methods import DENSE_CARDS, FLOSS_BENCHMARKS, METHOD_CARDS, common_setting
from .protocol.presets import BASELINE_PRESETS, PRESETS, ablation_grid

# the backbones suite: every table row besides OpenAI's (those are the main suite), table order
COMPARED_BACKBONES = tuple(b.slug for b in BACKBONE_TABLE if b.family != 'OpenAI CLIP')
NO_BACKGROUND = tuple(k for k in PAPER_ORDER if not BENCHMARKS[k].background)


def preset_config(preset: str, backbone: str, benchmark: str) -> str:
    return config_path(preset, backbone, benchmark)


def preset_runs(presets: Sequence[str], backbones: Sequence[str], benchmarks: Sequence[str]) -> List[Run]:
    runs = []
    for p in presets:
        for bb in backbones:
            if bb not in PRESETS[p].backbones:
                continue
            for b in benchmarks:
                runs.append(Run(f'{p}_{bb}_{b}', preset_config(p, bb, b), {}, b, p, bb))
    return runs


def ablation_runs(benchmarks: Sequence[str] = NO_BACKGROUND, backbone: str = 'vit-b16') -> List[Run]:
    runs = []
    for point in ablation_grid():
        tag = f"{point['attn']}_res{int(point['residual'])}_ffn{int(point['ffn'])}"
        opts = {f'model.last_block.{k}': point[k] for k in ('attn', 'residual', 'ffn')}
        for b in benchmarks:
            runs.append(Run(f'ablation_{tag}_{backbone}_{b}', preset_config('clearclip', backbone, b), dict(opts),
                            b, None, backbone))
    return runs


# protocol name of the methods suites -> whether PAMR is switched on for every method
METHOD_PROTOCOLS = {'own': None, 'common': False, 'common+pamr': True}


def method_runs(protocol: str, benchmarks: Sequence[str], backbone: str = 'vit-b16',
                cards: Sequence[str] = DENSE_CARDS) -> List[Run]:
    """ClearCLIP and every method card on ``benchmarks``, under ``protocol``.

    Each card runs on ``backbone`` when it has configs for it, else on its first
    backbone (the one its authors published).

    ``own``: each card's generated config as it is (ClearCLIP's protocol is its
    own). ``common`` / ``common+pamr``: the same configs with the protocol
    overrides of ``common_setting`` (the method keeps its own options).
    """
    pamr = METHOD_PROTOCOLS[protocol]
    tag = '' if protocol == 'own' else '_' + protocol.replace('+', '-')
    runs = []
    for b in benchmarks:
        # ClearCLIP's configs have no model.postprocess key to replace (no _delete_: it would stay in the dict)
        opts = {'model.postprocess.type': 'PAMR', 'model.postprocess.num_iter': constants.PAMR_NUM_ITER,
                'model.postprocess.dilations': tuple(constants.PAMR_DILATIONS)} if pamr else {}
        runs.append(Run(f'clearclip_{backbone}_{b}{tag}', preset_config('clearclip', backbone, b), opts, b,
                        'clearclip', backbone, 'clearclip', protocol))
    for name in cards:
        card = METHOD_CARDS[name]
        # a card made for other backbones only runs on its authors' first one (LPOSS: OpenCLIP ViT-B/16)
        own = backbone if backbone in card.backbones else card.backbones[0]
        for b in (b for b in benchmarks if card.covers(b)):
            opts = {} if pamr is None else {k: v for k, v in common_setting(card, b, pamr=pamr, backbone=own)
                                            .cfg_options().items() if k not in ('model.method', 'model.last_block')}
            runs.append(Run(f'{name}_{own}_{b}{tag}', config_path(name, own, b), opts, b, None,
                            own, name, protocol))
    return runs


# suite name -> function(benchmarks) returning its runs on those benchmarks, in registration order
SUITE_BUILDERS: Dict[str, Callable[[Sequence[str]], List[Run]]] = {}


def register_suite(name: str, benchmarks: Sequence[str] = PAPER_ORDER):
    """Register a suite: ``@register_suite('name')`` on a function ``f(benchmarks) -> List[Run]``.

    Args:
        name: the suite's name on the command line (``tools/benchmark.py --suite NAME``).
        benchmarks: the suite's benchmarks in table order; ``--benchmarks`` restricts them and
            the function gets what is left.
    """
    def decorate(fn: Callable[[Sequence[str]], List[Run]]):
        if name in SUITE_BUILDERS:
            raise ValueError(f"suite '{name}' is registered twice")
        SUITE_BUILDERS[name] = lambda restrict: fn([b for b in benchmarks if restrict is None or b in restrict])
        return fn
    return decorate


@register_suite('main')
def main_suite(benchmarks: Sequence[str]) -> List[Run]:
    return preset_runs(['clearclip'], ['vit-b16', 'vit-l14'], benchmarks)


@register_suite('baselines')
def baselines_suite(benchmarks: Sequence[str]) -> List[Run]:
    return preset_runs(list(BASELINE_PRESETS), ['vit-b16'], benchmarks)


@register_suite('ablation', NO_BACKGROUND)
def ablation_suite(benchmarks: Sequence[str]) -> List[Run]:
    return ablation_runs(benchmarks)


@register_suite('backbones')
def backbones_suite(benchmarks: Sequence[str]) -> List[Run]:
    return preset_runs(['clip', 'clearclip'], list(COMPARED_BACKBONES), benchmarks)


@register_suite('methods')
def methods_suite(benchmarks: Sequence[str]) -> List[Run]:
    return method_runs('own', benchmarks)


@register_suite('methods-common')
def methods_common_suite(benchmarks: Sequence[str]) -> List[Run]:
    return method_runs('common', benchmarks)


@register_suite('methods-common-pamr')
def methods_common_pamr_suite(benchmarks: Sequence[str]) -> List[Run]:
    return method_runs('common+pamr', benchmarks)


# FLOSS over any method under the common protocol: the NACLIP base's rankings (OpenAI ViT-B/16),
# the authors' text-head settings for that base (``tools/floss_rankings.py`` makes a method's own)
FLOSS_COMMON_HEAD = dict(type='FLOSS', rankings='naclip', backbone='vit-b16', top_k=4, logit_scale=100.0,
                         renormalize=True)


@register_suite('floss', FLOSS_BENCHMARKS)
def floss_suite(benchmarks: Sequence[str]) -> List[Run]:
    """FLOSS's own cards (NACLIP base on ViT-B/16, MaskCLIP base on OpenCLIP ViT-B/16), own protocols."""
    runs = []
    for name, card in METHOD_CARDS.items():
        if name in DENSE_CARDS:
            continue
        for backbone in card.backbones:
            runs += [Run(f'{name}_{backbone}_{b}', config_path(name, backbone, b), {}, b, None, backbone, name,
                         'own') for b in benchmarks if card.covers(b)]
    return runs


def _accepts_text_head(card: str) -> bool:
    from .methods.registry import get_method_class  # lazy: the methods import torch
    return get_method_class(METHOD_CARDS[card].method['type']).accepts_text_head


@register_suite('floss-common', FLOSS_BENCHMARKS)
def floss_common_suite(benchmarks: Sequence[str]) -> List[Run]:
    """ClearCLIP and every dense method under the common protocol, without and with FLOSS (its text head)."""
    runs = []
    for run in method_runs('common', benchmarks):
        if run.card in METHOD_CARDS and not _accepts_text_head(run.card):
            continue   # LPOSS, Trident, CLIPtrase: whole images or class votes, no per-window rows to fuse
        head = dict(FLOSS_COMMON_HEAD, benchmark=run.benchmark)
        opts = {**run.options, 'model.text_head': head}
        runs += [run, Run(run.name + '_floss', run.config, opts, run.benchmark, run.preset, run.backbone,
                          run.card, 'common+floss')]
    return runs


# the registered suite names, in registration order (a live view: a suite registered later is in it too)
SUITES = SUITE_BUILDERS.keys()


def suite_runs(suite: str, benchmarks: Optional[Sequence[str]] = None) -> List[Run]:
    """The runs of a named suite, optionally restricted to some benchmarks."""
    if suite not in SUITE_BUILDERS:
        raise KeyError(f"unknown suite '{suite}': expected one of {list(SUITE_BUILDERS)}")
    return SUITE_BUILDERS[suite](benchmarks)
