"""``ClearCLIPSegmentor``: training-free open-vocabulary segmentation in MMSeg.

Image -> sliding windows -> dense CLIP patch features (switchable last block)
-> cosine similarity with the text classifier -> averaged query logits ->
resize to the original size -> ``softmax(logits * logit_scale)`` over queries
-> per class the max over its synonyms -> argmax, with pixels whose top
probability is below ``prob_thd`` set to class 0 (docs/protocol.md).
"""
import logging
from functools import partial
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.device import get_device
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from .models.classify import ResizedGuide, class_probabilities, classify, classify_at_size, classify_tiled
from .models.clip_loader import CLIP_KEYS, create_clip, resolve_precision
from .models.data_preprocessor import ClearCLIPDataPreProcessor  # noqa: F401  (registers the default data_preprocessor)
from .models.label_postprocess import build_label_postprocessor
from .models.postprocess import build_postprocessor
from .models.scoring import Scorer, check_finite_logits, check_scoring, classify_scored
from .models.slide import slide_inference, whole_inference
from .models.text_classifier import build_text_classifier, text_model_identity
from .models.text_heads import build_text_head
from .models.towers import load_tokenizer, wrap_visual
from .options import check_bool, check_keys
from .protocol import constants
from .segmentor_options import check_thresholds, resolve_max_windows, resolve_method, resolve_test_cfg
from .vocab import load_templates, load_vocabulary

logger = logging.getLogger(__name__)


@MODELS.register_module()
class ClearCLIPSegmentor(BaseSegmentor):
    """Segment with an open_clip ViT whose last block follows ClearCLIP.

    Args:
        clip: ``arch`` (open_clip name), ``pretrained`` (tag or file, None for
            random weights), ``arch_file`` (JSON architecture to register),
            ``precision`` (``auto`` = fp16 on GPU / fp32 on CPU, or
            ``fp32 | fp16 | bf16``), ``quick_gelu`` (None follows the tag).
        last_block: ``attn`` (``qk | qq | kk | vv | qq+kk | identity``),
            ``residual`` and ``ffn`` booleans of the ``LastBlock`` method.
            Defaults are ClearCLIP's (``protocol.constants.CLEARCLIP_LAST_BLOCK``).
            None with another ``method``.
        method: ``dict(type=NAME, **options)``, a registered dense method
            (``clearclip_seg.methods``: ``LastBlock``, ``SCLIP``, ``NACLIP``...);
            None = ``LastBlock`` from ``last_block``.
        vocabulary: a shipped vocabulary name (``'voc21'``) or a file path.
        templates: template-set name (``'openai_imagenet'``, the 80 OpenAI
            ImageNet templates) or a file with one template per line; None:
            the protocol's (``protocol.constants.TEMPLATES``).
        logit_scale: multiplies cosine similarities before the softmax; None:
            the protocol's (``protocol.constants.LOGIT_SCALE``); ``'model'``: the
            CLIP's learned scale.
        prob_thd: pixels whose top class probability is below it become class 0.
        area_thd: SCLIP's rule: classes 1..C-1 predicted on at most this
            fraction of the predicted foreground area are suppressed (their
            probability zeroed, pixels re-assigned to the next best class);
            None = off.
        postprocess: ``dict(type=NAME, **options)`` refining the query logits
            at the original size before the logit scale, guided by the
            normalised input resized to that size (``PAMR``); None = off.
        test_cfg: ``mode`` (``slide`` or ``whole``), ``crop_size``, ``stride``
            (defaults: the protocol's ``SLIDE_CROP`` / ``SLIDE_STRIDE``),
            ``max_windows`` (windows per encoder batch; 1 = plain path;
            ``'auto'``: 16 on a GPU; on a CPU 1 in fp32, where one 448x448
            window already runs the matmuls near peak and bigger batches only
            spill the cache, and 4 in bf16/fp16: docs/performance.md),
            ``patch_fit`` (``pad``: windows
            zero-padded to patch multiples, ClearCLIP; ``truncate``: the
            remainder rows/columns dropped and the logits stretched over the
            window, the SCLIP-family code) and ``keep_probs`` (True: store
            the class probabilities at the original size as ``seg_logits``;
            False: labels only). On a large image the resize, PAMR, the area
            rule and the argmax run in bands of rows (``classify_at_size``),
            so memory stays bounded; only ``keep_probs`` holds (C, H, W).
        text_cache: folder for cached text classifiers; None = default
            (``$CLEARCLIP_CACHE``), False = no cache.
        fused_attn: ``scaled_dot_product_attention`` in the last block.
        compile: run the encoder through ``torch.compile`` (off by default).
        text_head: ``dict(type=NAME, **options)``, a registered text head
            (``models/text_heads.py``) making the classifier rows and folding
            their per-window logits back into one per query; None = one row
            per query (the plain text side).
        label_postprocess: ``dict(type=NAME, **options)``, a registered step
            changing the final label map after the argmax and ``prob_thd``
            (``models/label_postprocess.py``: ``MorphClose``, ITACLIP's closing);
            None = off. The kept class probabilities are not changed.
        data_preprocessor: normalisation config (``ClearCLIPDataPreProcessor``).
    """

    def __init__(self,
                 clip: dict,
                 last_block: Optional[dict] = None,
                 vocabulary: Union[str, Sequence[str]] = 'voc21',
                 templates: Union[None, str, Sequence[str]] = None,
                 logit_scale: Union[None, float, str] = None,
                 prob_thd: float = 0.0,
                 test_cfg: Optional[dict] = None,
                 method: Optional[dict] = None,
                 area_thd: Optional[float] = None,
                 postprocess: Optional[dict] = None,
                 scoring: str = 'softmax',
                 logit_bias: Union[float, str] = 0.0,
                 text_cache: Union[None, bool, str] = None,
                 fused_attn: bool = True,
                 compile: bool = False,
                 text_head: Optional[dict] = None,
                 label_postprocess: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if isinstance(data_preprocessor, dict):
            # built from MMSeg's registry, so it also works outside a Runner's default scope
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        clip = dict(clip)
        check_keys(clip, CLIP_KEYS, 'model.clip')
        # every option is checked before any weights are loaded
        self.method = resolve_method(method, last_block)
        self.test_cfg = resolve_test_cfg(test_cfg)
        logit_scale = constants.LOGIT_SCALE if logit_scale is None else logit_scale
        templates = constants.TEMPLATES if templates is None else templates
        # logit_scale='model' (the CLIP's learned scale) is resolved once the CLIP is loaded
        self.logit_scale, self.prob_thd, self.area_thd = check_thresholds(
            1.0 if logit_scale == 'model' else logit_scale, prob_thd, area_thd)
        check_scoring(scoring)
        self.postprocess = build_postprocessor(postprocess)
        self.label_postprocess = build_label_postprocessor(label_postprocess)

        self.vocabulary = load_vocabulary(vocabulary)
        self.templates = load_templates(templates)
        self.text_head = build_text_head(text_head)
        if self.text_head is not None and not self.method.accepts_text_head:
            raise ValueError(f'model.text_head={text_head!r} folds per-window logits over its own rows; '
                             f'model.method.type={self.method.method_name} takes no text head: set text_head=None')
        if self.text_head is not None:
            self.text_head.bind(self.vocabulary, self.templates)
        self.template_spec = templates if isinstance(templates, str) else 'custom'
        self.align_corners = False
        self.text_cache = text_cache

        device = get_device()
        self.precision = resolve_precision(clip.get('precision', 'auto'), device)
        model, arch = create_clip(clip.get('arch'), clip.get('pretrained'), clip.get('arch_file'),
                                  precision=self.precision, quick_gelu=clip.get('quick_gelu'),
                                  cache_dir=clip.get('cache_dir'))
        self.arch = arch
        self.pretrained = clip.get('pretrained')
        self.tokenizer_path = clip.get('tokenizer')
        self.scorer = Scorer(scoring, 'model' if logit_scale == 'model' else self.logit_scale, logit_bias, model)
        self.logit_scale = self.scorer.logit_scale
        # the encoder class follows the tower (open_clip ViT, timm ViT/Eva trunk: models/towers.py);
        # it holds no last-block switches: the method passes its own on each call
        self.encoder = wrap_visual(model.visual, fused_attn=check_bool(fused_attn, 'model.fused_attn'),
                                   map_head=clip.get('map_head', 'full'))
        self.method.bind(self.encoder)
        self.method.bind_vocabulary(self.vocabulary.query_to_class)
        # kept in a list: a compiled function must not enter the module tree / state_dict
        self._compiled = [torch.compile(partial(self.method.patch_logits, self.encoder))] if check_bool(compile, 'model.compile') else [None]
        # The text tower is needed once, to build the classifier; it is kept out of
        # the module tree (no device moves, no state_dict entries) and dropped after.
        self._text_model = [model]
        # loaded now: a hub tokenizer that is missing offline fails at build time, in one line
        self._tokenizer = load_tokenizer(self.arch, self.tokenizer_path)
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
        return text_model_identity(self._text_model[0], self.arch, self.pretrained, self.precision,
                                   self._tokenizer)

    def text_embedder(self):
        """``embed(queries, templates)`` -> (len(queries), dim) normalised template averages (cached on disk)."""
        device = self.query_to_class.device
        clip_model = self._text_model[0]
        clip_model.to(device)
        cache_dir = self.text_cache if isinstance(self.text_cache, str) else None
        return partial(build_text_classifier, clip_model, self._tokenizer, device=device,
                       key_parts=self.text_cache_key(), cache_dir=cache_dir)

    @torch.no_grad()
    def build_text_classifier(self) -> torch.Tensor:
        """Build (or load from cache) the query embeddings on the model's device."""
        if self.query_embeddings.numel():
            return self.query_embeddings
        device = self.query_to_class.device
        embed = self.text_embedder()
        if self.text_head is None:
            emb = embed(self.vocabulary.queries, self.templates)
        else:
            emb = self.text_head.classifier(embed, self.vocabulary, self.templates)
        self.query_embeddings = emb.to(device=device, dtype=torch.float32)
        return self.query_embeddings

    # -- dense scoring ----------------------------------------------------------
    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised patch features (B, gh, gw, dim) of the method."""
        return F.normalize(self.method.features(self.encoder, inputs).float(), dim=-1)

    def _patch_logits(self, crops: torch.Tensor) -> torch.Tensor:
        """Per-patch query logits (N, Q, gh, gw) of same-sized windows, from the method."""
        text = self.build_text_classifier()
        if self._compiled[0] is not None:
            logits = self._compiled[0](crops, text)
        else:
            logits = self.method.patch_logits(self.encoder, crops, text)
        return logits if self.text_head is None else self.text_head.fuse_window(logits, tuple(crops.shape[-2:]))

    def query_logits(self, images: Union[torch.Tensor, List[torch.Tensor]]) -> List[torch.Tensor]:
        """Cosine-similarity logits per query, (Q, H, W) at each input's size."""
        self.build_text_classifier()
        images = list(images)
        if self.method.image_level:   # the method scores whole images (Trident, LPOSS)
            return [self._image_logits(image, None) for image in images]
        # windows are padded to the patch size, or to a method's own multiple (ProxyCLIP: 56)
        patch = self.method.window_multiple or self.encoder.patch_size
        fit = self.test_cfg['patch_fit']
        if self.test_cfg['mode'] == 'whole':
            return whole_inference(images, self._patch_logits, patch, fit=fit)
        return slide_inference(images, self._patch_logits, len(self.vocabulary.queries),
                               self.test_cfg['crop_size'], self.test_cfg['stride'], patch,
                               max_windows=self.max_windows(images[0].device), fit=fit)

    def _image_logits(self, image: torch.Tensor, meta: Optional[dict]) -> torch.Tensor:
        """An image-level method's query logits of one image: on its own grid when ``meta`` has
        ``ori_shape`` (``postprocess_result`` resizes them to it), else resized to the input size."""
        test_cfg = dict(self.test_cfg, max_windows=self.max_windows(image.device),
                        window_multiple=self.method.window_multiple or self.encoder.patch_size)
        logits = self.method.image_logits(self.encoder, image, self.build_text_classifier(), meta, test_cfg,
                                          self.query_to_class)
        if meta is None or 'ori_shape' not in meta:
            logits = F.interpolate(logits[None], size=tuple(image.shape[-2:]), mode='bilinear',
                                   align_corners=self.align_corners)[0]
        return logits

    def _predict_image_level(self, inputs, data_samples, keep_probs: Optional[bool]) -> List[SegDataSample]:
        """``predict`` for an image-level method: one image at a time, then its ``refine_labels`` if it has one."""
        samples = data_samples if data_samples is not None else [SegDataSample() for _ in inputs]
        keep = self.test_cfg['keep_probs'] if keep_probs is None else keep_probs
        refine = self.method.refines_labels
        for i, sample in enumerate(samples):
            logits = self._image_logits(inputs[i], sample.metainfo if 'ori_shape' in sample.metainfo else None)
            self.postprocess_result([logits], [sample], inputs=[inputs[i]], keep_probs=keep or refine)
            if refine:
                labels = self.method.refine_labels(sample.pred_sem_seg.data, sample.seg_logits.data, sample.metainfo)
                sample.set_data({'pred_sem_seg': PixelData(data=labels)})
                if not keep:
                    del sample.seg_logits
        return samples

    def max_windows(self, device) -> int:
        """Windows per encoder batch: ``test_cfg.max_windows``, resolving ``'auto'`` (by device and precision)."""
        return resolve_max_windows(self.test_cfg.get('max_windows', 'auto'), device, self.encoder.dtype)

    def encode_decode(self, inputs, batch_img_metas=None) -> torch.Tensor:
        """Query logits at input size, stacked (inputs must share a size)."""
        return torch.stack(self.query_logits(inputs))

    def classify(self, logits: torch.Tensor):
        """Query logits (Q, H, W) -> class probabilities (C, H, W) and labels (1, H, W).

        Softmax of ``logit_scale * logits`` over queries, max over synonyms,
        ``area_thd`` (if set), argmax, ``prob_thd`` (``classify.classify``).
        """
        if self.scorer.scoring != 'softmax':  # model.scoring: e.g. SigLIP's sigmoid
            return classify_scored(logits, self.scorer, self.query_to_class, self.num_classes, self.prob_thd,
                                   self.area_thd)
        return classify(logits, self.logit_scale, self.query_to_class, self.num_classes, self.prob_thd,
                        self.area_thd)

    def needs_full_map(self, keep_probs: Optional[bool] = None) -> bool:
        """Whether the (Q, H, W) map at the original size must exist (else: labels in bands)."""
        keep = self.test_cfg['keep_probs'] if keep_probs is None else keep_probs
        return bool(keep or self.postprocess is not None or self.area_thd is not None
                    or self.scorer.scoring != 'softmax')

    def postprocess_result(self, seg_logits: List[torch.Tensor],
                           data_samples: Optional[List[SegDataSample]] = None,
                           inputs=None, keep_probs: Optional[bool] = None) -> List[SegDataSample]:
        """Resize each image's query logits to its original size, then classify.

        Keeps MMSeg's contract: ``pred_sem_seg`` (1, H, W) and, when
        ``test_cfg.keep_probs`` (or ``keep_probs``) is True, ``seg_logits``:
        the class probabilities (C, H, W) the labels come from (softmax over
        queries, max over synonyms, after ``area_thd``; not renormalised), at
        the original size. With ``keep_probs=False`` only the labels are made;
        a large image is processed in bands of rows (same labels, bounded memory).

        Args:
            seg_logits: per image, query logits (Q, h, w) at the network-input size.
            data_samples: per image, ``ori_shape`` (and any padding/flip) in ``metainfo``.
            inputs: the normalised network inputs; needed by ``postprocess`` (guidance).
            keep_probs: overrides ``test_cfg.keep_probs``.
        """
        if data_samples is None:
            data_samples = [SegDataSample() for _ in seg_logits]
        full = self.needs_full_map(keep_probs)
        for i, (logits, sample) in enumerate(zip(seg_logits, data_samples)):
            meta = sample.metainfo
            check_finite_logits(logits, meta, self)  # NaN/inf stop the run, naming image and method
            guide = None if inputs is None else inputs[i]
            size = tuple(logits.shape[-2:])
            if 'ori_shape' in meta:
                logits, guide = self._undo_padding_and_flip(meta, logits, guide)
                size = tuple(meta['ori_shape'][:2])
            if not full:
                labels = classify_tiled(logits, size, self.logit_scale, self.query_to_class, self.num_classes,
                                        self.prob_thd)
                if self.label_postprocess is not None:
                    labels = self.label_postprocess(labels)
                sample.set_data({'pred_sem_seg': PixelData(data=labels)})
                continue
            # resize, post-processor, rule: whole, or in bands of rows on a large image (classify_at_size)
            keep = self.test_cfg['keep_probs'] if keep_probs is None else keep_probs
            probs, labels = classify_at_size(
                logits, size, self._class_probabilities, self.num_classes, self.prob_thd, self.area_thd,
                keep_probs=keep, post=self.postprocess,
                guide=None if self.postprocess is None else self._guidance(guide, size))
            if self.label_postprocess is not None:
                labels = self.label_postprocess(labels)
            sample.set_data({'pred_sem_seg': PixelData(data=labels)})
            if probs is not None:
                sample.set_data({'seg_logits': PixelData(data=probs)})
        return data_samples

    def _class_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Query logits (Q, ...) -> class probabilities (C, ...) under ``model.scoring``."""
        scores = None if self.scorer.scoring == 'softmax' else self.scorer
        return class_probabilities(logits, self.logit_scale, self.query_to_class, self.num_classes, scores)

    @staticmethod
    def _undo_padding_and_flip(meta: dict, logits: torch.Tensor, guide: Optional[torch.Tensor]):
        pad = meta.get('img_padding_size', meta.get('padding_size', [0, 0, 0, 0]))
        left, right, top, bottom = pad
        out = []
        for t in (logits, guide):
            if t is not None:
                H, W = t.shape[-2:]
                t = t[:, top:H - bottom, left:W - right]
                if meta.get('flip', False):
                    t = t.flip(dims=(2,) if meta.get('flip_direction') == 'horizontal' else (1,))
            out.append(t)
        return out

    def _guidance(self, guide: Optional[torch.Tensor], size) -> ResizedGuide:
        """The post-processor's guidance: the normalised network input, bilinearly resized to ``size``.

        Made on demand (``ResizedGuide``): whole for a map refined whole, a band's
        rows at a time for one refined in bands.
        """
        if guide is None:
            raise ValueError(f'model.postprocess={self.postprocess.describe()!r} needs the input images: '
                             'call predict(inputs, data_samples) or postprocess_result(..., inputs=inputs)')
        return ResizedGuide(guide, size)

    @torch.no_grad()
    def predict(self, inputs, data_samples=None, keep_probs: Optional[bool] = None) -> List[SegDataSample]:
        """Labels (and, with ``keep_probs``, class probabilities) at each image's original size."""
        if self.method.image_level:
            return self._predict_image_level(inputs, data_samples, keep_probs)
        return self.postprocess_result(self.query_logits(inputs), data_samples, inputs=inputs,
                                       keep_probs=keep_probs)

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs)

    def loss(self, inputs, data_samples):
        raise NotImplementedError('ClearCLIPSegmentor is training-free: it has no loss')
