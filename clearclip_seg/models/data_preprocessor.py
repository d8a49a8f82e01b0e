"""Data preprocessor that lets a test batch hold images of different sizes."""
from typing import Any, Dict, Optional, Sequence

import torch
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS

from ..protocol import constants


@MODELS.register_module()
class ClearCLIPDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` whose test batches may mix image sizes.

    Normalisation (mean/std, BGR to RGB) is MMSeg's and comes from the config;
    mean/std default to CLIP's (``protocol.constants.CLIP_MEAN`` / ``CLIP_STD``,
    x 255, RGB) when neither is given. In test mode, same-size images are stacked as usual; a batch of different
    sizes is returned as a list of (3, H, W) tensors instead of failing, so
    that a batch scores exactly as its images one at a time. No padding is
    added here: windows are padded to the patch size by the segmentor.
    """

    def __init__(self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None, **kwargs):
        if mean is None and std is None:
            mean, std = list(constants.CLIP_MEAN), list(constants.CLIP_STD)
        super().__init__(mean=mean, std=std, **kwargs)

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        if training:
            return super().forward(data, training)
        data = self.cast_data(data)
        inputs = data['inputs']
        if self.channel_conversion and inputs[0].size(0) == 3:
            inputs = [x[[2, 1, 0], ...] for x in inputs]
        inputs = [x.float() for x in inputs]
        if self._enable_normalize:
            inputs = [(x - self.mean) / self.std for x in inputs]
        if all(x.shape == inputs[0].shape for x in inputs):
            inputs = torch.stack(inputs)
        return dict(inputs=inputs, data_samples=data.get('data_samples'))
