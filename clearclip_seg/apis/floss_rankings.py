"""Recompute FLOSS's template rankings with any config's method, on a folder of unlabeled images.

    from clearclip_seg.apis.floss_rankings import rank_templates
    doc = rank_templates('configs/floss-naclip/floss-naclip_vit-b16_context59.py', ['data/train_images/'],
                         name='naclip', backbone='vit-b16', benchmark='context59', average='logits')

The config's method, windows, resize, vocabulary and templates are used; its text
head (if any) is switched off, since the ranking scores one template at a time
(``models/floss_rankings.py``). The result is a rankings JSON document that
``model.text_head=dict(type='FLOSS', rankings=name, backbone=..., benchmark=..., file=PATH)``
reads; ``tools/floss_rankings.py`` is the command line.
"""
from typing import Optional, Sequence

from ..models.floss_rankings import compute_rankings, rankings_document
from .inference import init_segmentor, load_image, preprocess


def rank_templates(config, images: Sequence[str], name: str, backbone: str, benchmark: str,
                   average: str = 'probs', cfg_options: Optional[dict] = None, device=None,
                   templates_per_pass: int = 8, keep: Optional[int] = None) -> dict:
    """Entropy rankings of the config's templates on ``images`` (paths), as a rankings document.

    Args:
        config: config path or ``mmengine.Config``.
        images: image files (labels are not read).
        name, backbone, benchmark: the entry's keys in the document.
        average: ``probs`` (MaskCLIP / CLIP-DINOiser bases) or ``logits`` (NACLIP base).
        cfg_options: config overrides.
        device: as ``init_segmentor``.
        templates_per_pass: templates scored per encoder pass.
        keep: template ids kept per class in ``classes`` (None: every one with pixels).
    """
    options = {**(cfg_options or {}), 'model.text_head': None}
    model = init_segmentor(config, device=device, cfg_options=options, build_text=False)

    def pairs():
        for path in images:
            img = load_image(path)
            yield preprocess(model, img)[0], tuple(img.shape[:2])

    rankings = compute_rankings(model, list(pairs()), average=average, templates_per_pass=templates_per_pass)
    provenance = (f'tools/floss_rankings.py: {getattr(model.cfg, "filename", None) or "config"}, '
                  f'{len(images)} images, average={average}')
    return rankings_document(rankings, name, backbone, benchmark, keep=keep, provenance=provenance)
