from .attention import ATTENTION_MODES, attend, attention_map
from .clip_loader import create_clip
from .data_preprocessor import ClearCLIPDataPreProcessor
from .encoder import DenseCLIPEncoder, interpolate_pos_embed
from .segmentor import ClearCLIPSegmentor
from .wrapper import ClearCLIPTestWrapper

__all__ = ['ATTENTION_MODES', 'attend', 'attention_map', 'create_clip', 'ClearCLIPDataPreProcessor',
           'DenseCLIPEncoder', 'interpolate_pos_embed', 'ClearCLIPSegmentor', 'ClearCLIPTestWrapper']
