"""Run matrices: which (config, overrides) pairs make up each named suite.

A run is a name, a config path and a list of ``--cfg-options`` items. Suites:

* ``main``: ClearCLIP with ViT-B/16 and ViT-L/14 (OpenAI) on all eight benchmarks.
* ``baselines``: vanilla CLIP, and the paper's MaskCLIP and SCLIP-style rows
  ("plain" = residual + FFN kept, "+ no-residual" = both dropped) with ViT-B/16
  on all eight.
* ``ablation``: attention {qk, qq, kk, vv, qq+kk} x residual x FFN with
  ViT-B/16 on the five benchmarks without background.
* ``backbones``: vanilla CLIP and ClearCLIP for every backbone family of
  ``protocol/backbones.py`` besides OpenAI's (OpenCLIP, MetaCLIP, DFN,
  MetaCLIP 2, SigLIP, SigLIP2, EVA02, PE-Core) on all eight benchmarks.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .protocol.backbones import BACKBONE_TABLE
from .protocol.benchmarks import BENCHMARKS, PAPER_ORDER
from .protocol.constants import config_path
from .protocol.presets import BASELINE_PRESETS, PRESETS, ablation_grid

# the backbones suite: every table row besides OpenAI's (those are the main suite), table order
COMPARED_BACKBONES = tuple(b.slug for b in BACKBONE_TABLE if b.family != 'OpenAI CLIP')
NO_BACKGROUND = tuple(k for k in PAPER_ORDER if not BENCHMARKS[k].background)


@dataclass
class Run:
    name: str
    config: str
    cfg_options: List[str] = field(default_factory=list)
    benchmark: Optional[str] = None
    preset: Optional[str] = None
    backbone: Optional[str] = None

    def info(self, suite: str) -> Dict:
        return dict(suite=suite, name=self.name, benchmark=self.benchmark, preset=self.preset,
                    backbone=self.backbone, overrides=list(self.cfg_options))


def preset_config(preset: str, backbone: str, benchmark: str) -> str:
    return config_path(preset, backbone, benchmark)


def preset_runs(presets: Sequence[str], backbones: Sequence[str], benchmarks: Sequence[str]) -> List[Run]:
    runs = []
    for p in presets:
        for bb in backbones:
            if bb not in PRESETS[p].backbones:
                continue
            for b in benchmarks:
                runs.append(Run(f'{p}_{bb}_{b}', preset_config(p, bb, b), [], b, p, bb))
    return runs


def ablation_runs(benchmarks: Sequence[str] = NO_BACKGROUND, backbone: str = 'vit-b16') -> List[Run]:
    runs = []
    for point in ablation_grid():
        tag = f"{point['attn']}_res{int(point['residual'])}_ffn{int(point['ffn'])}"
        opts = [f"model.last_block.attn={point['attn']}", f"model.last_block.residual={point['residual']}",
                f"model.last_block.ffn={point['ffn']}"]
        for b in benchmarks:
            runs.append(Run(f'ablation_{tag}_{backbone}_{b}', preset_config('clearclip', backbone, b), opts,
                            b, None, backbone))
    return runs


def suite_runs(suite: str, benchmarks: Optional[Sequence[str]] = None) -> List[Run]:
    """The runs of a named suite, optionally restricted to some benchmarks."""
    def pick(default):
        return [b for b in default if benchmarks is None or b in benchmarks]
    if suite == 'main':
        return preset_runs(['clearclip'], ['vit-b16', 'vit-l14'], pick(PAPER_ORDER))
    if suite == 'baselines':
        return preset_runs(list(BASELINE_PRESETS), ['vit-b16'], pick(PAPER_ORDER))
    if suite == 'ablation':
        return ablation_runs(pick(NO_BACKGROUND))
    if suite == 'backbones':
        return preset_runs(['clip', 'clearclip'], list(COMPARED_BACKBONES), pick(PAPER_ORDER))
    raise KeyError(f"unknown suite '{suite}': expected one of {list(SUITES)}")


SUITES = ('main', 'baselines', 'ablation', 'backbones')
