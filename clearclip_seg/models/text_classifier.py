"""Text classifier: one embedding per query, built once and cached on disk.

Per query (PROTOCOL.md, "Text side"): encode every template, L2-normalise
each, average, L2-normalise again. The on-disk cache is keyed by everything
that changes the embeddings (architecture, weights identity, vocabulary
content, templates, precision), and written atomically (temporary file +
``os.replace``), so concurrent ranks of a multi-GPU run can share it.
"""
import hashlib
import json
import logging
import os
import tempfile
import time
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

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


def _atomic_save(obj, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tmp-', suffix='.pt')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
