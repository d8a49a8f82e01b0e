"""``ClearCLIPSegmentor``: training-free open-vocabulary segmentation in MMSeg.

Image -> sliding windows -> dense CLIP patch features (switchable last block)
-> cosine similarity with the text classifier -> averaged query logits ->
resize to the original size -> ``softmax(logits * logit_scale)`` over queries
-> per class the max over its synonyms -> argmax, with pixels whose top
probability is below ``prob_thd`` set to class 0 (PROTOCOL.md).
"""
import logging
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.device import get_device
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from ..vocab import load_templates, load_vocabulary
from .clip_loader import create_clip, resolve_precision, state_digest, weights_identity
from .attention import check_mode
from .encoder import DenseCLIPEncoder
from .slide import slide_inference, whole_inference
from .text_classifier import build_text_classifier

logger = logging.getLogger(__name__)

TEST_MODES = ('slide', 'whole')


@MODELS.register_module()
class ClearCLIPSegmentor(BaseSegmentor):
    """Segment with an open_clip ViT whose last block follows ClearCLIP.

    Args:
        clip: ``arch`` (open_clip name), ``pretrained`` (tag or file, None for
            random weights), ``arch_file`` (JSON architecture to register),
            ``precision`` (``auto`` = fp16 on GPU / fp32 on CPU, or
            ``fp32 | fp16 | bf16``), ``quick_gelu`` (None follows the tag).
        last_block: ``attn`` (``qk | qq | kk | vv | qq+kk | identity``),
            ``residual`` and ``ffn`` booleans. Defaults are ClearCLIP's: qq, off, off.
        vocabulary: a shipped vocabulary name (``'voc21'``) or a file path.
        templates: template-set name (``'openai_imagenet'``, the 80 OpenAI
            ImageNet templates) or a file with one template per line.
        logit_scale: multiplies cosine similarities before the softmax (50).
        prob_thd: pixels whose top class probability is below it become class 0.
        test_cfg: ``mode`` (``slide`` or ``whole``), ``crop_size``, ``stride``
            and ``max_windows`` (windows per encoder batch; 1 = plain path;
            ``'auto'``: 16 on a GPU, 1 on a CPU, where one 448x448 window
            already runs the matmuls near peak and bigger batches only spill
            the cache: docs/speed_figures.md).
        text_cache: folder for cached text classifiers; None = default
            (``$CLEARCLIP_CACHE``), False = no cache.
        fused_attn: ``scaled_dot_product_attention`` in the last block.
        compile: run the encoder through ``torch.compile`` (off by default).
        data_preprocessor: normalisation config (``ClearCLIPDataPreProcessor``).
    """

    def __init__(self,
                 clip: dict,
                 last_block: Optional[dict] = None,
                 vocabulary: Union[str, Sequence[str]] = 'voc21',
                 templates: Union[str, Sequence[str]] = 'openai_imagenet',
                 logit_scale: float = 50.0,
                 prob_thd: float = 0.0,
                 test_cfg: Optional[dict] = None,
                 text_cache: Union[None, bool, str] = None,
                 fused_attn: bool = True,
                 compile: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if isinstance(data_preprocessor, dict):
            # built from MMSeg's registry, so it also works outside a Runner's default scope
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        clip = dict(clip)
        unknown = set(clip) - {'arch', 'pretrained', 'arch_file', 'precision', 'quick_gelu', 'cache_dir'}
        if unknown:
            raise ValueError(f'unknown keys {sorted(unknown)} in model.clip: expected arch, pretrained, '
                             'arch_file, precision, quick_gelu, cache_dir')
        last_block = {**dict(attn='qq', residual=False, ffn=False), **(last_block or {})}
        unknown = set(last_block) - {'attn', 'residual', 'ffn'}
        if unknown:
            raise ValueError(f'unknown keys {sorted(unknown)} in model.last_block: expected attn, residual, ffn')
        check_mode(last_block['attn'])  # fail before any weights are loaded
        self.test_cfg = {**dict(mode='slide', crop_size=(448, 448), stride=(224, 224), max_windows='auto'),
                         **(test_cfg or {})}
        if self.test_cfg['mode'] not in TEST_MODES:
            raise ValueError(f"unknown test mode '{self.test_cfg['mode']}' (model.test_cfg.mode): "
                             f'expected one of {TEST_MODES}')

        self.vocabulary = load_vocabulary(vocabulary)
        self.templates = load_templates(templates)
        self.template_spec = templates if isinstance(templates, str) else 'custom'
        self.logit_scale = float(logit_scale)
        self.prob_thd = float(prob_thd)
        self.align_corners = False
        self.text_cache = text_cache

        device = get_device()
        self.precision = resolve_precision(clip.get('precision', 'auto'), device)
        model, arch = create_clip(clip.get('arch'), clip.get('pretrained'), clip.get('arch_file'),
                                  precision=self.precision, quick_gelu=clip.get('quick_gelu'),
                                  cache_dir=clip.get('cache_dir'))
        self.arch = arch
        self.pretrained = clip.get('pretrained')
        self.encoder = DenseCLIPEncoder(model.visual, fused_attn=fused_attn, **last_block)
        # kept in a list: a compiled wrapper must not enter the module tree / state_dict
        self._compiled = [torch.compile(self.encoder)] if compile else [None]
        # The text tower is needed once, to build the classifier; it is kept out of
        # the module tree (no device moves, no state_dict entries) and dropped after.
        self._text_model = [model]
        self._tokenizer = None
        self.register_buffer('query_embeddings', torch.empty(0), persistent=False)
        self.register_buffer('query_to_class',
                             torch.tensor(self.vocabulary.query_to_class, dtype=torch.long), persistent=False)

    # -- text classifier --------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.vocabulary.num_classes

    def text_cache_key(self) -> Optional[dict]:
        if self.text_cache is False:
            return None
        weights = weights_identity(self.arch, self.pretrained)
        if weights is None:  # random weights: identify them by content
            weights = 'digest:' + state_digest(self._text_model[0])
        import open_clip
        return dict(arch=self.arch, weights=weights, precision=self.precision,
                    open_clip=open_clip.__version__)

    @torch.no_grad()
    def build_text_classifier(self) -> torch.Tensor:
        """Build (or load from cache) the query embeddings on the model's device."""
        if self.query_embeddings.numel():
            return self.query_embeddings
        import open_clip
        device = self.query_to_class.device
        clip_model = self._text_model[0]
        clip_model.to(device)
        tokenizer = open_clip.get_tokenizer(self.arch)
        cache_dir = self.text_cache if isinstance(self.text_cache, str) else None
        emb = build_text_classifier(clip_model, tokenizer, self.vocabulary.queries, self.templates,
                                    device, key_parts=self.text_cache_key(), cache_dir=cache_dir)
        self.query_embeddings = emb.to(device=device, dtype=torch.float32)
        return self.query_embeddings

    # -- dense scoring ----------------------------------------------------------
    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised patch features (B, gh, gw, dim)."""
        encoder = self._compiled[0] or self.encoder
        return F.normalize(encoder(inputs).float(), dim=-1)

    def _patch_logits(self, crops: torch.Tensor) -> torch.Tensor:
        feats = self.extract_feat(crops)
        return torch.einsum('bhwc,qc->bqhw', feats, self.build_text_classifier())

    def query_logits(self, images: Union[torch.Tensor, List[torch.Tensor]]) -> List[torch.Tensor]:
        """Cosine-similarity logits per query, (Q, H, W) at each input's size."""
        self.build_text_classifier()
        images = list(images)
        patch = self.encoder.patch_size
        if self.test_cfg['mode'] == 'whole':
            return whole_inference(images, self._patch_logits, patch)
        return slide_inference(images, self._patch_logits, len(self.vocabulary.queries),
                               self.test_cfg['crop_size'], self.test_cfg['stride'], patch,
                               max_windows=self.max_windows(images[0].device))

    def max_windows(self, device) -> int:
        """Windows per encoder batch: ``test_cfg.max_windows``, resolving ``'auto'``."""
        value = self.test_cfg.get('max_windows', 'auto')
        if value == 'auto':
            return 16 if torch.device(device).type == 'cuda' else 1
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"model.test_cfg.max_windows={value!r}: expected a positive integer or 'auto'")
        return value

    def encode_decode(self, inputs, batch_img_metas=None) -> torch.Tensor:
        """Query logits at input size, stacked (inputs must share a size)."""
        return torch.stack(self.query_logits(inputs))

    def classify(self, logits: torch.Tensor):
        """Query logits (Q, H, W) -> class probabilities (C, H, W) and labels (1, H, W)."""
        probs = torch.softmax(logits * self.logit_scale, dim=0)
        if probs.shape[0] != self.num_classes:  # synonyms: max over each class's queries
            idx = self.query_to_class.view(-1, 1, 1).expand_as(probs)
            probs = probs.new_full((self.num_classes, *probs.shape[1:]), -1.0).scatter_reduce(
                0, idx, probs, reduce='amax')
        top, labels = probs.max(dim=0, keepdim=True)
        labels[top < self.prob_thd] = 0
        return probs, labels

    def postprocess_result(self, seg_logits: List[torch.Tensor],
                           data_samples: Optional[List[SegDataSample]] = None) -> List[SegDataSample]:
        """Resize each image's query logits to its original size, then classify.

        Keeps MMSeg's contract: ``seg_logits`` (here the class probabilities)
        and ``pred_sem_seg`` at the original image size.
        """
        if data_samples is None:
            data_samples = [SegDataSample() for _ in seg_logits]
        for logits, sample in zip(seg_logits, data_samples):
            meta = sample.metainfo
            if 'ori_shape' in meta:
                pad = meta.get('img_padding_size', meta.get('padding_size', [0, 0, 0, 0]))
                left, right, top, bottom = pad
                H, W = logits.shape[-2:]
                logits = logits[:, top:H - bottom, left:W - right]
                if meta.get('flip', False):
                    logits = logits.flip(dims=(2,) if meta.get('flip_direction') == 'horizontal' else (1,))
                logits = F.interpolate(logits[None], size=tuple(meta['ori_shape'][:2]), mode='bilinear',
                                       align_corners=self.align_corners)[0]
            probs, labels = self.classify(logits)
            sample.set_data({'seg_logits': PixelData(data=probs), 'pred_sem_seg': PixelData(data=labels)})
        return data_samples

    @torch.no_grad()
    def predict(self, inputs, data_samples=None) -> List[SegDataSample]:
        return self.postprocess_result(self.query_logits(inputs), data_samples)

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs)

    def loss(self, inputs, data_samples):
        raise NotImplementedError('ClearCLIPSegmentor is training-free: it has no loss')
