"""The public API, in MMSeg's style. Every tool goes through it.

    from clearclip_seg.apis import init_segmentor, inference_segmentor, evaluate

    model = init_segmentor('configs/clearclip/clearclip_vit-b16_voc21.py', device='cpu')
    result = inference_segmentor(model, 'demo.jpg')     # result.labels (H, W), .probs (C, H, W), .classes
    record = evaluate('configs/clearclip/clearclip_vit-b16_voc21.py', predictions='preds/')  # one JSON record
    record = score_predictions('preds/', 'configs/clearclip/clearclip_vit-b16_voc21.py')  # the same, later

Importing this module is light; MMSeg is imported when a function is called.
"""
from .config import ConfigError, load_config
from .inference import SegResult, inference_segmentor, init_segmentor, load_image, preprocess
from .evaluate import evaluate
from .score import score_predictions

__all__ = ['ConfigError', 'load_config', 'SegResult', 'init_segmentor', 'inference_segmentor',
           'load_image', 'preprocess', 'evaluate', 'score_predictions']
