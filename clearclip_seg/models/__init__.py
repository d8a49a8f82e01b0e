"""Models: the dense encoders, their stages and the scoring pieces (plain torch + open_clip).

``import clearclip_seg.models`` does not import MMSegmentation. The MMSeg
data preprocessor (``ClearCLIPDataPreProcessor``) lives in its own module and is
loaded on first use of its name here (or by ``clearclip_seg.register_all_modules()``);
the segmentor, which composes these pieces with a method, is ``clearclip_seg.segmentor``.
"""
import importlib

from .attention import ATTENTION_MODES, attend, attention_map
from .clip_loader import create_clip
from .dense_encoder import DenseEncoder, register_tower, tower_encoders, tower_kind
from .encoder import DenseCLIPEncoder, interpolate_pos_embed
from .towers import wrap_visual
from . import floss  # noqa: F401,E402  (registers the FLOSS text head)

# name -> module of the MMSeg-registered classes, imported when first asked for
_MMSEG_CLASSES = {'ClearCLIPDataPreProcessor': 'data_preprocessor'}


def __getattr__(name):
    if name in _MMSEG_CLASSES:
        return getattr(importlib.import_module(f'.{_MMSEG_CLASSES[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['ATTENTION_MODES', 'attend', 'attention_map', 'create_clip', 'DenseEncoder', 'register_tower',
           'tower_encoders', 'tower_kind', 'DenseCLIPEncoder', 'interpolate_pos_embed', 'wrap_visual',
           *_MMSEG_CLASSES]
