"""FLOSS (Benigmim et al., ICCV 2025): per-class expert templates fused per window, over any method.

A text head (``model.text_head=dict(type='FLOSS', ...)``, ``models/text_heads.py``):

* **Experts.** Each query c has an expert classifier over *all* queries: row k
  is the mean, over c's ``top_k`` templates, of the L2-normalised embeddings
  of ``template(name_k)`` (renormalised or not: ``renormalize``). The
  templates are c's ``top_k`` entries of the authors' entropy ranking
  (``vocabularies/floss/rankings.json``, or a file written by
  ``tools/floss_rankings.py``). A default classifier uses every template.
  The rows are stacked expert-major, the default last: ((Q + 1) * Q, dim).
* **Fusion, per window.** Each classifier's patch logits become probabilities
  ``softmax(logit_scale * cos)`` over the queries, upsampled bilinearly to the
  window. Per pixel, expert c *claims* when its argmax is query c; the pixel
  takes the whole probability vector of the claiming expert most confident in
  its own query (``P_c[c]``; lowest c on ties), or the default's where none
  claims. The window maps (probabilities, not logits) are then averaged by the
  segmentor's sliding window; its final softmax is monotone, so the labels are
  the argmax of the averaged fused probabilities, as in the authors' code.

A query finds its ranking through its class: the first of the class's queries
whose name matches a ranking key (spaces and case ignored, plus the authors'
VOC renames ``ship`` -> ``boat`` and ``table`` -> ``diningtable``, used only for
a class none of whose names is a key) gives the templates of every query of
that class (the authors' fix for NACLIP's VOC20 synonyms does the same).

This module is plain torch (no MMSeg).
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..protocol.benchmarks import BENCHMARKS
from .text_heads import TextHead, register_text_head

FLOSS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'vocabularies', 'floss')
SHIPPED_RANKINGS = os.path.join(FLOSS_DIR, 'rankings.json')
RANKINGS_FORMAT = 'floss-rankings/1'
# the authors' NACLIP VOC20 fix renames these ranking keys to the SCLIP family's names (ba2ee15)
ALIASES = {'ship': 'boat', 'table': 'diningtable'}
# The fused maps are made a few classifiers at a time so that memory stays near this many bytes
# (the authors' stack of all (Q + 1) x Q maps at 448 x 448 is 12 GB for COCO-Stuff).
FUSE_CHUNK_BYTES = 64 * 2 ** 20
HALF_MODES = ('none', 'window', 'maps')


def ranking_key(name: str) -> str:
    """A class name as ranking keys are compared: no spaces, lower case (NACLIP's keys drop spaces)."""
    return ''.join(name.split()).lower()


def benchmark_of_vocabulary(name: str) -> Optional[str]:
    """The benchmark whose own or family vocabulary is ``name`` (None if none is)."""
    for key, b in BENCHMARKS.items():
        if name == b.vocabulary or name in b.method_vocabularies.values():
            return key
    return None


def load_rankings(rankings: str = 'naclip', backbone: str = 'vit-b16', benchmark: str = 'voc20',
                  path: Optional[str] = None, key: str = 'model.text_head', with_keep: bool = False):
    """Ranked template ids per ranking class key, for one (rankings, backbone, benchmark).

    The ids are those with pixels (``pixel_percentage > 0``), best first, cut at the
    file's ``keep`` (with ``with_keep``: returned as ``(ids, keep)``, keep None = uncut).

    Args:
        rankings: the ranking set, i.e. the base model the entropy was computed with
            (``naclip``, ``maskclip``, ``clipdinoiser`` ship).
        backbone: backbone slug the rankings were computed with (``vit-b16``...).
        benchmark: benchmark key (``voc20``, ``context59``...).
        path: a rankings JSON (``tools/floss_rankings.py``); None = the shipped file.

    Raises:
        ValueError: one line naming the file and the missing entry.
    """
    path = SHIPPED_RANKINGS if path is None else path
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f'{key}.file={path!r}: cannot read a FLOSS rankings JSON ({e})') from None
    if not isinstance(data, dict) or data.get('format') != RANKINGS_FORMAT:
        raise ValueError(f"{key}.file={path!r}: not a FLOSS rankings file (expected format '{RANKINGS_FORMAT}')")
    sets = data.get('rankings', {})
    if rankings not in sets:
        raise ValueError(f'{key}.rankings={rankings!r}: not in {path} (it has {sorted(sets)})')
    if backbone not in sets[rankings]:
        raise ValueError(f'{key}.backbone={backbone!r}: no {rankings} rankings for this backbone in {path} '
                         f'(it has {sorted(sets[rankings])}); compute them with tools/floss_rankings.py')
    by_bench = sets[rankings][backbone]
    if benchmark not in by_bench:
        raise ValueError(f'{key}.benchmark={benchmark!r}: no {rankings}/{backbone} rankings for it in {path} '
                         f'(it has {sorted(by_bench)}); compute them with tools/floss_rankings.py')
    ranked = {k: list(v) for k, v in by_bench[benchmark]['classes'].items()}
    return (ranked, data.get('keep')) if with_keep else ranked


def query_templates(vocabulary, ranked: Dict[str, List[int]], top_k: int, what: str,
                    key: str = 'model.text_head', keep: Optional[int] = None,
                    empty: str = 'error') -> List[Optional[List[int]]]:
    """The ``top_k`` template ids of every query of ``vocabulary`` (through its class, see the module doc).

    As the authors' loaders: a class with fewer ranked templates takes those it has;
    one with none raises (``empty='error'``, NACLIP base) or uses every template
    (``empty='all'``, None here; MaskCLIP / CLIP-DINOiser bases). ``keep``: the
    file's cut; a ``top_k`` above it is an error (the file cannot tell).
    """
    by_key = {ranking_key(k): ids for k, ids in ranked.items()}
    per_class, missing = {}, []
    pairs = list(zip(vocabulary.queries, vocabulary.query_to_class))
    # the class's own names first; the renames only where none of them is a ranking key
    for rename in (False, True):
        for q, c in pairs:
            k = ranking_key(q)
            k = ALIASES.get(k, k) if rename else k
            if c not in per_class and k in by_key:
                per_class[c] = by_key[k]
    for c, name in enumerate(vocabulary.classes):
        if c not in per_class:
            missing.append(name)
    if missing:
        raise ValueError(f"{key}: {len(missing)} class(es) of vocabulary '{vocabulary.name}' have no "
                         f'{what} ranking: {missing[:5]}{" ..." if len(missing) > 5 else ""}')
    if keep is not None and top_k > keep:
        raise ValueError(f'{key}.top_k={top_k}: the {what} rankings keep {keep} templates per class; '
                         'compute full rankings with tools/floss_rankings.py')
    none = [vocabulary.classes[c] for c, ids in per_class.items() if not ids]
    if none and empty == 'error':
        raise ValueError(f"{key}: the {what} rankings have no template that predicted any pixel for {none[:5]} "
                         "(empty='all' uses every template for them, as the authors' MaskCLIP base does)")
    return [list(per_class[c][:top_k]) if per_class[c] else None for c in vocabulary.query_to_class]


def expert_classifiers(units: torch.Tensor, experts: Sequence[Sequence[int]], renormalize: bool) -> torch.Tensor:
    """Expert and default classifiers from per-template unit embeddings.

    Args:
        units: (T, Q, dim), ``units[t, k]`` the normalised embedding of template t with query k.
        experts: per query c, the template ids of its expert (None: every template).
        renormalize: L2-normalise each averaged row (NACLIP base) or keep its norm
            (MaskCLIP / CLIP-DINOiser bases).

    Returns:
        (Q + 1, Q, dim): expert c's classifier at index c, the all-template default last.
    """
    rows = [units.mean(dim=0) if ids is None else units[list(ids)].mean(dim=0) for ids in experts]
    rows.append(units.mean(dim=0))
    out = torch.stack(rows)
    return F.normalize(out, dim=-1) if renormalize else out


def fuse_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """FLOSS's per-pixel fusion of (B, K + 1, Q, H, W) probability maps (K = Q experts, the default last).

    The plain reference of ``FLOSS.fuse_window`` (which streams over the experts).
    """
    experts, default = probs[:, :-1], probs[:, -1]
    k = experts.shape[1]
    idx = torch.arange(k, device=probs.device).view(1, k, 1, 1)
    claims = experts.argmax(dim=2) == idx                                   # (B, K, H, W)
    own = experts.gather(2, idx.expand(experts.shape[0], k, *experts.shape[-2:]).unsqueeze(2)).squeeze(2)
    own = torch.where(claims, own, torch.full_like(own, -1.0))
    best = own.argmax(dim=1)                                               # first maximum: lowest expert
    chosen = experts.gather(1, best[:, None, None].expand(-1, 1, experts.shape[2], -1, -1)).squeeze(1)
    return torch.where(claims.any(dim=1, keepdim=True), chosen, default)


@register_text_head('FLOSS')
class FLOSS(TextHead):
    """FLOSS's text side: per-query expert classifiers from entropy-ranked templates, fused per window.

    Args:
        rankings: the ranking set (the base model the entropy was measured with):
            ``naclip`` (OpenAI ViT-B/16), ``maskclip`` or ``clipdinoiser`` (OpenCLIP ViT-B/16
            laion2b), as shipped.
        backbone: the backbone slug of the rankings (``vit-b16`` for ``naclip``,
            ``openclip-vit-b16`` for the other two).
        benchmark: the benchmark whose rankings are read; None = the benchmark whose
            vocabulary the segmentor uses. The authors run the driving sets with
            the Cityscapes rankings.
        file: a rankings JSON written by ``tools/floss_rankings.py``; None = the shipped one.
        top_k: templates per expert (the authors' 4).
        logit_scale: scale of the per-window softmax of every classifier (the authors' 100).
        renormalize: normalise the expert and default rows (NACLIP base: True;
            MaskCLIP / CLIP-DINOiser: False, their rows keep the norm of the mean).
        half: fp16 rounding the authors apply on COCO-Stuff and ADE20K: ``window``
            (each fused window map, NACLIP base), ``maps`` (every upsampled
            classifier map before the fusion, MaskCLIP / CLIP-DINOiser base), ``none``.
        empty: a class whose ranking has no template with pixels: ``error`` (NACLIP
            base) or ``all`` (its expert uses every template; MaskCLIP / CLIP-DINOiser).
    """
    head_name = 'FLOSS'

    def __init__(self, rankings: str = 'naclip', backbone: str = 'vit-b16', benchmark: Optional[str] = None,
                 file: Optional[str] = None, top_k: int = 4, logit_scale: float = 100.0, renormalize: bool = True,
                 half: str = 'none', empty: str = 'error', key: str = 'model.text_head'):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f'{key}.top_k={top_k!r}: expected a positive integer')
        if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) or logit_scale <= 0:
            raise ValueError(f'{key}.logit_scale={logit_scale!r}: expected a positive number')
        if not isinstance(renormalize, bool):
            raise ValueError(f'{key}.renormalize={renormalize!r}: expected True or False')
        if half not in HALF_MODES:
            raise ValueError(f'{key}.half={half!r}: expected one of {list(HALF_MODES)}')
        if empty not in ('error', 'all'):
            raise ValueError(f"{key}.empty={empty!r}: expected 'error' or 'all'")
        if benchmark is not None and benchmark not in BENCHMARKS:
            raise ValueError(f'{key}.benchmark={benchmark!r}: expected one of {list(BENCHMARKS)} (or None)')
        self.rankings, self.backbone, self.benchmark, self.file = rankings, backbone, benchmark, file
        self.top_k, self.logit_scale, self.renormalize, self.half = top_k, float(logit_scale), renormalize, half
        self.empty = empty
        self._key = key
        self._experts: Optional[List[List[int]]] = None

    def bind(self, vocabulary, templates) -> None:
        """Resolve every query's expert templates now (a missing ranking fails before weights load)."""
        bench = self.benchmark or benchmark_of_vocabulary(vocabulary.name)
        if bench is None:
            raise ValueError(f"{self._key}.benchmark: vocabulary '{vocabulary.name}' is no benchmark's; "
                             f'set the benchmark whose rankings to use (one of {list(BENCHMARKS)})')
        ranked, keep = load_rankings(self.rankings, self.backbone, bench, self.file, self._key, with_keep=True)
        self._experts = query_templates(vocabulary, ranked, self.top_k, f'{self.rankings}/{self.backbone}/{bench}',
                                        self._key, keep, self.empty)
        used = max((i for ids in self._experts if ids for i in ids), default=0)
        if used >= len(templates):
            raise ValueError(f'{self._key}: ranking template id {used} is past the {len(templates)} templates of '
                             "model.templates; FLOSS's ids index the 80 OpenAI ImageNet templates "
                             "(model.templates='openai_imagenet')")
        self._bench = bench

    def experts(self) -> List[Optional[List[int]]]:
        """Per query, the template ids of its expert (None: every template), after ``bind``."""
        if self._experts is None:
            raise RuntimeError('FLOSS.bind(vocabulary, templates) must run first')
        return self._experts

    def classifier(self, embed, vocabulary, templates) -> torch.Tensor:
        """((Q + 1) * Q, dim): expert c's rows at [c * Q, (c + 1) * Q), the default's last."""
        units = torch.stack([embed(vocabulary.queries, [t]) for t in templates]).float()   # (T, Q, dim)
        return expert_classifiers(units, self.experts(), self.renormalize).flatten(0, 1)

    def fuse(self, logits: torch.Tensor) -> torch.Tensor:
        """Fusion at the patch grid (the segmentor calls ``fuse_window`` with the window size)."""
        return self.fuse_window(logits, tuple(logits.shape[-2:]))

    def fuse_window(self, logits: torch.Tensor, size) -> torch.Tensor:
        """(B, (Q + 1) * Q, h, w) cosine logits -> fused probabilities (B, Q, H, W) at the window size.

        Streams over the classifiers (equal to ``fuse_probabilities`` on the whole stack).
        """
        b, r, h, w = logits.shape
        q = len(self.experts())
        if r != (q + 1) * q:
            raise ValueError(f'{self._key}: got {r} logit rows per patch, expected (Q + 1) * Q = {(q + 1) * q}')
        logits = logits.float().view(b, q + 1, q, h, w)
        H, W = size
        chunk = max(1, FUSE_CHUNK_BYTES // max(1, b * q * H * W * 4))
        best = logits.new_full((b, H, W), -1.0)
        out = logits.new_zeros((b, q, H, W))
        claimed = torch.zeros((b, H, W), dtype=torch.bool, device=logits.device)
        for s in range(0, q + 1, chunk):
            maps = self._maps(logits[:, s:s + chunk], size)                  # (b, n, q, H, W)
            for j in range(maps.shape[1]):
                c = s + j
                p = maps[:, j]
                if c == q:  # the default: where no expert claims
                    out = torch.where(claimed[:, None], out, p)
                    continue
                claims = p.argmax(dim=1) == c
                take = claims & (p[:, c] > best)
                best = torch.where(take, p[:, c], best)
                out = torch.where(take[:, None], p, out)
                claimed |= claims
        if self.half != 'none':
            out = out.half().float()
        return out

    def _maps(self, logits: torch.Tensor, size) -> torch.Tensor:
        """(b, n, q, h, w) logits -> per-classifier probabilities upsampled to ``size`` (b, n, q, H, W)."""
        b, n, q, h, w = logits.shape
        probs = torch.softmax(logits * self.logit_scale, dim=2).flatten(0, 1)
        if (h, w) != tuple(size):
            probs = F.interpolate(probs, size=tuple(size), mode='bilinear', align_corners=False)
        if self.half == 'maps':
            probs = probs.half().float()
        return probs.view(b, n, q, *probs.shape[-2:])

    def options(self) -> dict:
        return dict(rankings=self.rankings, backbone=self.backbone, benchmark=self.benchmark, file=self.file,
                    top_k=self.top_k, logit_scale=self.logit_scale, renormalize=self.renormalize, half=self.half,
                    empty=self.empty)
