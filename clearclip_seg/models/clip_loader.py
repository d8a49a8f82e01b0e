"""Build an open_clip model from a config: architecture, weights, precision.

``arch`` is any open_clip architecture name (``ViT-B-16``, ``ViT-L-14``,
``ViT-B-16-quickgelu``, ...) or one registered from a JSON file (``arch_file``,
through open_clip's own ``add_model_config``). ``pretrained`` is an open_clip
tag (downloaded through open_clip's cache when online) or a local checkpoint
file; ``None`` keeps random weights (tests, speed benchmarks).
"""
import hashlib
import logging
import os
from contextlib import contextmanager
from typing import Optional, Tuple

import torch

from ..options import check_bool
from .timm_trunks import prepare_arch_file  # a "timm_trunk" entry: tiny timm towers from a dict

logger = logging.getLogger(__name__)

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# The keys of ``model.clip`` (the segmentor reads these, and nothing else).
CLIP_KEYS = ('arch', 'pretrained', 'arch_file', 'precision', 'quick_gelu', 'cache_dir', 'map_head', 'tokenizer')


def resolve_precision(precision: str, device) -> str:
    """``'auto'`` is the paper's fp16 on a GPU and fp32 on a CPU."""
    if precision == 'auto':
        return 'fp16' if torch.device(device).type == 'cuda' else 'fp32'
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (model.clip.precision): "
                         f"expected one of {['auto', *PRECISIONS]}")
    return precision


def register_arch_file(path: str) -> str:
    """Register a JSON architecture with open_clip; returns its name (the file stem)."""
    import open_clip
    if not os.path.isfile(path):
        raise FileNotFoundError(f"architecture file '{path}' (model.clip.arch_file) not found: "
                                'expected an open_clip JSON config with embed_dim, vision_cfg, text_cfg')
    name = os.path.splitext(os.path.basename(path))[0]
    # always (re-)register: open_clip re-reads the file, so an edited file, or another file of the
    # same name, is what gets built (a name-only check kept the first content for the whole process)
    open_clip.add_model_config(prepare_arch_file(path))
    if name not in open_clip.list_models():
        raise ValueError(f"architecture file '{path}' was not accepted by open_clip: "
                         'expected keys embed_dim, vision_cfg and text_cfg')
    return name


# content digests of files, remembered by (path, size, mtime, inode, ctime): hashed once per file version
_FILE_DIGESTS: dict = {}


def file_digest(path: str) -> str:
    """SHA-256 of a file's content, computed once per (path, size, mtime, inode, ctime).

    Path, size and mtime alone are not an identity: a file swapped for another
    of the same size with its mtime restored would keep its cache entries.
    The content is; the stat fields only decide when to hash it again (any
    replacement by rename changes the inode, an in-place rewrite the ctime).
    """
    st = os.stat(path)
    stamp = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    if stamp not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 24), b''):
                h.update(block)
        _FILE_DIGESTS[stamp] = h.hexdigest()
    return _FILE_DIGESTS[stamp]


def weights_identity(arch: str, pretrained: Optional[str]) -> Optional[str]:
    """A string that changes whenever the weights do (for caches); None if random.

    A local checkpoint is identified by its content (``file_digest``), a tag by
    name (open_clip's downloads are checked against their published hashes).
    """
    if not pretrained:
        return None
    if os.path.isfile(pretrained):
        return f'sha256:{file_digest(pretrained)}'
    return f'tag:{arch}:{pretrained}'


def _check_pretrained(arch: str, pretrained: str) -> dict:
    import open_clip
    if os.path.isfile(pretrained):
        return {}
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        looks_like_path = os.sep in pretrained or pretrained.endswith(('.pt', '.pth', '.bin', '.safetensors'))
        if looks_like_path:
            raise FileNotFoundError(f"checkpoint file '{pretrained}' (model.clip.pretrained) not found")
        raise ValueError(f"unknown pretrained tag '{pretrained}' for '{arch}' (model.clip.pretrained): "
                         f'expected a local checkpoint file or one of {tags}')
    return open_clip.get_pretrained_cfg(arch, pretrained)


# Models created inside ``reuse_clip_models()``, by create_clip's arguments; None outside it.
_REUSED: Optional[dict] = None


@contextmanager
def reuse_clip_models():
    """Inside the block, ``create_clip`` returns the same model for the same arguments.

    A shared pass (``clearclip_seg.sweep``) builds one segmentor per run, each
    exactly as its own run would; this keeps them on one copy of the weights
    instead of one per run (20 ablation variants of ViT-L/14 would otherwise
    hold 20 copies). Only for runs that do not change the weights.
    """
    global _REUSED
    outer = _REUSED
    _REUSED = {} if outer is None else outer
    try:
        yield
    finally:
        _REUSED = outer


def create_clip(arch: str, pretrained: Optional[str] = None, arch_file: Optional[str] = None,
                precision: str = 'fp32', device='cpu', quick_gelu: Optional[bool] = None,
                cache_dir: Optional[str] = None) -> Tuple[torch.nn.Module, str]:
    """Create an open_clip model in eval mode.

    Args:
        arch: open_clip architecture name; may be None when ``arch_file`` is given.
        pretrained: open_clip tag, local checkpoint path, or None (random weights).
        arch_file: JSON architecture to register first (its stem is its name).
        precision: ``fp32 | fp16 | bf16`` (open_clip's own mixed-precision cast,
            which mirrors OpenAI's), already resolved from ``'auto'``.
        device: where the weights go.
        quick_gelu: force QuickGELU on/off; None follows the tag (OpenAI and
            MetaCLIP weights were trained with QuickGELU, and a GELU model on
            those weights is silently wrong).
        cache_dir: open_clip download cache.

    Returns:
        (model, arch name).
    """
    reuse_key = None
    if _REUSED is not None:
        files = tuple(file_digest(f) if f and os.path.isfile(f) else f for f in (arch_file, pretrained))
        reuse_key = (arch, pretrained, files, precision, str(device), quick_gelu, cache_dir)
        if reuse_key in _REUSED:
            return _REUSED[reuse_key]
    import open_clip
    if quick_gelu is not None:  # bool('no') is True: a string here would silently flip the activation
        quick_gelu = check_bool(quick_gelu, 'model.clip.quick_gelu')
    for value, key in ((arch, 'model.clip.arch'), (pretrained, 'model.clip.pretrained'),
                       (arch_file, 'model.clip.arch_file')):
        if value is not None and not isinstance(value, str):
            raise ValueError(f'{key}={value!r}: expected a string (or None)')
    if arch_file:
        registered = register_arch_file(arch_file)
        if arch and arch != registered:  # the file would be silently unused: another arch evaluated
            raise ValueError(f"model.clip.arch='{arch}' is not defined by model.clip.arch_file='{arch_file}', "
                             f"which defines only '{registered}' (its file name): set model.clip.arch="
                             f"'{registered}' (or None), or drop arch_file")
        arch = registered
    if not arch:
        raise ValueError('no CLIP architecture given: set model.clip.arch or model.clip.arch_file')
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown CLIP architecture '{arch}' (model.clip.arch): expected an open_clip "
                         "name such as 'ViT-B-16', 'ViT-L-14', 'ViT-B-16-quickgelu' "
                         '(open_clip.list_models()), or a JSON file in model.clip.arch_file')
    tag_cfg = _check_pretrained(arch, pretrained) if pretrained else {}
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get('quick_gelu', False))
    if pretrained and os.path.isfile(pretrained) and os.path.getsize(pretrained) == 0:
        raise ValueError(f"checkpoint file '{pretrained}' (model.clip.pretrained) is empty (0 bytes): "
                         'download it again')
    try:
        model = open_clip.create_model(arch, pretrained=pretrained or None, precision=precision,
                                       device=device, force_quick_gelu=quick_gelu,
                                       cache_dir=cache_dir)
    except Exception as e:
        if pretrained and os.path.isfile(pretrained):
            # torch.load's own message for a corrupt file is a misleading weights_only hint or a
            # bare EOFError; name the file and the first line of the cause instead
            raise ValueError(checkpoint_error(pretrained, arch, e)) from e
        if not isinstance(e, RuntimeError):
            raise
        if pretrained:
            raise RuntimeError(
                f"could not load weights '{pretrained}' for '{arch}' (offline, or download failed: "
                f'{str(e).splitlines()[0][:200]}); download them once where online, or set '
                'model.clip.pretrained=/path/to/checkpoint (.pt/.bin/.safetensors)') from e
        raise
    if reuse_key is not None:
        _REUSED[reuse_key] = (model.eval(), arch)
    return model.eval(), arch


def checkpoint_error(path: str, arch: str, err: BaseException) -> str:
    """One line naming a checkpoint file that could not be loaded, and why."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    first = (lines[0] if lines else '').split('. ')[0][:120]
    if 'state_dict' in str(err) and ('Missing key' in str(err) or 'size mismatch' in str(err)):
        why = f"its tensors do not match architecture '{arch}' ({first})"
    else:  # torch.load / pickle failures: EOFError, UnpicklingError, KeyError, miniz errors...
        why = f'not a readable checkpoint, truncated or corrupt ({type(err).__name__}{": " + first if first else ""})'
    return (f"checkpoint file '{path}' (model.clip.pretrained) could not be loaded for '{arch}': {why}; "
            'download it again or point model.clip.pretrained at another file')


def state_digest(module: torch.nn.Module) -> str:
    """Hash of a module's tensors: identity for random (un-tagged) weights."""
    state = sorted(module.state_dict().items())
    memo_key = None
    if _REUSED is not None:  # runs of a shared pass hash the one model they share once, not once each
        memo_key = ('state_digest', id(module), tuple((n, t.data_ptr(), t._version, t.dtype) for n, t in state))
        if memo_key in _REUSED:
            return _REUSED[memo_key]
    h = hashlib.sha256()
    for name, t in state:
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    digest = h.hexdigest()[:16]
    if memo_key is not None:
        _REUSED[memo_key] = digest
    return digest
