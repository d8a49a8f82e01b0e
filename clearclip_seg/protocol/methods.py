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
from typing import Dict, List, Optional, Tuple, Union

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

# ITACLIP's class files where it ships them (verbatim, split on ', '); the SCLIP family's elsewhere
# (the code it forks; ITACLIP has no VOC20, Context59 or ADE20K files)
ITACLIP_VOCABULARIES: Dict[str, str] = {k: b.method_vocabularies.get('itaclip', b.vocabulary_for('sclip'))
                                        for k, b in BENCHMARKS.items()}
# ITACLIP's closing of the label map (cv2.MORPH_CLOSE, 3 x 3 rectangle), on every benchmark
ITACLIP_CLOSING = dict(type='MorphClose', kernel_size=3)


def _itaclip_text(auxiliary_text: str, def_coefficient: float) -> dict:
    """ITACLIP's text head with one benchmark's LLM file and its coefficient."""
    return dict(type='ITACLIPText', auxiliary_text=auxiliary_text, def_coefficient=def_coefficient)


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
        text_head: ``model.text_head`` config, or None (the plain text side; nothing rendered).
        label_postprocess: ``model.label_postprocess`` config; None: the card has none (nothing
            rendered or overridden); False: switched off (``cfg_options`` sets it to None).
        centre_crop: n: score only the central n x n square of the image resized to short
            side n (``ShortSideCentreCrop``, CLIPtrase's protocol; ``resize`` is then unused);
            None = the whole image.
        metric: ``ClearCLIPIoUMetric`` options of the method's own scoring (``iou_eps``,
            ``mean_over``, ``ignore_as``); None = MMSeg's.
        undo_own: the setting is put over a config whose own protocol has ``centre_crop`` or
            ``metric``: ``cfg_options`` then also switches those off (set by ``common_setting``).
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
    label_postprocess: Union[None, bool, dict] = None
    centre_crop: Optional[int] = None
    metric: Optional[dict] = None
    undo_own: bool = False

    @property
    def resize_scale(self) -> Tuple[int, int]:
        """MMSeg ``Resize(scale=...)``: (long cap, short side)."""
        return (RESIZE_LONG_SIDE, self.resize)

    def cfg_options(self) -> Dict[str, object]:
        """Config overrides (``--cfg-options`` / ``cfg_options``) that put any generated config
        of the same benchmark under this setting (the Resize is step 1 of the generated pipelines)."""
        opts = {'model.last_block': None, 'model.method': dict(self.method), 'model.vocabulary': self.vocabulary,
                'model.logit_scale': self.logit_scale, 'model.prob_thd': self.prob_thd,
                'model.area_thd': self.area_thd,
                'model.postprocess': None if self.postprocess is None else dict(self.postprocess),
                'model.test_cfg.mode': self.mode, 'model.test_cfg.crop_size': (self.crop, self.crop),
                'model.test_cfg.stride': (self.stride, self.stride), 'model.test_cfg.patch_fit': self.patch_fit,
                'test_pipeline.1.scale': self.resize_scale,
                'test_dataloader.dataset.pipeline.1.scale': self.resize_scale,
                **self._own_protocol_options()}
        # the optional parts appear only where a card has them: other cards' overrides stay as they were
        if self.text_head is not None:
            opts['model.text_head'] = dict(self.text_head)
        if self.label_postprocess is not None:
            opts['model.label_postprocess'] = dict(self.label_postprocess) if self.label_postprocess else None
        return opts

    def _own_protocol_options(self) -> Dict[str, object]:
        """The centre crop (pipeline step 3) and the metric options, where this setting has or undoes them."""
        if self.centre_crop is None and self.metric is None and not self.undo_own:
            return {}
        if self.centre_crop is not None or self.metric is not None:
            raise ValueError('a setting with centre_crop or metric is a method\'s own protocol: use its generated '
                             'config (tools/make_configs.py), not cfg_options over another one')
        return {'test_pipeline.3.size': None, 'test_dataloader.dataset.pipeline.3.size': None,
                'test_evaluator.iou_eps': 0.0, 'test_evaluator.mean_over': 'union', 'test_evaluator.ignore_as': None}

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
        clip: extra ``model.clip`` keys of the authors' runs (LPOSS: ``precision='fp32'``); empty: none.

    ``defaults`` and ``overrides`` may also hold ``text_head`` and ``label_postprocess``
    (``Setting``), for the cards that have them.
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
    clip: Dict[str, object] = field(default_factory=dict)

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
        for k in ('text_head', 'label_postprocess'):
            if isinstance(values.get(k), dict):
                values[k] = dict(values[k])
        return Setting(vocabulary=self.vocabularies[benchmark], method=method, **values)


def common_setting(card: MethodCard, benchmark: str, pamr: bool = False, backbone: Optional[str] = None) -> Setting:
    """``card``'s method under the common protocol (ClearCLIP's), optionally with PAMR for all.

    The method keeps its own options (including per-benchmark ones, e.g. ResCLIP's
    thresholds); resize, windows, padding, logit scale, thresholds and vocabulary
    are ClearCLIP's for that benchmark. A card's text head (ITACLIP's LLM texts) is part of
    its method and stays; a label post-step (ITACLIP's closing) is scoring and is switched off.
    """
    b = BENCHMARKS[benchmark]
    own = card.setting(benchmark, backbone)
    return replace(own, resize=RESIZE_SHORT_SIDE, mode='slide', crop=b.crop, stride=b.stride, patch_fit='pad',
                   logit_scale=LOGIT_SCALE, prob_thd=b.prob_thd, area_thd=None,
                   postprocess=dict(PAMR_10) if pamr else None, vocabulary=b.vocabulary,
                   label_postprocess=None if own.label_postprocess is None else False, centre_crop=None,
                   metric=None, undo_own=own.centre_crop is not None or own.metric is not None)


# LPOSS's class-name files, verbatim: synonyms split on ';' (clearclip_seg/vocab.py VOCAB_FORMATS)
LPOSS_VOCABULARIES: Dict[str, str] = {k: b.vocabulary_for('lposs') for k, b in BENCHMARKS.items()}


# CLIPtrase's class files (one query per class; background names merged into the background class)
CLIPTRASE_VOCABULARIES: Dict[str, str] = {k: b.vocabulary_for('cliptrase') for k, b in BENCHMARKS.items()}
# CLIPtrase's metric (configs/metric.py::scores): IoU denominators + 0.01, mean over labelled classes
_CLIPTRASE_METRIC = dict(iou_eps=0.01, mean_over='label')

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
        # An SCLIP fork: SCLIP's windows cut to whole patches, but stride 28, PAMR and a 3 x 3 closing of
        # the label map everywhere, the LLM texts mixed into the text side (one file per benchmark, with
        # its coefficient) and ITACLIP's own class files. The authors ship configs for five benchmarks
        # only; VOC20, Context59 and ADE20K run the class defaults with the SCLIP family's class files
        # and no LLM texts (none exist for them).
        'itaclip', 'ITACLIP',
        dict(type='ITACLIP', intermediate_layers=(6, 7, 9), attn_self=True, img_engineering=True,
             img_eng_coefficient=0.75),
        dict(resize=336, mode='slide', crop=224, stride=28, patch_fit='truncate', logit_scale=40.0, prob_thd=0.0,
             area_thd=None, postprocess=PAMR_10, text_head=None, label_postprocess=ITACLIP_CLOSING),
        ITACLIP_VOCABULARIES,
        overrides={
            'voc21': dict(logit_scale=60.0, prob_thd=0.1, area_thd=0.1,
                          text_head=_itaclip_text('voc21_definitions', 0.05), method=dict(img_eng_coefficient=0.7)),
            'context60': dict(logit_scale=55.0, prob_thd=0.1, text_head=_itaclip_text('context60_definitions', 0.15)),
            'coco_object': dict(logit_scale=50.0, prob_thd=0.1,
                                text_head=_itaclip_text('coco_object_synonyms', 0.1)),
            'coco_stuff164k': dict(resize=448, text_head=_itaclip_text('coco_stuff_definitions', 0.2)),
            'cityscapes': dict(resize=560, text_head=_itaclip_text('cityscapes_synonyms', 0.05),
                               method=dict(img_eng_coefficient=0.7)),
        },
        backbones=('vit-b16',),
        source='m-arda-aydn/ITACLIP@521a33c configs/cfg_*.py, itaclip_segmentor.py, clip/model.py'),
    MethodCard(
        # OpenCLIP ViT-B/16 laion2b in fp32 + DINO ViT-B/16; short side 448 everywhere (Cityscapes
        # too), 224/112 windows; label propagation over all windows' patches. The LP scores are
        # raw cosines with no temperature (logit scale 1: the argmax is all that is read) and no
        # threshold; background synonyms are merged by max (the method's refine_image).
        'lposs', 'LPOSS', dict(type='LPOSS', k=400, alpha=0.95, gamma=3.0, sigma=0.01, pix_dist_pow=1.0),
        dict(resize=448, mode='slide', crop=224, stride=112, patch_fit='pad', logit_scale=1.0, prob_thd=0.0,
             area_thd=None, postprocess=None), LPOSS_VOCABULARIES,
        backbones=('openclip-vit-b16',), clip=dict(precision='fp32'),
        source='vladan-stojnic/LPOSS@e489a74 configs/lposs.yaml, models/lposs/lposs.py, '
               'models/maskclip/maskclip.py, segmentation/evaluation/lposs_eval.py, '
               'segmentation/configs/_base_/datasets/*.py'),
    MethodCard(
        # LPOSS followed by label propagation over the pixels of the resized image (Lab, 13 x 13)
        'lposs-plus', 'LPOSS+',
        dict(type='LPOSS', k=400, alpha=0.95, gamma=3.0, sigma=0.01, pix_dist_pow=1.0, pixel_refine=True,
             tau=0.01, r=13),
        dict(resize=448, mode='slide', crop=224, stride=112, patch_fit='pad', logit_scale=1.0, prob_thd=0.0,
             area_thd=None, postprocess=None), LPOSS_VOCABULARIES,
        backbones=('openclip-vit-b16',), clip=dict(precision='fp32'),
        source='vladan-stojnic/LPOSS@e489a74 configs/lposs_plus.yaml, models/lposs/lposs.py, '
               'models/maskclip/maskclip.py, segmentation/evaluation/lposs_eval.py, '
               'segmentation/configs/_base_/datasets/*.py'),
    MethodCard(
        # A ProxyCLIP fork: DINO ViT-B/16 (always, whatever vfm_model says), windows spliced before
        # ln_post and aggregated with SAM ViT-B's last attention; the published numbers use the SAM
        # prompt refinement (--sam_refine, sam_iou_thresh 0.80 from base_config.py). The windows are
        # Trident's own (its resize makes them whole: patch_fit does not apply); logit scale 40.
        'trident', 'Trident',
        dict(type='Trident', vfm='vit_base_patch16_224.dino', beta=1.2, gamma=3.0, sam='samvit_base_patch16',
             cos_fac=1.2, refine_neg_cos=True, sam_split_halves=False, sam_refine=True, sam_iou_thresh=0.8,
             coarse_thresh=0.2, minimal_area=225, sam_mask_coff=0.005),
        dict(resize=448, mode='slide', crop=336, stride=224, patch_fit='pad', logit_scale=40.0, prob_thd=0.0,
             area_thd=None, postprocess=None), PROXYCLIP_VOCABULARIES,
        overrides={
            'voc21': dict(prob_thd=0.2),
            'context60': dict(resize=576, prob_thd=0.15, method=dict(coarse_thresh=0.15)),
            'coco_object': dict(prob_thd=0.25, method=dict(coarse_thresh=0.25)),
            'voc20': dict(resize=336, stride=112, method=dict(cos_fac=0.0)),
            'context59': dict(resize=576, method=dict(coarse_thresh=0.15)),
            'coco_stuff164k': dict(method=dict(coarse_thresh=0.05)),
            'cityscapes': dict(resize=688, method=dict(coarse_thresh=0.1, cos_fac=3.0, refine_neg_cos=False,
                                                       sam_split_halves=True)),
            'ade20k': dict(resize=576, method=dict(coarse_thresh=0.05, refine_neg_cos=False)),
        },
        backbones=('vit-b16', 'openclip-vit-h14'),
        source='YuHengsss/Trident@a93b346 configs/base_config.py, configs/cfg_*.py, trident.py, '
               'open_clip/transformer.py, seg_utils/utils.py'),
    MethodCard(
        # The standalone script behind the README/paper numbers (not the detectron2 version): one forward
        # on the central 224 x 224 square of the image resized to short side 224, scored there with the
        # authors' metric. The README's 336 row is this card with centre_crop=336, eps=1.1, min_samples=7.
        # The logit scale is immaterial (the method's output is a one-hot vote); background classes take
        # the label's ignore pixels (VOC21's void boundaries) as the authors relabel 255 to background.
        'cliptrase', 'CLIPtrase', dict(type='CLIPtrase', eps=0.7, min_samples=3, cls_scale=False),
        dict(resize=224, mode='whole', crop=224, stride=224, patch_fit='pad', logit_scale=100.0, prob_thd=0.0,
             area_thd=None, postprocess=None, centre_crop=224, metric=dict(_CLIPTRASE_METRIC)),
        CLIPTRASE_VOCABULARIES,
        overrides={
            **{k: dict(metric=dict(_CLIPTRASE_METRIC, ignore_as=0)) for k in ('voc21', 'context60', 'coco_object')},
            'voc20': dict(method=dict(cls_scale=True)),
        },
        backbones=('vit-b16',),
        source='leaves162/CLIPtrase@2b7de61 clip_self_correlation.py (self_clip, get_image_and_gt), '
               'clip_utils/attn2.py, configs/dataset_cfg.py, configs/metric.py'),
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
