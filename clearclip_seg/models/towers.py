"""Pick the dense encoder for an open_clip image tower, and the pieces each family needs.

Two tower layouts carry every CLIP family open_clip ships as a ViT:

* ``openclip_vit``: open_clip's own ``VisionTransformer`` (OpenAI, OpenCLIP,
  MetaCLIP, MetaCLIP 2, DFN, ViT-H, bigG): ``DenseCLIPEncoder``.
* ``timm_vit`` / ``timm_eva``: a ``TimmModel`` around a timm
  ``VisionTransformer`` (SigLIP, SigLIP2) or ``Eva`` (EVA02, PE-Core):
  ``TimmCLIPEncoder``.

Both implement ``DenseEncoder`` and register their kinds with
``register_tower`` (``dense_encoder.py``); a new tower kind is one more
registered ``DenseEncoder`` subclass, imported here. ``wrap_visual`` asks the
registered encoders which one wraps the tower, checks the layout once, at
wrap time, and fails in one line on anything else. ``load_tokenizer`` gets the
text tokenizer the way open_clip does, with one-line errors (and a local-folder
option) for the tokenizers open_clip fetches from the Hugging Face hub
(SigLIP, SigLIP2, MetaCLIP 2).
"""
import os
from typing import Dict, Optional, Type

import torch.nn as nn

from .dense_encoder import DenseEncoder, encoder_class, tower_encoders, tower_kind  # noqa: F401  (API)
from .encoder import DenseCLIPEncoder  # noqa: F401  (registers openclip_vit)
from .timm_encoder import TimmCLIPEncoder  # noqa: F401  (registers timm_vit, timm_eva)

# tower kind -> encoder class (a view of the registry, for tables and tests)
TOWER_ENCODERS: Dict[str, Type[DenseEncoder]] = tower_encoders()


def wrap_visual(visual: nn.Module, fused_attn: bool = True, map_head: str = 'full') -> DenseEncoder:
    """The dense encoder for an open_clip image tower (``model.visual``).

    Args:
        visual: the tower.
        fused_attn: ``scaled_dot_product_attention`` in the last block (``DenseEncoder``).
        map_head: dense projection through a MAP head (``TimmCLIPEncoder``);
            ignored by towers that pool otherwise (an encoder takes the
            options it names in ``tower_options``).
    """
    cls = encoder_class(visual)
    options = {k: v for k, v in dict(map_head=map_head).items() if k in cls.tower_options}
    return cls(visual, fused_attn=fused_attn, **options)


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
