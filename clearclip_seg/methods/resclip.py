"""ResCLIP (Yang et al., CVPR 2025): RCS and SFR on top of a training-free last block.

As the authors' evaluation runs it (method card ``sclip_naclip_resclip_pamr.md``,
section 3; official repository yvhangyang/ResCLIP at 0e085f7), per window:

* **RCS** (residual cross-correlation self-attention). Blocks 1..L-1 run
  unchanged; the post-softmax attention maps of blocks ``rcs_layers``
  (0-based 5..8, i.e. blocks 6-9) are averaged per head, CLS row and column
  included, into A_rcs. The last block's attention becomes, *after* its
  softmax, ``tau_r * ((1 - lambda_r) * A + lambda_r * A_rcs)``; rows then sum
  to tau_r = 2 (not 1), and since out_proj's bias and ln_post follow, tau_r is
  not a pure scale.
* **SFR** (semantic feedback refinement). Pass 1 = the last block with RCS and
  without SFR; its logits are stretched bilinearly to the window, refined by
  an internal PAMR (10 iterations, dilations (8, 16)) guided by the normalised
  window, and softmaxed over queries with ``logit_scale`` 40. Patch labels,
  the path check, the decay and the raster-order blur are in
  ``resclip_sfr.py``. Pass 2 replaces each pre-softmax logit Z of the last
  block by ``tau_s * ((1 - lambda_s) * Z + lambda_s * Ŝ)``; NACLIP's Gaussian
  Ω is added afterwards, so tau_s scales Z and Ŝ but not Ω.

``attn_strategy`` picks Z: ``resclip``/``naclip`` (code-identical: s*KK^T plus
Ω), ``sclip`` (softmax(QQ^T) + softmax(KK^T), each mixed with Ŝ, no Ω; needs
``arch='w_resi'``), ``clearclip`` (s*QQ^T) and ``vanilla`` (s*QK^T). ``arch``
``wo_resi`` drops the last block's residual and FFN (NACLIP's 'reduced'),
``w_resi`` keeps them.

Choices, each following the official code unless said otherwise:

* Published behaviour is the default. The authors store ``use_rcs``/``use_sfr``
  as 1-tuples (``(True,)``, always truthy), so RCS and SFR can never be switched off there;
  every published number has both on. Our ``use_rcs``/``use_sfr`` switches do
  work (False gives the plain last block of that strategy), but no published
  number exists for them.
* ``temp_thd``, ``attn_rcs_weights`` and ``attn_sfr_weights`` have no default:
  the official code refuses to run without them (it raises a TypeError),
  and their values are per benchmark (``protocol/methods.py``, the ResCLIP card).
  ``delete_same_entity`` defaults to True: the class default is False, but
  every shipped config sets True.
* The RCS layers are 0-based 5..8 for every backbone, ViT-L/14 included, as
  hard-coded; ``rcs_layers`` makes them an option.
* SFR labels are *query* indices (synonyms differ) and low-confidence pixels
  become query 0; ties of the patch mode go to the smallest label
  (``torch.mode`` on the CPU; unverified on CUDA).
* The path check's partial coverage, the 1-D blur along raster order and the
  global-max scaling of Ŝ are reproduced (``resclip_sfr.py``); Ŝ is rounded to
  fp16 as hard-coded (``sfr_fp16``), also on the CPU.
* The internal PAMR runs in float32, its output is cast to the activations'
  dtype before the softmax (as the official ``.to(dtype)`` does with fp16).
  The official code skips it silently on a RuntimeError; we let
  errors through, as results must not depend on free memory (no shipped
  benchmark window comes near a limit).
* It runs on any device: the official ``.cuda()`` calls are the
  caller's device here.
* A window whose size is not a patch multiple is truncated as conv1 does
  (remainder rows/columns dropped) while the first-pass logits are stretched
  over, and PAMR guided by, the *whole* window, as in the official
  whole-image VOC runs. The segmentor stretches the
  returned grid the same way (``test_cfg.patch_fit='truncate'``).
* Nothing is computed twice: the frozen blocks and the last block's q/k/v
  and attention logits are shared by the two passes.
* Windows of a batch are independent (the official code is batch 1): A_rcs,
  labels and Ŝ's global max are per window.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..models.pamr import check_dilations, pamr
from ..options import check_bool, check_number
from ..protocol import constants
from .naclip import cached_neighbourhood_bias
from .registry import DenseMethod, register_method, truncate_to_patches
from .resclip_sfr import patch_labels, sfr_attention

ARCHS = ('wo_resi', 'w_resi')


def _kk(t: Dict[str, torch.Tensor], scale: float):
    return ((t['k'] @ t['k'].transpose(-2, -1)) * scale,)


def _qq(t: Dict[str, torch.Tensor], scale: float):
    return ((t['q'] @ t['q'].transpose(-2, -1)) * scale,)


def _qk(t: Dict[str, torch.Tensor], scale: float):
    return ((t['q'] * scale) @ t['k'].transpose(-2, -1),)


def _sclip(t: Dict[str, torch.Tensor], scale: float):
    return _qq(t, scale) + _kk(t, scale)


# attn_strategy -> (projections read, pre-softmax logits (one per summed softmax), adds Ω)
STRATEGIES: Dict[str, Tuple[Tuple[str, ...], Callable, bool]] = {
    'resclip': (('k', 'v'), _kk, True),
    'naclip': (('k', 'v'), _kk, True),
    'sclip': (('q', 'k', 'v'), _sclip, False),
    'clearclip': (('q', 'v'), _qq, False),
    'vanilla': (('q', 'k', 'v'), _qk, False),
}


def check_weights(value, key: str) -> Tuple[float, float]:
    """A [tau, lambda] pair: tau > 0, lambda in [0, 1]."""
    if value is None:
        raise ValueError(f'{key} is required: a [tau, lambda] pair, per benchmark '
                         '(protocol/methods.py, e.g. [2.0, 0.6] for VOC20 RCS)')
    try:
        tau, lam = value
    except (TypeError, ValueError):
        raise ValueError(f'{key}={value!r}: expected a [tau, lambda] pair of numbers') from None
    return (check_number(tau, f'{key}[0]', low=0, low_open=True), check_number(lam, f'{key}[1]', low=0, high=1))


@register_method('ResCLIP')
class ResCLIP(DenseMethod):
    """ResCLIP: RCS and SFR on a NACLIP-style (default) last block.

    Args:
        temp_thd: SFR confidence threshold (required; per benchmark, e.g. 0.1 for VOC20).
        attn_rcs_weights: RCS ``[tau_r, lambda_r]`` (required; e.g. [2.0, 0.6]).
        attn_sfr_weights: SFR ``[tau_s, lambda_s]`` (required; e.g. [2.1, 0.6]).
        delete_same_entity: decay same-label pairs without a valid path (True in every config).
        gaussian_std: σ in patches of Ω and of the SFR blur (5.0).
        arch: ``wo_resi`` (no residual/FFN in the last block) or ``w_resi``.
        attn_strategy: ``resclip`` (= ``naclip``), ``sclip``, ``clearclip`` or ``vanilla``.
        rcs_layers: 0-based blocks whose attention RCS averages ((5, 6, 7, 8)).
        use_rcs, use_sfr: the two components (always on in the official code).
        logit_scale: SFR first-pass softmax scale (40, the segmentor's in every config).
        pamr_iter, pamr_dilations: the internal PAMR of SFR; None: the SCLIP family's
            (``protocol.constants.PAMR_NUM_ITER`` / ``PAMR_DILATIONS``: 10, (8, 16)).
        sfr_fp16: round Ŝ to fp16, as the official code hard-codes (True).
        key: config key named in errors.
    """

    needs_class_token = True

    def __init__(self, temp_thd: Optional[float] = None, attn_rcs_weights: Optional[Sequence[float]] = None,
                 attn_sfr_weights: Optional[Sequence[float]] = None, delete_same_entity: bool = True,
                 gaussian_std: float = 5.0, arch: str = 'wo_resi', attn_strategy: str = 'resclip',
                 rcs_layers: Sequence[int] = (5, 6, 7, 8), use_rcs: bool = True, use_sfr: bool = True,
                 logit_scale: float = 40.0, pamr_iter: Optional[int] = None,
                 pamr_dilations: Optional[Sequence[int]] = None,
                 sfr_fp16: bool = True, key: str = 'model.method'):
        self.use_rcs = check_bool(use_rcs, f'{key}.use_rcs')
        self.use_sfr = check_bool(use_sfr, f'{key}.use_sfr')
        if temp_thd is None and self.use_sfr:
            raise ValueError(f'{key}.temp_thd is required: a number in [0, 1], per benchmark '
                             '(protocol/methods.py, e.g. 0.1 for VOC20)')
        self.temp_thd = None if temp_thd is None else check_number(temp_thd, f'{key}.temp_thd', low=0, high=1)
        self.attn_rcs_weights = (check_weights(attn_rcs_weights, f'{key}.attn_rcs_weights')
                                 if self.use_rcs or attn_rcs_weights is not None else None)
        self.attn_sfr_weights = (check_weights(attn_sfr_weights, f'{key}.attn_sfr_weights')
                                 if self.use_sfr or attn_sfr_weights is not None else None)
        self.delete_same_entity = check_bool(delete_same_entity, f'{key}.delete_same_entity')
        self.gaussian_std = check_number(gaussian_std, f'{key}.gaussian_std', low=0, low_open=True)
        if arch not in ARCHS:
            raise ValueError(f"{key}.arch={arch!r}: expected one of {list(ARCHS)}")
        if attn_strategy not in STRATEGIES:
            raise ValueError(f"{key}.attn_strategy={attn_strategy!r}: expected one of {list(STRATEGIES)}")
        if attn_strategy == 'sclip' and arch != 'w_resi':
            raise ValueError(f"{key}.attn_strategy='sclip' needs {key}.arch='w_resi' (SCLIP keeps "
                             f'the residual and FFN), got {arch!r}')
        self.arch, self.attn_strategy = arch, attn_strategy
        if isinstance(rcs_layers, int) or not rcs_layers:
            raise ValueError(f'{key}.rcs_layers={rcs_layers!r}: expected a non-empty list of block indices')
        self.rcs_layers = tuple(check_number(i, f'{key}.rcs_layers', low=0, integer=True) for i in rcs_layers)
        self.logit_scale = check_number(logit_scale, f'{key}.logit_scale', low=0, low_open=True)
        pamr_iter = constants.PAMR_NUM_ITER if pamr_iter is None else pamr_iter
        pamr_dilations = constants.PAMR_DILATIONS if pamr_dilations is None else pamr_dilations
        self.pamr_iter = check_number(pamr_iter, f'{key}.pamr_iter', low=0, integer=True)
        self.pamr_dilations = check_dilations(pamr_dilations, f'{key}.pamr_dilations')
        self.sfr_fp16 = check_bool(sfr_fp16, f'{key}.sfr_fp16')
        self._key = key
        self._omega: Dict[tuple, torch.Tensor] = {}

    def bind(self, encoder) -> None:
        self.check_tower(encoder)  # one class token (needs_class_token): Ω and Ŝ have a zero class row/column
        last_frozen = encoder.num_blocks - 2
        if self.use_rcs and max(self.rcs_layers) > last_frozen:
            raise ValueError(f'{self._key}.rcs_layers={list(self.rcs_layers)}: the tower has '
                             f'{encoder.num_blocks} blocks, so RCS can read blocks 0..{last_frozen}')

    # -- stages -------------------------------------------------------------------------
    def frozen_blocks(self, encoder, tokens: torch.Tensor):
        """Blocks 0..L-2 once each; returns their output and the per-head mean of the
        ``rcs_layers`` attention maps (B, heads, N, N), or None without RCS."""
        layers = sorted(set(self.rcs_layers)) if self.use_rcs else []
        self.bind(encoder)
        x, total, start = tokens, None, 0
        for i in layers:
            x = encoder.run_blocks(x, start, i)
            t = encoder.qkv(x, ('q', 'k', 'v'), block=i)
            scale = t['q'].shape[-1] ** -0.5
            attn = torch.softmax((t['q'] * scale) @ t['k'].transpose(-2, -1), dim=-1)
            x = x + encoder.project_heads(attn @ t['v'], block=i)
            x = x + encoder.ffn_branch(x, block=i)
            total = attn if total is None else total + attn
            start = i + 1
        x = encoder.run_blocks(x, start, encoder.num_blocks - 1)
        return x, (None if total is None else total / len(layers))

    def omega(self, grid: Tuple[int, int], dtype, device) -> torch.Tensor:
        """NACLIP's Ω for a grid, cached as NACLIP caches it."""
        return cached_neighbourhood_bias(self._omega, grid, self.gaussian_std, dtype, device)

    def attention(self, logits: Sequence[torch.Tensor], omega: Optional[torch.Tensor],
                  rcs: Optional[torch.Tensor], sfr: Optional[torch.Tensor]) -> torch.Tensor:
        """The last block's attention from its pre-softmax logits (B, heads, N, N).

        ``sfr`` (B, 1, N, N) is Ŝ (pass 2) or None (pass 1); ``rcs`` is A_rcs or None.
        """
        attn = None
        for z in logits:
            if sfr is not None:
                tau, lam = self.attn_sfr_weights
                z = tau * ((1 - lam) * z + lam * sfr)
            if omega is not None:
                z = z + omega
            a = torch.softmax(z, dim=-1)
            attn = a if attn is None else attn + a
        if rcs is not None:
            tau, lam = self.attn_rcs_weights
            attn = tau * ((1 - lam) * attn + lam * rcs)
        return attn.to(logits[0].dtype)

    def query_logits(self, encoder, x: torch.Tensor, attn: torch.Tensor, v: torch.Tensor,
                     text: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """The last block's output from its attention -> cosine logits (B, Q, gh, gw)."""
        y = encoder.project_heads(attn @ v)
        if self.arch == 'w_resi':
            y = x + y
            y = y + encoder.ffn_branch(y)
        feats = F.normalize(encoder.head(y)[:, 1:].float(), dim=-1)
        logits = feats @ text.to(feats.dtype).t()
        return logits.transpose(1, 2).reshape(x.shape[0], -1, *grid)

    def feedback(self, encoder, image: torch.Tensor, logits: torch.Tensor, dtype) -> torch.Tensor:
        """SFR's Ŝ (B, 1, N, N) from the first pass's patch logits and the window ``image``."""
        logits = F.interpolate(logits, size=image.shape[-2:], mode='bilinear', align_corners=False)
        if self.pamr_iter:
            logits = pamr(image.float(), logits.float(), self.pamr_iter, self.pamr_dilations)
        probs = torch.softmax(logits.to(dtype) * self.logit_scale, dim=1)
        labels = patch_labels(probs, encoder.patch_size, self.temp_thd)
        s_hat = [sfr_attention(lab, self.gaussian_std, self.delete_same_entity, self.sfr_fp16)
                 for lab in labels]
        return torch.stack(s_hat)[:, None].to(dtype)

    # -- DenseMethod ---------------------------------------------------------------------
    def patch_logits(self, encoder, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        # the remainder rows/columns are dropped for the tower (as conv1 does), but the
        # whole window guides SFR's first pass
        tokens, grid = encoder.embed(truncate_to_patches(x, encoder.patch_size))
        tokens, rcs = self.frozen_blocks(encoder, tokens)
        names, pre_softmax, uses_omega = STRATEGIES[self.attn_strategy]
        t = encoder.qkv(tokens, names)
        z = pre_softmax(t, t['v'].shape[-1] ** -0.5)
        omega = self.omega(grid, tokens.dtype, tokens.device) if uses_omega else None
        attn = self.attention(z, omega, rcs, None)
        logits = self.query_logits(encoder, tokens, attn, t['v'], text, grid)
        if not self.use_sfr:
            return logits
        s_hat = self.feedback(encoder, x, logits, tokens.dtype)
        attn = self.attention(z, omega, rcs, s_hat)
        return self.query_logits(encoder, tokens, attn, t['v'], text, grid)

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError('ResCLIP needs the text classifier inside the forward pass: '
                                  'use patch_logits(encoder, x, text)')

    def options(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
                if not k.startswith('_')}
