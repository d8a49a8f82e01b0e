"""Protocol cards of the training-free methods: each one's own published settings, as data.

A card holds what the authors' evaluation code runs per benchmark: resize short
side, slide windows (or the whole image), how windows meet the patch grid,
logit scale, ``prob_thd``, ``area_thd``, post-processor, vocabulary and the
method's own options. ``MethodCard.setting(benchmark)`` merges the card's
defaults with the benchmark's overrides; ``common_setting`` puts any method
under one shared protocol instead (ClearCLIP's: 448 short side, 448/224
windows, padding, logit scale 50, ClearCLIP's vocabularies and thresholds, no
PAMR unless asked), keeping the method's own options. ``tools/make_configs.py``
writes ``configs/<card>/<card>_<backbone>_<benchmark>.py`` from the cards, and
``tests/test_configs.py`` checks each config resolves to its card.

Each card's ``source`` names the official repository, commit and files its values
were read from. Adding a method is one ``MethodCard`` in ``METHOD_CARDS`` (its
``defaults`` and per-benchmark ``overrides``; docs/extending.md, "A method").

This module imports nothing heavy (no torch, no MMSeg).
"""
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from ..options import option_text
from .benchmarks import BENCHMARKS
from .constants import (LOGIT_SCALE, PAMR_DILATIONS, PAMR_NUM_ITER, RESIZE_LONG_SIDE, RESIZE_SHORT_SIDE, SLIDE_CROP,
                        SLIDE_STRIDE)

# The SCLIP family's class-name files (SCLIP, NACLIP, ResCLIP, SC-CLIP share them): shipped
# where they differ from ClearCLIP's, the same names elsewhere (clearclip_seg/vocab.py).
# Each benchmark entry names them (``Benchmark.method_vocabularies``).
SCLIP_FAMILY_VOCABULARIES: Dict[str, str] = {k: b.vocabulary_for('sclip') for k, b in BENCHMARKS.items()}

# ProxyCLIP's class-name files, verbatim: synonyms split on '; ' (clearclip_seg/vocab.py VOCAB_FORMATS)
PROXYCLIP_VOCABULARIES: Dict[str, str] = {k: b.vocabulary_for('proxyclip') for k, b in BENCHMARKS.items()}

PAMR_10 = dict(type='PAMR', num_iter=PAMR_NUM_ITER, dilations=PAMR_DILATIONS)

# FLOSS (``models/floss.py``): its authors evaluate the five benchmarks without background only;
# their rankings exist for these. On COCO-Stuff and ADE20K their code rounds to fp16: each fused
# window (NACLIP base) or every upsampled classifier map (MaskCLIP / CLIP-DINOiser bases).
FLOSS_BENCHMARKS = ('voc20', 'context59', 'coco_stuff164k', 'cityscapes', 'ade20k')
FLOSS_HALF = ('coco_stuff164k', 'ade20k')


def _floss(rankings: str, backbone: str, renormalize: bool, half: str, benchmark: str) -> dict:
    """The FLOSS text head as its authors run it over ``rankings``' base on ``benchmark``.

    NACLIP base: renormalised rows, fp16 fused windows, a class without ranked templates is an
    error; MaskCLIP base: rows keep their norm, fp16 maps, such a class uses every template.
    """
    return dict(type='FLOSS', rankings=rankings, backbone=backbone, benchmark=benchmark, top_k=4,
                logit_scale=100.0, renormalize=renormalize, half=half if benchmark in FLOSS_HALF else 'none',
                empty='error' if renormalize else 'all')


@dataclass(frozen=True)
class Setting:
    """One method's protocol on one benchmark: everything a config needs beyond the dataset.

    Attributes:
        resize: short side of the keep-ratio resize (long side capped at 2048).
        mode: ``slide`` or ``whole``.
        crop, stride: slide window size and step (unused in whole mode).
        patch_fit: ``pad`` or ``truncate`` (``model.test_cfg.patch_fit``).
        logit_scale, prob_thd, area_thd: the scoring values (area_thd None = off).
        postprocess: post-processor config or None.
        vocabulary: shipped vocabulary name.
        method: ``dict(type=NAME, **options)``.
        text_head: ``dict(type=NAME, **options)`` of a text head (``model.text_head``, e.g. FLOSS),
            or None (the plain text side; nothing is rendered for it).
    """
    resize: int
    mode: str
    crop: int
    stride: int
    patch_fit: str
    logit_scale: float
    prob_thd: float
    area_thd: Optional[float]
    postprocess: Optional[dict]
    vocabulary: str
    method: dict
    text_head: Optional[dict] = None

    @property
    def resize_scale(self) -> Tuple[int, int]:
        """MMSeg ``Resize(scale=...)``: (long cap, short side)."""
        return (RESIZE_LONG_SIDE, self.resize)

    def cfg_options(self) -> Dict[str, object]:
        """Config overrides (``--cfg-options`` / ``cfg_options``) that put any generated config
        of the same benchmark under this setting (the Resize is step 1 of the generated pipelines)."""
        return {'model.last_block': None, 'model.method': dict(self.method), 'model.vocabulary': self.vocabulary,
                'model.logit_scale': self.logit_scale, 'model.prob_thd': self.prob_thd,
                'model.area_thd': self.area_thd,
                'model.postprocess': None if self.postprocess is None else dict(self.postprocess),
                'model.test_cfg.mode': self.mode, 'model.test_cfg.crop_size': (self.crop, self.crop),
                'model.test_cfg.stride': (self.stride, self.stride), 'model.test_cfg.patch_fit': self.patch_fit,
                'test_pipeline.1.scale': self.resize_scale,
                'test_dataloader.dataset.pipeline.1.scale': self.resize_scale,
                **({} if self.text_head is None else {'model.text_head': dict(self.text_head)})}

    def option_items(self, method: bool = False) -> List[str]:
        """The protocol part of ``cfg_options`` as ``--cfg-options`` items (``'key=value'`` strings).

        Any generated config of the same benchmark and method gets this setting's
        protocol from them (the runner and ``tools/test.py`` parse them with
        MMEngine's ``DictAction``). A post-processor dict replaces whatever the
        config has (``_delete_``: a dict cannot be merged into a config's None).

        Args:
            method: also emit ``model.method`` / ``model.last_block`` (the generated
                configs of a card already carry them).
        """
        items = []
        for key, value in self.cfg_options().items():
            if key in ('model.method', 'model.last_block') and not method:
                continue
            if isinstance(value, dict):
                items.append(f'{key}._delete_=True')
                items += [f'{key}.{k}={option_text(v)}' for k, v in value.items()]
            else:
                items.append(f'{key}={option_text(value)}')
        return items


@dataclass(frozen=True)
class MethodCard:
    """A method's own protocol.

    Attributes:
        name: the config folder and file prefix (``configs/<name>/<name>_<backbone>_<benchmark>.py``).
        title: display name.
        method: ``dict(type=NAME, **options)``: the registered method and its published options.
        defaults: protocol values for every benchmark (``Setting`` fields other than
            ``vocabulary`` and ``method``); ``vocabularies`` maps benchmark -> vocabulary.
        overrides: benchmark -> values that differ from ``defaults``; a ``method`` entry
            updates the method options.
        backbone_overrides: backbone slug -> benchmark -> values that differ again for that
            backbone (applied after ``overrides``; e.g. SC-CLIP's ViT-L/14 thresholds).
        backbones: backbone slugs (``protocol/benchmarks.py`` BACKBONES) configs are made for.
        source: where the values were read.
        benchmarks: the benchmarks the method's authors evaluate (configs and suite runs are made
            for these only); None = every benchmark.
    """
    name: str
    title: str
    method: dict
    defaults: dict
    vocabularies: Dict[str, str]
    overrides: Dict[str, dict] = field(default_factory=dict)
    backbones: Tuple[str, ...] = ('vit-b16', 'vit-l14')
    backbone_overrides: Dict[str, Dict[str, dict]] = field(default_factory=dict)
    source: str = ''
    benchmarks: Optional[Tuple[str, ...]] = None

    def covers(self, benchmark: str) -> bool:
        """Whether the card has a protocol (and configs) for ``benchmark``."""
        return self.benchmarks is None or benchmark in self.benchmarks

    def setting(self, benchmark: str, backbone: Optional[str] = None) -> Setting:
        """The card's own protocol on ``benchmark`` (with ``backbone``'s own values, if any)."""
        if benchmark not in BENCHMARKS:
            raise KeyError(f"unknown benchmark '{benchmark}': expected one of {list(BENCHMARKS)}")
        own = self.backbone_overrides.get(backbone, {}).get(benchmark, {})
        values = {**self.defaults, **self.overrides.get(benchmark, {}), **own}
        method = {**self.method, **self.overrides.get(benchmark, {}).get('method', {}), **own.get('method', {})}
        values.pop('method', None)
        if values['postprocess'] is not None:
            values['postprocess'] = dict(values['postprocess'])  # callers may edit their copy
        if values.get('text_head') is not None:
            values['text_head'] = dict(values['text_head'])
        return Setting(vocabulary=self.vocabularies[benchmark], method=method, **values)


def common_setting(card: MethodCard, benchmark: str, pamr: bool = False, backbone: Optional[str] = None) -> Setting:
    """``card``'s method under the common protocol (ClearCLIP's), optionally with PAMR for all.

    The method keeps its own options (including per-benchmark ones, e.g. ResCLIP's
    thresholds); resize, windows, padding, logit scale, thresholds and vocabulary
    are ClearCLIP's for that benchmark.
    """
    b = BENCHMARKS[benchmark]
    own = card.setting(benchmark, backbone)
    return replace(own, resize=RESIZE_SHORT_SIDE, mode='slide', crop=b.crop, stride=b.stride, patch_fit='pad',
                   logit_scale=LOGIT_SCALE, prob_thd=b.prob_thd, area_thd=None,
                   postprocess=dict(PAMR_10) if pamr else None, vocabulary=b.vocabulary)


# The SCLIP family's shared evaluation code: 336 short side, 224/112 windows not padded.
_SCLIP_FAMILY = dict(resize=336, mode='slide', crop=224, stride=112, patch_fit='truncate', logit_scale=40.0,
                     prob_thd=0.0, area_thd=None, postprocess=None)

METHOD_CARDS: Dict[str, MethodCard] = {c.name: c for c in [
    MethodCard(
        'sclip', 'SCLIP', dict(type='SCLIP'), dict(_SCLIP_FAMILY), SCLIP_FAMILY_VOCABULARIES,
        overrides={
            'voc21': dict(logit_scale=65.0, prob_thd=0.1, area_thd=0.1),
            'context60': dict(logit_scale=50.0, prob_thd=0.1),
            'coco_object': dict(logit_scale=50.0, prob_thd=0.1),
            'coco_stuff164k': dict(resize=448),
            'cityscapes': dict(resize=560),
        },
        source='wangf3014/SCLIP@b56bd30 configs/cfg_*.py, clip_segmentor.py'),
    MethodCard(
        'naclip', 'NACLIP', dict(type='NACLIP', arch='reduced', attn_strategy='naclip', gaussian_std=5.0),
        {**_SCLIP_FAMILY, 'postprocess': PAMR_10}, SCLIP_FAMILY_VOCABULARIES,
        overrides={
            'voc21': dict(mode='whole', prob_thd=0.1),
            'context60': dict(prob_thd=0.1),
            'coco_object': dict(prob_thd=0.1),
            'voc20': dict(mode='whole'),
            'cityscapes': dict(resize=560),
        },
        source='sinahmr/NACLIP@0cac3a6 (v2) configs/cfg_*.py, naclip.py, test_all.sh "reduced naclip 5 on"'),
    MethodCard(
        # NACLIP + RCS + SFR ("wo_resi resclip 5"); final PAMR off (SFR runs its own PAMR per
        # window); per-benchmark temp_thd / [tau, lambda] values from the configs. The repository
        # ships no separate ViT-L/14 values: its L/14 runs swap clip_path only.
        'resclip', 'ResCLIP',
        dict(type='ResCLIP', arch='wo_resi', attn_strategy='resclip', gaussian_std=5.0, delete_same_entity=True),
        dict(_SCLIP_FAMILY), SCLIP_FAMILY_VOCABULARIES,
        overrides={
            'voc21': dict(mode='whole', prob_thd=0.1, method=dict(
                temp_thd=0.5, attn_rcs_weights=(2.0, 0.3), attn_sfr_weights=(2.2, 0.7))),
            'context60': dict(prob_thd=0.1, method=dict(
                temp_thd=0.3, attn_rcs_weights=(2.0, 0.3), attn_sfr_weights=(1.8, 0.7))),
            'coco_object': dict(prob_thd=0.1, method=dict(
                temp_thd=0.11, attn_rcs_weights=(2.0, 0.4), attn_sfr_weights=(1.8, 0.7))),
            'voc20': dict(mode='whole', method=dict(
                temp_thd=0.1, attn_rcs_weights=(2.0, 0.6), attn_sfr_weights=(2.1, 0.6))),
            'context59': dict(method=dict(
                temp_thd=0.25, attn_rcs_weights=(2.0, 0.4), attn_sfr_weights=(1.8, 0.7))),
            'coco_stuff164k': dict(method=dict(
                temp_thd=0.11, attn_rcs_weights=(2.0, 0.4), attn_sfr_weights=(1.8, 0.7))),
            'cityscapes': dict(resize=560, method=dict(
                temp_thd=0.1, attn_rcs_weights=(2.0, 0.2), attn_sfr_weights=(2.1, 0.6))),
            'ade20k': dict(method=dict(
                temp_thd=0.25, attn_rcs_weights=(2.0, 0.3), attn_sfr_weights=(2.1, 0.7))),
        },
        source='yvhangyang/ResCLIP@0e085f7 configs/cfg_*.py, resclip_segmentor.py, clip/model.py, '
               'test_all.sh "wo_resi resclip 5"'),
    MethodCard(
        'proxyclip', 'ProxyCLIP', dict(type='ProxyCLIP', vfm='dino', beta=1.2, gamma=3.0),
        # windows padded to multiples of 56 (the method's window_multiple), logit scale 40
        dict(resize=336, mode='slide', crop=336, stride=112, patch_fit='pad', logit_scale=40.0, prob_thd=0.0,
             area_thd=None, postprocess=None), PROXYCLIP_VOCABULARIES,
        overrides={
            'voc21': dict(prob_thd=0.2),
            'context60': dict(prob_thd=0.15),
            'coco_object': dict(prob_thd=0.25),
            'cityscapes': dict(resize=448, crop=224),
            'ade20k': dict(resize=448),
        },
        backbones=('vit-b16', 'vit-l14', 'openclip-vit-h14'),
        source='mc-lan/ProxyCLIP@e7b767f configs/base_config.py, configs/cfg_*.py, proxyclip_segmentor.py'),
    MethodCard(
        # Layer indices and res_cls follow the tower's depth (SCCLIP's defaults: B/16 from the
        # HEAD base config, L/14 from the first commit's commented block); the class files are
        # the SCLIP family's (26 background words, person/tv synonyms, split on ', ').
        'scclip', 'SC-CLIP', dict(type='SCCLIP'), dict(_SCLIP_FAMILY), SCLIP_FAMILY_VOCABULARIES,
        overrides={
            'voc21': dict(logit_scale=50.0, prob_thd=0.15, area_thd=0.1),
            'context60': dict(prob_thd=0.15),
            'coco_object': dict(logit_scale=55.0, prob_thd=0.35),
            'cityscapes': dict(resize=560),
        },
        backbone_overrides={'vit-l14': {
            'voc21': dict(logit_scale=40.0, prob_thd=0.2, area_thd=0.1),
            'coco_object': dict(logit_scale=40.0, prob_thd=0.25),
        }},
        source='SuleBai/SC-CLIP@0417ba9 configs/base_config.py, configs/cfg_*.py, scclip_segmentor.py; '
               'ViT-L/14 values from the commented block of 74471da'),
    MethodCard(
        # GEM's authors ship no benchmark code; its published mIoU (ClearCLIP Table 2, "GEM") come
        # from ClearCLIP's harness, i.e. ClearCLIP's protocol and vocabularies on every benchmark.
        'gem', 'GEM', dict(type='GEM', depth=7, ss_attn_iter=1, ss_attn_temp=None, ignore_residual=False),
        dict(resize=RESIZE_SHORT_SIDE, mode='slide', crop=SLIDE_CROP, stride=SLIDE_STRIDE, patch_fit='pad',
             logit_scale=LOGIT_SCALE, prob_thd=0.0, area_thd=None, postprocess=None),
        {k: b.vocabulary for k, b in BENCHMARKS.items()},
        overrides={k: dict(prob_thd=b.prob_thd, crop=b.crop, stride=b.stride) for k, b in BENCHMARKS.items()},
        source='WalBouss/GEM@5fa677c gem/ (the method); mc-lan/ClearCLIP@ad68a40 clearclip_segmentor.py, '
               'configs/ (the harness behind the published numbers)'),
    MethodCard(
        # FLOSS over its NACLIP base: NACLIP v2 without PAMR (the segmentor's pamr_steps=0 wins over
        # eval_naclip.py's), logit 100, the SCLIP family's class files; the text head puts the expert
        # fusion per window (VOC20: per whole image). COCO-Stuff/ADE20K round each fused window to fp16.
        'floss-naclip', 'FLOSS (NACLIP)',
        dict(type='NACLIP', arch='reduced', attn_strategy='naclip', gaussian_std=5.0),
        {**_SCLIP_FAMILY, 'logit_scale': 100.0, 'text_head': _floss('naclip', 'vit-b16', True, 'window', 'voc20')},
        SCLIP_FAMILY_VOCABULARIES,
        overrides={k: dict(v, text_head=_floss('naclip', 'vit-b16', True, 'window', k)) for k, v in {
            'voc20': dict(mode='whole'), 'context59': {}, 'coco_stuff164k': {}, 'cityscapes': dict(resize=560),
            'ade20k': {}}.items()},
        backbones=('vit-b16',), benchmarks=FLOSS_BENCHMARKS,
        source='yasserben/FLOSS@ccf1d49 configs/naclip/*.py, mmseg/models/segmentors/naclip/naclip.py, '
               'tools/eval_naclip.py --mode fusion, rankings/naclip/'),
    MethodCard(
        # FLOSS over its MaskCLIP base ("CLIP-DINOiser's MaskCLIP": identity attention, residual and
        # FFN kept, positions resized bicubically to the grid) on OpenCLIP ViT-B/16 laion2b: 448 short
        # side, 448/224 windows everywhere, per-window
        # softmax(x100) probabilities averaged, FLOSS's class names; expert rows not renormalised;
        # COCO-Stuff/ADE20K fuse fp16 maps. CLIP-DINOiser (trained heads) is not in the registry.
        'floss-maskclip', 'FLOSS (MaskCLIP)', dict(type='MaskCLIPDinoiser', pos_interp='size'),
        dict(resize=448, mode='slide', crop=448, stride=224, patch_fit='pad', logit_scale=100.0, prob_thd=0.0,
             area_thd=None, postprocess=None, text_head=_floss('maskclip', 'openclip-vit-b16', False, 'maps', 'voc20')),
        {k: b.vocabulary_for('floss') for k, b in BENCHMARKS.items()},
        overrides={k: dict(text_head=_floss('maskclip', 'openclip-vit-b16', False, 'maps', k))
                   for k in FLOSS_BENCHMARKS},
        backbones=('openclip-vit-b16',), benchmarks=FLOSS_BENCHMARKS,
        source='yasserben/FLOSS@ccf1d49 configs/maskclip.py, configs/_base_/, mmseg/models/segmentors/'
               'clip_dinoiser/dinoclip_inferencer.py, maskclip/maskclip.py, rankings/maskclip/'),
]}

# Cards of dense methods (the methods suites compare these); the others carry a text head (FLOSS)
# over one of them and are run by their own suites.
DENSE_CARDS: Tuple[str, ...] = tuple(n for n, c in METHOD_CARDS.items() if c.defaults.get('text_head') is None)
