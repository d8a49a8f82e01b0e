"""FLOSS's offline stage: rank the 80 templates per class by prediction entropy on unlabeled images.

The authors' procedure (``--mode compute_metric``, ``EntropyMetric``), run on a
benchmark's train split without its labels:

1. For each template t, a single-template classifier over all queries (unit vectors).
2. Per image, its class probabilities at the original size:
   ``average='probs'`` (MaskCLIP / CLIP-DINOiser bases): ``softmax(logit_scale * cos)``
   per window at the patch grid, upsampled to the window, windows averaged,
   then resized bilinearly to the original size; ``average='logits'`` (NACLIP
   base): the windows' cosine logits averaged, resized to the original size,
   ``softmax(logit_scale * .)`` over queries, then the max over each class's
   synonyms (not renormalised).
3. The predicted class of each pixel is the argmax; per (t, class) the entropy
   ``H(p) = -sum_k p_k log(p_k + 1e-10)`` of the pixels predicted as that class
   is summed (as mean x count, the mean in float32) and the pixels counted.
4. entropy = sum / count and pixel_percentage = 100 count / (all pixels of all
   images); a class never predicted gets 0.0 and 0.0. Templates are sorted by
   ascending entropy (stable: template order on ties).

``select_templates`` is the authors' loader rule (drop ``pixel_percentage <= 0``,
keep the order, take the first k). ``rankings_document`` writes the format
``models/floss.py`` reads (``tools/floss_rankings.py`` is the command line).
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .floss import RANKINGS_FORMAT
from .slide import slide_inference, whole_inference

# benchmark key -> FLOSS's dataset name (its ranking files' suffix)
FLOSS_DATASETS = {'voc20': 'pascalvoc20', 'context59': 'pascalco59', 'coco_stuff164k': 'cocostuff',
                  'cityscapes': 'cityscapes', 'ade20k': 'ade20k'}
AVERAGES = ('probs', 'logits')
EPSILON = 1e-10


def select_templates(entries: Sequence[dict], keep: int) -> List[int]:
    """The authors' loader rule: entries with ``pixel_percentage > 0``, in order, the first ``keep`` ids."""
    return [int(e['template_id']) for e in entries if e['pixel_percentage'] > 0.0][:keep]


class EntropyTally:
    """Per (template, class): summed pixel entropy and pixel count; the image pixels in total."""

    def __init__(self, num_templates: int, num_classes: int):
        self.sums = [[0.0] * num_classes for _ in range(num_templates)]
        self.counts = [[0] * num_classes for _ in range(num_templates)]
        self.total_pixels = 0

    def add(self, t: int, probs: torch.Tensor) -> None:
        """Class probabilities (C, H, W) of one image under template t."""
        pred = probs.argmax(dim=0)
        ent = -(probs.float() * torch.log(probs.float() + EPSILON)).sum(dim=0)
        for c in torch.unique(pred).tolist():
            mask = pred == c
            count = int(mask.sum())
            # the authors add mean x count (the mean a float32 .item()) into a float64 sum
            self.sums[t][c] += float(ent[mask].mean().item()) * count
            self.counts[t][c] += count

    def rankings(self, class_names: Sequence[str]) -> Dict[str, List[dict]]:
        """Per class name, every template as {template_id, entropy, pixel_percentage, rank}, by entropy."""
        out = {}
        for c, name in enumerate(class_names):
            rows = []
            for t in range(len(self.sums)):
                n = self.counts[t][c]
                rows.append(dict(template_id=t, entropy=self.sums[t][c] / n if n else 0.0,
                                 pixel_percentage=100.0 * n / self.total_pixels if n else 0.0))
            rows.sort(key=lambda r: r['entropy'])
            out[name] = [dict(r, rank=i + 1) for i, r in enumerate(rows)]
        return out


def _class_max(probs: torch.Tensor, query_to_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(Q, H, W) -> (C, H, W): per class the max over its queries."""
    return torch.stack([probs[query_to_class == c].amax(dim=0) for c in range(num_classes)])


@torch.no_grad()
def compute_rankings(segmentor, images: Iterable[Tuple[torch.Tensor, Tuple[int, int]]], average: str = 'probs',
                     logit_scale: float = 100.0, templates_per_pass: int = 8) -> Dict[str, List[dict]]:
    """Entropy rankings of the segmentor's templates per vocabulary class, on unlabeled images.

    Args:
        segmentor: a ``ClearCLIPSegmentor`` (its method, windows, vocabulary and templates).
        images: (normalised network input (3, h, w), original size (H, W)) pairs.
        average: ``probs`` (MaskCLIP / CLIP-DINOiser bases) or ``logits`` (NACLIP base).
        logit_scale: the softmax scale (the authors' 100).
        templates_per_pass: templates scored per encoder pass (memory: T x Q maps per image).

    Returns:
        class name -> list of {template_id, entropy, pixel_percentage, rank}, by ascending entropy.
    """
    if average not in AVERAGES:
        raise ValueError(f'average={average!r}: expected one of {list(AVERAGES)}')
    voc, templates = segmentor.vocabulary, segmentor.templates
    embed = segmentor.text_embedder()
    q, n_classes = len(voc.queries), voc.num_classes
    q2c = segmentor.query_to_class
    device = q2c.device
    tally = EntropyTally(len(templates), n_classes)
    images = list(images)
    cfg = segmentor.test_cfg
    patch = segmentor.method.window_multiple or segmentor.encoder.patch_size
    for start in range(0, len(templates), templates_per_pass):
        ids = list(range(start, min(start + templates_per_pass, len(templates))))
        rows = torch.cat([embed(voc.queries, [templates[t]]) for t in ids]).to(device=device, dtype=torch.float32)

        def encode(crops, rows=rows, n=len(ids)):
            logits = segmentor.method.patch_logits(segmentor.encoder, crops, rows).float()
            if average == 'logits':
                return logits
            b, _, h, w = logits.shape
            return torch.softmax(logits.view(b, n, q, h, w) * logit_scale, dim=2).view(b, n * q, h, w)

        for image, size in images:
            image = image.to(device)
            if cfg['mode'] == 'whole':
                maps = whole_inference([image], encode, patch, fit=cfg['patch_fit'])[0]
            else:
                maps = slide_inference([image], encode, len(ids) * q, cfg['crop_size'], cfg['stride'], patch,
                                       max_windows=segmentor.max_windows(device), fit=cfg['patch_fit'])[0]
            maps = F.interpolate(maps[None], size=tuple(size), mode='bilinear', align_corners=False)[0]
            for j, t in enumerate(ids):
                m = maps[j * q:(j + 1) * q]
                if average == 'logits':
                    m = _class_max(torch.softmax(m * logit_scale, dim=0), q2c, n_classes)
                elif q != n_classes:
                    m = _class_max(m, q2c, n_classes)
                tally.add(t, m)
            if start == 0:
                tally.total_pixels += int(size[0]) * int(size[1])
    return tally.rankings(voc.classes)


def rankings_document(rankings: Dict[str, List[dict]], name: str, backbone: str, benchmark: str,
                      keep: Optional[int] = None, provenance: str = '') -> dict:
    """A rankings JSON (``models/floss.py`` format) holding one (name, backbone, benchmark) entry.

    ``classes`` keeps, per class, the ids ``select_templates`` picks (all of them when
    ``keep`` is None); ``entropy_ranking`` keeps the full table.
    """
    keep = keep or max((len(v) for v in rankings.values()), default=0)
    entry = {'classes': {k: select_templates(v, keep) for k, v in rankings.items()},
             'entropy_ranking': rankings}
    return {'format': RANKINGS_FORMAT, 'templates': 'openai_imagenet', 'keep': keep, 'provenance': provenance,
            'rankings': {name: {backbone: {benchmark: entry}}}}


def merge_documents(base: dict, new: dict) -> dict:
    """``new``'s entries added to (or replacing) ``base``'s."""
    out = dict(base)
    out['rankings'] = {k: {b: dict(v) for b, v in d.items()} for k, d in base.get('rankings', {}).items()}
    for name, by_backbone in new['rankings'].items():
        for backbone, by_bench in by_backbone.items():
            out['rankings'].setdefault(name, {}).setdefault(backbone, {}).update(by_bench)
    return out
