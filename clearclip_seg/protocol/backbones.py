"""CLIP backbones: one table of open_clip architecture/tag pairs, grouped by family.

Every row names an architecture and a pretrained tag exactly as open_clip
3.3.0 lists them (``open_clip.list_pretrained()``; a test checks). Configs
(``tools/make_configs.py``), the ``backbones`` suite and the results tables
are generated from this table; ``benchmarks.BACKBONES`` is its
``slug -> (arch, tag, title)`` view.

Image normalisation is not written here: ``preprocess_mean_std`` reads it
from open_clip's own pretrained/model config (SigLIP and PE use 0.5/0.5),
and the config generator writes it into the data preprocessor.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

from . import constants


@dataclass(frozen=True)
class Family:
    """What a family of towers is and what it needs.

    Attributes:
        name: display name.
        tower: the tower kind that encodes it: ``openclip_vit``, ``timm_vit`` or ``timm_eva``, a name
            registered in ``clearclip_seg/models/towers.py`` (docs/extending.md, "A tower kind").
        dense: how the dense (per-patch) features are taken.
        offline: what a run needs besides the data when offline.
    """
    name: str
    tower: str
    dense: str
    offline: str


_VIT_DENSE = 'class token dropped; ln_post + proj on every patch token'
_WEIGHTS = 'the weights (open_clip cache, or a local file in model.clip.pretrained)'
_HUB_TOKENIZER = (_WEIGHTS + ' and the Hugging Face tokenizer (HF cache, or a saved tokenizer folder '
                  'in model.clip.tokenizer; needs transformers)')

FAMILIES: Dict[str, Family] = {f.name: f for f in [
    Family('OpenAI CLIP', 'openclip_vit', _VIT_DENSE, _WEIGHTS),
    Family('OpenCLIP', 'openclip_vit', _VIT_DENSE, _WEIGHTS),
    Family('MetaCLIP', 'openclip_vit', _VIT_DENSE, _WEIGHTS),
    Family('DFN', 'openclip_vit', _VIT_DENSE, _WEIGHTS),
    Family('MetaCLIP 2', 'openclip_vit', _VIT_DENSE, _HUB_TOKENIZER),
    Family('SigLIP', 'timm_vit', 'no class token; trunk norm, then the MAP head\'s value path '
           '(value half of kv, proj, + norm/MLP residual) on every patch token', _HUB_TOKENIZER),
    Family('SigLIP2', 'timm_vit', 'as SigLIP', _HUB_TOKENIZER),
    Family('EVA02', 'timm_eva', 'rotary q/k; class token dropped; trunk norm + head on every patch token',
           _WEIGHTS),
    Family('PE-Core', 'timm_eva', 'rotary q/k; class token dropped; trunk norm, MAP value path + head '
           'on every patch token', _WEIGHTS),
]}


@dataclass(frozen=True)
class Backbone:
    """One row: a config-name slug and the open_clip model it loads.

    ``norm`` says where the image mean/std come from: ``'open_clip'`` (the
    model's own preprocessing config) or ``'protocol'`` (the paper's CLIP
    mean/std, docs/protocol.md "Backbones", kept for the rows with published
    numbers, which the authors ran that way; it differs only for OpenCLIP
    ViT-L/14 laion2b_s32b_b82k, whose open_clip config says 0.5/0.5).
    """
    slug: str
    arch: str
    pretrained: str
    title: str
    family: str
    size: str
    norm: str = 'open_clip'


BACKBONE_TABLE: Tuple[Backbone, ...] = (
    Backbone('vit-b16', 'ViT-B-16', 'openai', 'CLIP ViT-B/16 (OpenAI)', 'OpenAI CLIP', 'B/16', 'protocol'),
    Backbone('vit-l14', 'ViT-L-14', 'openai', 'CLIP ViT-L/14 (OpenAI)', 'OpenAI CLIP', 'L/14', 'protocol'),
    Backbone('openclip-vit-b16', 'ViT-B-16', 'laion2b_s34b_b88k', 'OpenCLIP ViT-B/16 laion2b_s34b_b88k',
             'OpenCLIP', 'B/16', 'protocol'),
    Backbone('openclip-vit-l14', 'ViT-L-14', 'laion2b_s32b_b82k', 'OpenCLIP ViT-L/14 laion2b_s32b_b82k',
             'OpenCLIP', 'L/14', 'protocol'),
    Backbone('metaclip-vit-b16', 'ViT-B-16-quickgelu', 'metaclip_fullcc', 'MetaCLIP ViT-B/16 metaclip_fullcc',
             'MetaCLIP', 'B/16', 'protocol'),
    Backbone('metaclip-vit-l14', 'ViT-L-14-quickgelu', 'metaclip_fullcc', 'MetaCLIP ViT-L/14 metaclip_fullcc',
             'MetaCLIP', 'L/14', 'protocol'),
    Backbone('openclip-vit-h14', 'ViT-H-14', 'laion2b_s32b_b79k', 'OpenCLIP ViT-H/14 laion2b_s32b_b79k',
             'OpenCLIP', 'H/14'),
    Backbone('openclip-vit-bigg14', 'ViT-bigG-14', 'laion2b_s39b_b160k',
             'OpenCLIP ViT-bigG/14 laion2b_s39b_b160k', 'OpenCLIP', 'bigG/14'),
    Backbone('dfn-vit-b16', 'ViT-B-16', 'dfn2b', 'DFN ViT-B/16 dfn2b', 'DFN', 'B/16'),
    Backbone('dfn-vit-l14', 'ViT-L-14', 'dfn2b', 'DFN ViT-L/14 dfn2b', 'DFN', 'L/14'),
    Backbone('dfn-vit-h14', 'ViT-H-14', 'dfn5b', 'DFN ViT-H/14 dfn5b', 'DFN', 'H/14'),
    Backbone('metaclip2-vit-h14', 'ViT-H-14-worldwide', 'metaclip2_worldwide',
             'MetaCLIP 2 ViT-H/14 worldwide', 'MetaCLIP 2', 'H/14'),
    Backbone('siglip-vit-b16', 'ViT-B-16-SigLIP', 'webli', 'SigLIP ViT-B/16 webli', 'SigLIP', 'B/16'),
    Backbone('siglip-vit-so400m14', 'ViT-SO400M-14-SigLIP', 'webli', 'SigLIP ViT-SO400M/14 webli',
             'SigLIP', 'SO400M/14'),
    Backbone('siglip2-vit-b16', 'ViT-B-16-SigLIP2', 'webli', 'SigLIP2 ViT-B/16 webli', 'SigLIP2', 'B/16'),
    Backbone('siglip2-vit-so400m14', 'ViT-SO400M-14-SigLIP2', 'webli', 'SigLIP2 ViT-SO400M/14 webli',
             'SigLIP2', 'SO400M/14'),
    Backbone('eva02-vit-b16', 'EVA02-B-16', 'merged2b_s8b_b131k', 'EVA02-CLIP ViT-B/16 merged2b',
             'EVA02', 'B/16'),
    Backbone('eva02-vit-l14', 'EVA02-L-14', 'merged2b_s4b_b131k', 'EVA02-CLIP ViT-L/14 merged2b',
             'EVA02', 'L/14'),
    Backbone('pe-vit-b16', 'PE-Core-B-16', 'meta', 'PE-Core ViT-B/16', 'PE-Core', 'B/16'),
    Backbone('pe-vit-l14', 'PE-Core-L-14-336', 'meta', 'PE-Core ViT-L/14 336', 'PE-Core', 'L/14'),
)

BACKBONE_INFO: Dict[str, Backbone] = {b.slug: b for b in BACKBONE_TABLE}

# slug -> (open_clip arch, pretrained tag, title): the view the rest of the package reads
BACKBONES: Dict[str, Tuple[str, str, str]] = {b.slug: (b.arch, b.pretrained, b.title) for b in BACKBONE_TABLE}

def backbone_mean_std(slug: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Image mean/std (0-1 scale, RGB) a backbone's configs normalise with (see ``Backbone.norm``)."""
    b = BACKBONE_INFO[slug]
    if b.norm == 'protocol':
        return constants.OPENAI_MEAN, constants.OPENAI_STD
    return preprocess_mean_std(b.arch, b.pretrained)


def preprocess_mean_std(arch: str, pretrained: str = None) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Image mean/std (0-1 scale, RGB) as open_clip configures them for this model.

    The pretrained tag's config wins, then the architecture's ``preprocess_cfg``,
    then open_clip's default (OpenAI's statistics).
    """
    import open_clip
    mean, std = constants.OPENAI_MEAN, constants.OPENAI_STD  # open_clip's default: OpenAI's
    arch_cfg = (open_clip.get_model_config(arch) or {}).get('preprocess_cfg', {})
    mean, std = arch_cfg.get('mean', mean), arch_cfg.get('std', std)
    if pretrained and pretrained in open_clip.list_pretrained_tags_by_model(arch):
        tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        mean, std = tag_cfg.get('mean') or mean, tag_cfg.get('std') or std
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def families() -> Dict[str, Tuple[Backbone, ...]]:
    """Backbone rows grouped by family, in table order."""
    out: Dict[str, list] = {}
    for b in BACKBONE_TABLE:
        out.setdefault(b.family, []).append(b)
    return {k: tuple(v) for k, v in out.items()}
