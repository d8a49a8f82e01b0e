"""Published mIoU numbers of ClearCLIP and its baselines, as data.

Source (see ``docs/protocol.md``, "Published numbers"): the tables of "ClearCLIP: Decomposing CLIP Representations for
Dense Vision-Language Inference" (Lan et al., ECCV 2024, arXiv 2407.12442).
All values are mIoU in percent, rounded to one decimal as printed.

Two tables are transcribed:

* ``MAIN_TABLE``: ClearCLIP and vanilla CLIP with the OpenAI ViT-B/16 and
  ViT-L/14 backbones on all eight benchmarks.
* ``BACKBONE_TABLE``: the five benchmarks without background (voc20,
  context59, coco_stuff164k, cityscapes, ade20k) for other backbones and for
  the MaskCLIP / SCLIP-style baselines.

Caveats (docs/protocol.md):

* The voc21 / context60 / coco_object numbers of the ClearCLIP rows and the
  ViT-L/14 rows are "as quoted by later papers", not read from the ClearCLIP
  paper itself. ``QUOTED`` lists these entries. (Reading the sentence as "the
  three background columns of both ClearCLIP rows, and every column of both
  ViT-L/14 rows" is our interpretation.)
* Vanilla CLIP on the benchmarks with background (voc21, context60,
  coco_object) was run by the authors with ``prob_thd`` 0.2, not the
  benchmark's own threshold (``VANILLA_CLIP_BACKGROUND_PROB_THD``; the
  ``clip`` preset carries the same value).

Keys are ``(backbone slug, preset name)`` pairs, where the slugs are those of
``clearclip_seg.protocol.benchmarks.BACKBONES`` and the preset names those of
``clearclip_seg.protocol.presets.PRESETS``; inner dicts are keyed by benchmark key.
This module imports nothing heavy (no torch, no mmseg). Numbers for a benchmark
outside the paper's tables are carried by its entry (``Benchmark.published``,
``protocol/benchmarks.py``) and merged in here.

The other methods' published numbers (SCLIP, NACLIP, ResCLIP, SC-CLIP, GEM,
ProxyCLIP), keyed by method card, backbone, protocol and PAMR, are in the
sibling ``published_methods.py``; the tables look a record up in both.
"""
from typing import Dict, FrozenSet, Optional, Tuple

from .benchmarks import BENCHMARKS
from .constants import PAPER_ORDER, VANILLA_CLIP_BACKGROUND_PROB_THD  # noqa: F401  (re-exported for the tables)

PAPER = ('Lan et al., "ClearCLIP: Decomposing CLIP Representations for Dense '
         'Vision-Language Inference", ECCV 2024 (arXiv 2407.12442)')

# the paper's eight columns, and the five sets without background
_NO_BG5 = PAPER_ORDER[3:]


def _row(keys, values) -> Dict[str, float]:
    assert len(keys) == len(values)
    return {k: v for k, v in zip(keys, values) if v is not None}


Key = Tuple[str, str]   # (backbone slug, preset name)

# Main table: all eight benchmarks ('-' in the source table is left out).
MAIN_TABLE: Dict[Key, Dict[str, float]] = {
    ('vit-b16', 'clearclip'): _row(PAPER_ORDER, (51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7)),
    ('vit-l14', 'clearclip'): _row(PAPER_ORDER, (48.7, 28.3, 29.7, 80.0, 29.6, 19.9, 27.9, 15.0)),
    ('vit-b16', 'clip'): _row(PAPER_ORDER, (16.2, 7.7, 5.5, 41.8, 9.2, 4.4, 5.5, 2.1)),
    ('vit-l14', 'clip'): _row(PAPER_ORDER, (None, None, None, 15.8, 4.5, 2.4, 2.9, 1.2)),
}

# Backbone table: the five sets without background.
# The source's MaskCLIP and SCLIP-style rows read "plain / + no-residual". In the
# authors' evaluation code "plain" is their ignore_residual=False setting, which
# keeps the residual *and* the FFN ('maskclip', 'sclip-style'); "+ no-residual"
# drops both ('maskclip-nores', 'sclip-style-nores'). Measured: these presets agree
# with the authors' code on 100 % of pixels (tiny random weights, VOC20).
BACKBONE_TABLE: Dict[Key, Dict[str, float]] = {
    ('openclip-vit-b16', 'clip'): _row(_NO_BG5, (47.2, 9.0, 5.0, 5.1, 2.9)),
    ('openclip-vit-b16', 'clearclip'): _row(_NO_BG5, (81.4, 34.1, 23.1, 31.8, 18.9)),
    ('openclip-vit-l14', 'clip'): _row(_NO_BG5, (39.7, 7.0, 4.1, 3.9, 2.3)),
    ('openclip-vit-l14', 'clearclip'): _row(_NO_BG5, (65.3, 27.9, 19.5, 26.4, 16.0)),
    ('metaclip-vit-b16', 'clip'): _row(_NO_BG5, (35.4, 8.1, 4.3, 5.0, 2.2)),
    ('metaclip-vit-b16', 'clearclip'): _row(_NO_BG5, (78.3, 34.8, 23.5, 27.9, 17.4)),
    ('metaclip-vit-l14', 'clip'): _row(_NO_BG5, (22.7, 6.2, 3.6, 5.1, 2.2)),
    ('metaclip-vit-l14', 'clearclip'): _row(_NO_BG5, (78.2, 30.3, 20.5, 25.6, 16.4)),
    ('vit-b16', 'maskclip'): _row(_NO_BG5, (74.9, 26.4, 16.4, 12.6, 9.8)),
    ('vit-b16', 'maskclip-nores'): _row(_NO_BG5, (61.4, 28.3, 18.4, 24.7, 13.6)),
    ('vit-b16', 'sclip-style'): _row(_NO_BG5, (78.2, 33.0, 21.1, 29.1, 14.6)),
    ('vit-b16', 'sclip-style-nores'): _row(_NO_BG5, (77.9, 35.6, 23.6, 31.0, 17.0)),
}

# Entries "as quoted by later papers" (see the module docstring).
QUOTED: FrozenSet[Tuple[str, str, str]] = frozenset(
    [('vit-b16', 'clearclip', b) for b in PAPER_ORDER[:3]]
    + [('vit-l14', p, b) for p in ('clearclip', 'clip') for b in MAIN_TABLE[('vit-l14', p)]]
)


def _benchmark_entries() -> Dict[Key, Dict[str, float]]:
    """The numbers benchmark entries carry beyond the paper's tables (``Benchmark.published``)."""
    out: Dict[Key, Dict[str, float]] = {}
    for b in BENCHMARKS.values():
        for key, value in b.published.items():
            out.setdefault(key, {})[b.key] = value
    return out


def _merged() -> Dict[Key, Dict[str, float]]:
    out: Dict[Key, Dict[str, float]] = {}
    for table in (MAIN_TABLE, BACKBONE_TABLE, _benchmark_entries()):
        for key, row in table.items():
            merged = out.setdefault(key, {})
            for bench, value in row.items():
                if bench in merged and merged[bench] != value:
                    raise ValueError(f'published tables disagree on {key} {bench}')
                merged[bench] = value
    return out


# Every published number: (backbone slug, preset) -> {benchmark: mIoU}.
PUBLISHED: Dict[Key, Dict[str, float]] = _merged()


def published_miou(backbone: Optional[str], preset: Optional[str], benchmark: str) -> Optional[float]:
    """The published mIoU for one model and benchmark.

    Args:
        backbone: Backbone slug from ``BACKBONES`` (e.g. ``'vit-b16'``), or None.
        preset: Preset name from ``PRESETS`` (e.g. ``'clearclip'``), or None.
        benchmark: Benchmark key (e.g. ``'voc21'``).

    Returns:
        The mIoU in percent, or None when no number was published for it.
    """
    if backbone is None or preset is None:
        return None
    return PUBLISHED.get((backbone, preset), {}).get(benchmark)


def is_quoted(backbone: Optional[str], preset: Optional[str], benchmark: str) -> bool:
    """Whether a published number is "as quoted by later papers".

    Args:
        backbone: Backbone slug.
        preset: Preset name.
        benchmark: Benchmark key.

    Returns:
        True for entries in ``QUOTED``.
    """
    return (backbone, preset, benchmark) in QUOTED

