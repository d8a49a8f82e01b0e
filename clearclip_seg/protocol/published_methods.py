"""Published mIoU of the methods of ``protocol/methods.py``, as data, with the source of each.

Transcribed from the method cards (read from each method's official repository;
values in percent as printed, one or two decimals as the source has them).
Each entry is one published row: a method card, a backbone, the protocol it
was run under, PAMR on or off, and the method options that identify it (a
variant such as NACLIP without PAMR or ResCLIP on SCLIP). A record finds its
entry through ``find_method_entry`` (the tables do this).

Protocols: ``own`` is the card's own setting (``MethodCard.setting``);
GEM's own setting *is* ClearCLIP's harness, where its published numbers were
made. No method other than ClearCLIP published numbers under ClearCLIP's
protocol, so rows run under the ``common`` protocol have none (ClearCLIP's
own rows are in ``published.py``).

``quoted`` marks numbers taken from a secondary source (another paper's
figure) or whose setting the source does not state; the tables mark them.

This module imports nothing heavy (no torch, no MMSeg).
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from .constants import PAPER_ORDER

# the paper's eight columns, and the five sets without background
_NO_BG5 = PAPER_ORDER[3:]

SOURCES: Dict[str, str] = {
    'sclip-readme': 'wangf3014/SCLIP README, "default setup in this repo" table (ViT-B/16, PAMR off)',
    'resclip-readme': 'yvhangyang/ResCLIP README figures figs/main_results_wo.png and main_results_w.png '
                      '(final PAMR off)',
    'naclip-readme': 'sinahmr/NACLIP README (v2), "bash test_all.sh reduced naclip 5 on" (PAMR on)',
    'scclip-readme': 'SuleBai/SC-CLIP README radar chart figs/scclip.jpg (backbone not named; the repo default '
                     'is ViT-B/16)',
    'clearclip-readme': 'mc-lan/ClearCLIP README assets/results.png, Table 2 (GEM in ClearCLIP\'s harness)',
    'itaclip-readme': 'm-arda-aydn/ITACLIP README "Results" (ViT-B/16, default configs; Cityscapes added in 030dccb)',
    'lposs-aggregator': 'wizwand.com paper page of arXiv 2503.19777 (third-party aggregator; the LPOSS README has '
                        'no table; not checked against the paper, CVPR 2025 pp. 9794-9803)',
    'trident-readme': 'YuHengsss/Trident README "Main Results", assets/data_result.png (evaluation commands with '
                      '--sam_refine; SAM variant not stated, the repository names only SAM ViT-B)',
    'cliptrase-readme': 'leaves162/CLIPtrase README results table (ViT-B/16, single 3090, no densecrf; rows 224 and '
                        '336: the standalone clip_self_correlation.py)',
    'floss-readme': 'yasserben/FLOSS README "Results" table (mIoU, ViT-B/16 per the configs; arXiv 2504.10487)',
}


@dataclass(frozen=True)
class MethodEntry:
    """One published row of a method.

    Attributes:
        card: method card name (``protocol/methods.py`` METHOD_CARDS).
        title: the row as the source names it.
        backbone: backbone slug (``protocol/backbones.py``).
        protocol: ``own`` (the card's setting) or ``common``.
        pamr: PAMR on (True) or off.
        numbers: benchmark -> mIoU (%).
        source: key of ``SOURCES``.
        method: method options that select this variant (a record matches when
            its method has these values; a tuple lists equivalent values; empty =
            any options of the card).
        quoted: secondary source, or a setting the source does not state.
        note: what a reader should know about the number.
    """
    card: str
    title: str
    backbone: str
    protocol: str
    pamr: bool
    numbers: Dict[str, float]
    source: str
    method: Dict[str, object] = field(default_factory=dict)
    quoted: bool = False
    note: str = ''


def _row(keys, values) -> Dict[str, float]:
    assert len(keys) == len(values)
    return dict(zip(keys, values))


_CLIPTRASE_NOTE = ('its own protocol, not comparable with full-image mIoU: only the central square of the image '
                   'resized to short side n is predicted and scored, IoU = TP / (GT + pred - TP + 0.01) averaged '
                   'over classes present in the labels, VOC21 void boundaries scored as background, COCO-Object '
                   'stuff other than "banner" ignored')

METHOD_ENTRIES: Tuple[MethodEntry, ...] = (
    # SCLIP: the README is the code's own run; the ResCLIP figure quotes the SCLIP paper
    # (ViT-B/16 59.1 / 30.4 / 30.5 / 80.4 / 34.2 / 22.4 / 32.2 / 16.1) and gives ViT-L/14.
    MethodEntry('sclip', 'SCLIP', 'vit-b16', 'own', False,
                _row(PAPER_ORDER, (59.63, 31.74, 33.52, 81.54, 34.46, 22.77, 32.34, 16.45)), 'sclip-readme',
                note='the SCLIP paper prints 59.1 / 30.4 / 30.5 / 80.4 / 34.2 / 22.4 / 32.2 / 16.1'),
    MethodEntry('sclip', 'SCLIP', 'vit-l14', 'own', False,
                _row(PAPER_ORDER, (44.4, 22.3, 24.9, 60.3, 20.5, 13.1, 17.0, 7.1)), 'resclip-readme', quoted=True,
                note='from the ResCLIP figure; the SCLIP repository ships no ViT-L/14 settings'),
    # NACLIP: README v2 with PAMR; without PAMR as the ResCLIP figure quotes it (the NACLIP paper's)
    MethodEntry('naclip', 'NACLIP', 'vit-b16', 'own', True,
                _row(PAPER_ORDER, (64.07, 34.99, 36.19, 83.03, 38.35, 25.69, 38.27, 19.05)), 'naclip-readme'),
    MethodEntry('naclip', 'NACLIP w/o PAMR', 'vit-b16', 'own', False,
                _row(PAPER_ORDER, (58.9, 32.2, 33.2, 79.7, 35.2, 23.3, 35.5, 17.4)), 'resclip-readme', quoted=True),
    MethodEntry('naclip', 'NACLIP w/o PAMR', 'vit-l14', 'own', False,
                _row(PAPER_ORDER, (52.2, 28.7, 29.9, 78.7, 32.1, 21.4, 31.4, 17.3)), 'resclip-readme', quoted=True,
                note='the NACLIP repository ships no ViT-L/14 settings'),
    # ResCLIP: the repository default is NACLIP + RCS + SFR; the other rows are its variants
    MethodEntry('resclip', 'NACLIP+ResCLIP', 'vit-b16', 'own', False,
                _row(PAPER_ORDER, (61.1, 33.5, 35.0, 86.0, 36.8, 24.7, 35.9, 18.0)), 'resclip-readme',
                method=dict(attn_strategy=('resclip', 'naclip'))),
    MethodEntry('resclip', 'NACLIP+ResCLIP', 'vit-l14', 'own', False,
                _row(PAPER_ORDER, (54.1, 30.9, 32.5, 85.5, 34.5, 23.4, 33.7, 18.2)), 'resclip-readme',
                method=dict(attn_strategy=('resclip', 'naclip')),
                note='the repository ships no ViT-L/14 values: L/14 runs reuse the B/16 configs'),
    MethodEntry('resclip', 'SCLIP+ResCLIP', 'vit-b16', 'own', False,
                _row(PAPER_ORDER, (60.7, 32.9, 34.3, 84.6, 35.8, 23.9, 34.4, 17.6)), 'resclip-readme',
                method=dict(attn_strategy='sclip'), quoted=True,
                note='the repository ships no per-benchmark values for this variant'),
    MethodEntry('resclip', 'SCLIP+ResCLIP', 'vit-l14', 'own', False,
                _row(PAPER_ORDER, (52.8, 28.7, 30.9, 83.9, 30.6, 21.2, 32.2, 15.8)), 'resclip-readme',
                method=dict(attn_strategy='sclip'), quoted=True,
                note='the repository ships no per-benchmark values for this variant'),
    MethodEntry('resclip', 'ClearCLIP+ResCLIP', 'vit-b16', 'own', False,
                _row(PAPER_ORDER, (59.0, 32.9, 34.0, 87.1, 36.4, 24.3, 34.5, 17.8)), 'resclip-readme',
                method=dict(attn_strategy='clearclip'), quoted=True,
                note='the repository ships no per-benchmark values for this variant'),
    MethodEntry('resclip', 'ClearCLIP+ResCLIP', 'vit-l14', 'own', False,
                _row(PAPER_ORDER, (50.7, 29.8, 31.1, 84.2, 33.4, 22.3, 34.1, 17.9)), 'resclip-readme',
                method=dict(attn_strategy='clearclip'), quoted=True,
                note='the repository ships no per-benchmark values for this variant'),
    # SC-CLIP: radar-chart labels only
    MethodEntry('scclip', 'SC-CLIP', 'vit-b16', 'own', False,
                _row(PAPER_ORDER, (64.6, 36.8, 37.7, 84.3, 40.1, 26.6, 41.0, 20.1)), 'scclip-readme', quoted=True,
                note='values labelled on a radar chart; the backbone is presumably ViT-B/16'),
    # GEM in ClearCLIP's harness; "+ ClearCLIP" read as ignore_residual=True (the card's inference)
    MethodEntry('gem', 'GEM', 'vit-b16', 'own', False,
                _row(_NO_BG5, (79.9, 35.9, 23.7, 30.8, 15.7)), 'clearclip-readme',
                method=dict(ignore_residual=False)),
    MethodEntry('gem', 'GEM', 'vit-l14', 'own', False,
                _row(_NO_BG5, (80.3, 26.4, 17.6, 22.6, 11.6)), 'clearclip-readme',
                method=dict(ignore_residual=False)),
    MethodEntry('gem', 'GEM + ClearCLIP', 'vit-b16', 'own', False,
                _row(_NO_BG5, (80.2, 36.5, 24.4, 30.5, 17.4)), 'clearclip-readme',
                method=dict(ignore_residual=True), quoted=True,
                note='"+ ClearCLIP" read as ignore_residual=True (not confirmed by the source)'),
    MethodEntry('gem', 'GEM + ClearCLIP', 'vit-l14', 'own', False,
                _row(_NO_BG5, (79.7, 29.9, 19.4, 25.9, 14.2)), 'clearclip-readme',
                method=dict(ignore_residual=True), quoted=True,
                note='"+ ClearCLIP" read as ignore_residual=True (not confirmed by the source)'),
    # ProxyCLIP: its README has no table; SC-CLIP's radar chart labels six of its values
    MethodEntry('proxyclip', 'ProxyCLIP', 'vit-b16', 'own', False,
                {'context60': 34.0, 'coco_object': 34.6, 'context59': 37.4, 'coco_stuff164k': 25.1,
                 'cityscapes': 37.5, 'ade20k': 18.7}, 'scclip-readme', quoted=True,
                note='labelled on SC-CLIP\'s radar chart; the proxy model and settings are not stated '
                     '(the ProxyCLIP README has no table)'),
    # ITACLIP: the README's five benchmarks (no VOC20, Context59, ADE20K configs or numbers)
    MethodEntry('itaclip', 'ITACLIP', 'vit-b16', 'own', True,
                {'voc21': 67.9, 'context60': 37.5, 'coco_object': 37.7, 'coco_stuff164k': 27.0,
                 'cityscapes': 40.2}, 'itaclip-readme',
                note='Cityscapes 40.2 was published while its config used stride 224 (28 since 521a33c)'),
    # LPOSS+: an aggregator's values (the same page also shows a conflicting VOC20 89.6 and
    # Context59 35.2); no LPOSS (without +) numbers were found
    MethodEntry('lposs-plus', 'LPOSS+', 'openclip-vit-b16', 'own', False,
                _row(PAPER_ORDER, (61.1, 34.6, 33.4, 78.8, 37.8, 25.9, 37.3, 21.8)), 'lposs-aggregator',
                quoted=True, note='third-party aggregator, presumably LPOSS+ ViT-B/16; the same page also lists '
                                  'VOC20 89.6 and Context59 35.2'),
    # Trident: README figure, with the SAM prompt refinement (the README's evaluation commands)
    MethodEntry('trident', 'Trident', 'vit-b16', 'own', False,
                _row(PAPER_ORDER, (67.1, 38.6, 41.1, 84.5, 42.2, 28.3, 42.9, 21.9)), 'trident-readme',
                method=dict(sam_refine=True),
                note='SAM variant not stated (the repository names only SAM ViT-B, used here)'),
    MethodEntry('trident', 'Trident', 'openclip-vit-h14', 'own', False,
                _row(PAPER_ORDER, (70.8, 40.1, 42.2, 88.7, 44.3, 28.6, 47.6, 26.7)), 'trident-readme',
                method=dict(sam_refine=True), quoted=True,
                note='the repository ships no ViT-H/14 configs (presumably the B/16 ones with the CLIP '
                     'swapped); SAM variant not stated'),
    # CLIPtrase: its own protocol (centre crop, own metric), not comparable with the other rows; the README's
    # PC459 and ADE-full columns have no benchmark here, and it has no Cityscapes number
    MethodEntry('cliptrase', 'CLIPtrase (224)', 'vit-b16', 'own', False,
                {'coco_stuff164k': 22.84, 'voc20': 80.95, 'context59': 33.83, 'ade20k': 16.35, 'coco_object': 43.56,
                 'voc21': 50.88, 'context60': 29.87}, 'cliptrase-readme', method=dict(eps=0.7, min_samples=3),
                note=_CLIPTRASE_NOTE),
    MethodEntry('cliptrase', 'CLIPtrase (336)', 'vit-b16', 'own', False,
                {'coco_stuff164k': 24.06, 'voc20': 81.2, 'context59': 34.92, 'ade20k': 17.04, 'coco_object': 44.84,
                 'voc21': 53.04, 'context60': 30.79}, 'cliptrase-readme', method=dict(eps=1.1, min_samples=7),
                note=_CLIPTRASE_NOTE + '; the 336 row is the card with centre_crop=336, eps=1.1, min_samples=7'),
    # FLOSS: its README's "+ FLOSS" rows (the split is not stated; the baselines are on the same table:
    # NACLIP 35.5 / 79.7 / 35.2 / 17.4 / 23.3, MaskCLIP 25.0 / 61.8 / 25.5 / 14.2 / 17.5)
    MethodEntry('floss-naclip', 'NACLIP + FLOSS', 'vit-b16', 'own', False,
                {'cityscapes': 37.0, 'voc20': 80.2, 'context59': 35.9, 'ade20k': 18.4, 'coco_stuff164k': 23.6},
                'floss-readme'),
    MethodEntry('floss-maskclip', 'MaskCLIP + FLOSS', 'openclip-vit-b16', 'own', False,
                {'cityscapes': 25.8, 'voc20': 61.8, 'context59': 26.2, 'ade20k': 14.9, 'coco_stuff164k': 17.8},
                'floss-readme'),
)


# Cards with no published row, and why (tests/test_method_tables.py: every card has an entry or a reason)
NO_PUBLISHED: Dict[str, str] = {
    'lposs': 'LPOSS without the pixel step: no numbers found (the README has no table; the aggregator\'s '
             'values are presumably LPOSS+)',
}


def _matches(entry: MethodEntry, method: Dict[str, object]) -> bool:
    """Every option the entry names has its value (or one of a tuple of equivalent values)."""
    return all(str(method.get(k)) in (tuple(map(str, v)) if isinstance(v, tuple) else (str(v),))
               for k, v in entry.method.items())


def find_method_entry(card: Optional[str], backbone: Optional[str], protocol: Optional[str], pamr: bool,
                      method: Optional[Dict[str, object]] = None) -> Optional[MethodEntry]:
    """The published row a run of ``card`` corresponds to, or None.

    Args:
        card: method card name (``'naclip'``, ...).
        backbone: backbone slug (``'vit-b16'``).
        protocol: ``'own'``, ``'common'`` or another label (only exact matches count).
        pamr: whether the run had PAMR on.
        method: the run's method options (``{'type': 'ResCLIP', 'attn_strategy': ...}``); a
            variant entry matches only when these agree with its ``method`` values.

    Returns:
        The matching entry (the first, in ``METHOD_ENTRIES`` order).
    """
    method = method or {}
    for e in METHOD_ENTRIES:
        if (e.card, e.backbone, e.protocol, e.pamr) == (card, backbone, protocol, bool(pamr)) and \
                _matches(e, method):
            return e
    return None


def method_source(entry: MethodEntry) -> str:
    """The full source line of an entry."""
    return SOURCES[entry.source]
