"""Pick the dense encoder for an open_clip image tower, and the pieces each family needs.

Two tower layouts carry every CLIP family open_clip ships as a ViT:

* ``openclip_vit``: open_clip's own ``VisionTransformer`` (OpenAI, OpenCLIP,
  MetaCLIP, MetaCLIP 2, DFN, ViT-H, bigG): ``DenseCLIPEncoder``.
* ``timm_vit`` / ``timm_eva``: a ``TimmModel`` around a timm
  ``VisionTransformer`` (SigLIP, SigLIP2) or ``Eva`` (EVA02, PE-Core):
  ``TimmCLIPEncoder``.

``wrap_visual`` checks the layout once, at wrap time, and fails in one line on
anything else. ``load_tokenizer`` gets the text tokenizer the way open_clip
does, with one-line errors (and a local-folder option) for the tokenizers
open_clip fetches from the Hugging Face hub (SigLIP, SigLIP2, MetaCLIP 2).
"""
import os
from typing import Dict, Optional, Type

import torch.nn as nn

from .encoder import DenseCLIPEncoder
from .timm_encoder import TimmCLIPEncoder

# tower kind -> encoder class
TOWER_ENCODERS: Dict[str, Type[DenseCLIPEncoder]] = {
    'openclip_vit': DenseCLIPEncoder,
    'timm_vit': TimmCLIPEncoder,
    'timm_eva': TimmCLIPEncoder,
}


def tower_kind(visual: nn.Module) -> str:
    """``openclip_vit``, ``timm_vit`` or ``timm_eva`` (a key of ``TOWER_ENCODERS``)."""
    trunk = getattr(visual, 'trunk', None)
    if trunk is not None:
        from timm.models.eva import Eva
        from timm.models.vision_transformer import VisionTransformer
        if isinstance(trunk, Eva):
            return 'timm_eva'
        if isinstance(trunk, VisionTransformer):
            return 'timm_vit'
        raise TypeError(f'timm trunk {type(trunk).__name__} is not supported: expected a timm '
                        'VisionTransformer (SigLIP) or Eva (EVA02, PE); convolutional trunks have no patch tokens')
    if hasattr(visual, 'transformer') and hasattr(visual, 'conv1'):
        return 'openclip_vit'
    raise TypeError(f'image tower {type(visual).__name__} is not supported: expected an open_clip '
                    'VisionTransformer or a TimmModel with a ViT/Eva trunk (ResNet and ConvNeXt towers '
                    'have no patch tokens)')


def wrap_visual(visual: nn.Module, attn: str = 'qq', residual: bool = False, ffn: bool = False,
                fused_attn: bool = True, map_head: str = 'full') -> DenseCLIPEncoder:
    """The dense encoder for an open_clip image tower (``model.visual``).

    Args:
        visual: the tower.
        attn, residual, ffn, fused_attn: the last-block switches (``DenseCLIPEncoder``).
        map_head: dense projection through a MAP head (``TimmCLIPEncoder``);
            ignored by towers that pool otherwise.
    """
    cls = TOWER_ENCODERS[tower_kind(visual)]
    kwargs = dict(attn=attn, residual=residual, ffn=ffn, fused_attn=fused_attn)
    if issubclass(cls, TimmCLIPEncoder):
        kwargs['map_head'] = map_head
    return cls(visual, **kwargs)


def hub_tokenizer_name(arch: str) -> Optional[str]:
    """The Hugging Face tokenizer open_clip fetches for ``arch``, or None when it ships one."""
    import open_clip
    cfg = open_clip.get_model_config(arch) or {}
    text = cfg.get('text_cfg', {})
    if text.get('hf_tokenizer_name'):
        return text['hf_tokenizer_name']
    if 'siglip' in arch.lower():  # open_clip's SigLipTokenizer downloads its sentencepiece model
        return 'SigLipTokenizer(' + ('gemma' if 'siglip2' in arch.lower() else 'mc4' if 'i18n' in arch.lower()
                                    else 'c4-en') + ')'
    return None


def load_tokenizer(arch: str, tokenizer: Optional[str] = None, cache_dir: Optional[str] = None):
    """The text tokenizer for ``arch``.

    Args:
        arch: open_clip architecture name.
        tokenizer: a local folder holding a saved Hugging Face tokenizer
            (``model.clip.tokenizer``), used instead of the hub one; None =
            open_clip's own choice.
        cache_dir: Hugging Face cache folder.
    """
    import open_clip
    if tokenizer is not None:
        if not isinstance(tokenizer, str) or not os.path.exists(tokenizer):
            raise FileNotFoundError(f'tokenizer {tokenizer!r} (model.clip.tokenizer) not found: expected a '
                                    'local folder with a saved Hugging Face tokenizer (tokenizer.json ...)')
        text = (open_clip.get_model_config(arch) or {}).get('text_cfg', {})
        try:
            return open_clip.HFTokenizer(tokenizer, context_length=text.get('context_length', 77),
                                         tokenizer_mode=text.get('tokenizer_mode'),
                                         **text.get('tokenizer_kwargs', {}))
        except ImportError as e:
            raise RuntimeError(_missing_package(arch, e)) from e
    hub = hub_tokenizer_name(arch)
    try:
        return open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    except ImportError as e:
        raise RuntimeError(_missing_package(arch, e)) from e
    except Exception as e:  # hub errors: offline, not cached, gated
        if hub is None:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise RuntimeError(
            f"tokenizer '{hub}' of '{arch}' is fetched from the Hugging Face hub and could not be loaded "
            f'(offline or not cached: {first}); download it once where online, or set '
            'model.clip.tokenizer=/path/to/tokenizer_dir (a saved Hugging Face tokenizer)') from e


def _missing_package(arch: str, err: ImportError) -> str:
    return (f"the tokenizer of '{arch}' (model.clip.arch) needs a package that is not installed ({err}): "
            'pip install transformers sentencepiece (SigLIP, SigLIP2 and MetaCLIP 2 text towers)')
