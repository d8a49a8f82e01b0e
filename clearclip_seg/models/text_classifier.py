"""Text classifier: one embedding per query, built once and cached on disk.

Per query (docs/protocol.md, "Text side"): encode every template, L2-normalise
each, average, L2-normalise again. The on-disk cache is keyed by everything
that changes the embeddings (``text_model_identity``: the resolved
architecture JSON, activation and other layer types, context length, weights
identity by content, tokenizer, precision, library versions; plus the
vocabulary's queries and the templates), and written atomically (temporary file +
``os.replace``), so concurrent ranks of a multi-GPU run can share it.
"""
import hashlib
import json
import logging
import os
import time
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from .clip_loader import file_digest, state_digest, weights_identity

logger = logging.getLogger(__name__)


def default_cache_dir() -> str:
    root = os.environ.get('CLEARCLIP_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'clearclip-seg'))
    return os.path.join(root, 'text_classifiers')


@torch.no_grad()
def encode_queries(clip_model, tokenizer, queries: Sequence[str], templates: Sequence[str],
                   device, prompts_per_batch: int = 2048) -> torch.Tensor:
    """(num_queries, dim) L2-normalised template-averaged text embeddings."""
    out = []
    per_batch = max(1, prompts_per_batch // len(templates))
    for i in range(0, len(queries), per_batch):
        chunk = queries[i:i + per_batch]
        texts = [t.format(q) for q in chunk for t in templates]
        emb = clip_model.encode_text(tokenizer(texts).to(device))
        emb = F.normalize(emb.float(), dim=-1).view(len(chunk), len(templates), -1).mean(dim=1)
        out.append(F.normalize(emb, dim=-1))
    return torch.cat(out)


def cache_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def tokenizer_identity(tokenizer) -> dict:
    """What distinguishes one tokenizer from another for the text embeddings."""
    inner = getattr(tokenizer, 'tokenizer', None)  # HFTokenizer wraps a transformers tokenizer
    encoder = getattr(tokenizer, 'encoder', None)  # SimpleTokenizer's BPE vocabulary
    name = getattr(inner, 'name_or_path', None)
    return dict(type=f'{type(tokenizer).__module__}.{type(tokenizer).__name__}',
                context_length=getattr(tokenizer, 'context_length', None),
                vocab_size=len(encoder) if isinstance(encoder, dict) else getattr(inner, 'vocab_size', None),
                name=name,
                # a local tokenizer (model.clip.tokenizer) by content: a folder edited in place keeps its name
                files=_local_digest(name) if isinstance(name, str) and os.path.exists(name) else None,
                clean=str(getattr(tokenizer, 'clean_fn', None).__class__.__name__)
                if hasattr(tokenizer, 'clean_fn') else None,
                reduction=type(getattr(tokenizer, 'reduction_fn', None)).__name__)


def _local_digest(path: str) -> str:
    """SHA-256 over a file's or a folder's files (names and contents, each hashed once per version)."""
    if os.path.isfile(path):
        return file_digest(path)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            h.update(os.path.relpath(full, path).encode())
            h.update(file_digest(full).encode())
    return h.hexdigest()


def text_model_identity(clip_model, arch: str, pretrained: Optional[str], precision: str, tokenizer) -> dict:
    """Everything besides queries and templates that changes the text embeddings.

    The text-classifier cache is keyed by this (plus the vocabulary's queries and
    the templates), so two runs share embeddings only when nothing here differs:
    the resolved architecture (the JSON content, not only its name, which a
    changed ``arch_file`` keeps), the text tower's layer types (QuickGELU vs GELU:
    ``model.clip.quick_gelu`` changes no tensor, only the activation), its context
    length, the weights' identity (tag, a checkpoint file's content digest, or a
    digest of random weights), the tokenizer, the precision and the library versions.

    Args:
        clip_model: the open_clip model whose text tower encodes the prompts.
        arch: its open_clip architecture name.
        pretrained: tag, checkpoint file or None (random weights).
        precision: resolved precision (``fp32 | fp16 | bf16``).
        tokenizer: the tokenizer the prompts go through.

    Returns:
        A JSON-able dict; ``cache_key(**parts)`` hashes it.
    """
    import open_clip
    weights = weights_identity(arch, pretrained)
    if weights is None:  # random weights: identify them by content
        weights = 'digest:' + state_digest(clip_model)
    text_tower = getattr(clip_model, 'transformer', None) or getattr(clip_model, 'text', None) or clip_model
    parts = dict(arch=arch,
                 arch_config=open_clip.get_model_config(arch),
                 layer_types=sorted({type(m).__name__ for m in text_tower.modules()}),
                 context_length=getattr(clip_model, 'context_length', None),
                 weights=weights,
                 tokenizer=tokenizer_identity(tokenizer),
                 precision=precision,
                 versions=dict(open_clip=open_clip.__version__, torch=torch.__version__))
    # plain JSON types: the dict is also stored in the cache file, which torch.load reads with
    # weights_only=True (torch.__version__ is a TorchVersion, not a str)
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def _atomic_save(obj, path: str) -> None:
    with atomic_path(path) as tmp:  # readable by the group: the cache is shared
        torch.save(obj, tmp)

def build_text_classifier(clip_model, tokenizer, queries: Sequence[str], templates: Sequence[str],
                          device, key_parts: Optional[dict] = None,
                          cache_dir: Optional[str] = None) -> torch.Tensor:
    """Embeddings for ``queries``, from the disk cache when possible.

    Args:
        key_parts: what identifies the embeddings (arch, weights, precision...);
            None disables the cache (e.g. random weights without a digest).
        cache_dir: cache folder; None uses ``$CLEARCLIP_CACHE/text_classifiers``.
    """
    path = None
    if key_parts is not None:
        key = cache_key(queries=list(queries), templates=list(templates), **key_parts)
        path = os.path.join(cache_dir or default_cache_dir(), f'{key}.pt')
        if os.path.isfile(path):
            try:
                emb = torch.load(path, map_location='cpu', weights_only=True)['embeddings']
                if emb.shape[0] == len(queries):
                    return emb.to(device)
            except Exception as e:  # a corrupt entry is rebuilt, never trusted
                logger.warning('ignoring unreadable text-classifier cache %s (%s)', path, e)
    t0 = time.perf_counter()
    emb = encode_queries(clip_model, tokenizer, list(queries), list(templates), device)
    logger.info('encoded %d queries x %d templates in %.1fs', len(queries), len(templates),
                time.perf_counter() - t0)
    if path is not None:
        try:
            _atomic_save({'embeddings': emb.cpu(), 'meta': key_parts}, path)
        except OSError as e:
            logger.warning('could not write text-classifier cache %s (%s)', path, e)
    return emb
