"""What makes two runs the same run: the resolved settings that determine its numbers.

The benchmark runner skips a run only when a complete record exists *and* the
record's identity equals the identity of the run it is asked for. The identity
is computed from the resolved config (file + overrides + data root), by the
runner before a run and by ``evaluate`` when it writes the record, with the same
function, so a changed override, data root, architecture file, vocabulary file
or checkpoint makes the old record stale instead of silently "done".
"""
import hashlib
import json
import os
from typing import Dict, List, Mapping, Sequence

from ..options import option_text

# Settings that by design never change the numbers (tests show equal results), so a
# record made with other values still counts: cache folders, the fused/compiled paths,
# the encoder batch size, and whether probabilities are kept (labels are the same: banded path).
NEUTRAL_KEYS = ('model.text_cache', 'model.compile', 'model.fused_attn', 'model.clip.cache_dir',
                'model.test_cfg.max_windows', 'model.test_cfg.keep_probs')
_SMALL_FILE = 4 << 20  # hash files up to 4 MiB; bigger ones (checkpoints) by size and mtime


def parse_cfg_options(items: Sequence[str], option: str = '--cfg-options') -> Dict:
    """``['a.b=1', ...]`` -> ``{'a.b': 1}``, parsed exactly as ``tools/test.py`` parses them.

    Raises:
        ValueError: an item has no ``=`` (one line naming it).
    """
    from mmengine.config import DictAction
    out = {}
    for kv in items:
        key, sep, val = str(kv).partition('=')
        if not sep or not key.strip():
            raise ValueError(f"{option} '{kv}': expected KEY=VALUE, e.g. model.prob_thd=0.3")
        out[key] = DictAction._parse_iterable(val)
    return out


def flatten_options(options: Mapping) -> Dict:
    """Options with dict values spelled out: a dict replaces the config's whole dict.

    ``{'model.postprocess': {'type': 'PAMR'}}`` -> ``{'model.postprocess._delete_': True,
    'model.postprocess.type': 'PAMR'}``, what ``--cfg-options`` parses such items to (a
    dict cannot be merged into a config's None), as ``protocol.methods.Setting.option_items`` writes it.
    """
    flat = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            flat[f'{key}._delete_'] = True
            flat.update(flatten_options({f'{key}.{k}': v for k, v in value.items()}))
        else:
            flat[key] = value
    return flat


def render_options(options: Mapping, option: str = '--cfg-options') -> List[str]:
    """``{'a.b': 1}`` -> ``['a.b=1']``: options as data turned into command-line items, at a process boundary.

    Dict values are spelled out first (``flatten_options``).

    Raises:
        ValueError: a value that would not read back as itself (e.g. the string
            ``'True'``, or a path with a comma), naming the key.
    """
    items = []
    for key, value in flatten_options(options).items():
        item = f'{key}={option_text(value)}'
        back = parse_cfg_options([item], option)[key]
        if as_plain(back) != as_plain(value) or type(back) is not type(value) and not (
                isinstance(value, (list, tuple)) and isinstance(back, (list, tuple))):
            raise ValueError(f'{option} {key}={value!r}: this value would be read back as {back!r}; '
                             'give it in the config file instead')
        items.append(item)
    return items


def as_plain(obj):
    """ConfigDicts, tuples... as JSON would store them (so a record compares equal to a fresh identity)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def file_identity(path: str) -> str:
    """Content hash of a small file; size and modification time of a big one."""
    st = os.stat(path)
    if st.st_size > _SMALL_FILE:
        return f'size={st.st_size} mtime_ns={st.st_mtime_ns}'
    with open(path, 'rb') as f:
        return 'sha256=' + hashlib.sha256(f.read()).hexdigest()[:24]


def _files(obj, found: Dict[str, str]) -> None:
    if isinstance(obj, dict):
        for v in obj.values():
            _files(v, found)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _files(v, found)
    elif isinstance(obj, str) and os.path.isfile(obj):
        found[os.path.abspath(obj)] = file_identity(obj)


def _drop(tree: dict, dotted: str) -> None:
    *parents, last = dotted.split('.')
    for p in parents:
        tree = tree.get(p) if isinstance(tree, dict) else None
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def run_identity(cfg) -> Dict:
    """The parts of a resolved config (data root already absolute) that determine a run's numbers.

    Args:
        cfg: ``mmengine.Config`` after overrides and ``checks.resolve_data_root``.

    Returns:
        A JSON-able dict: benchmark, model options, test dataset, evaluator, the
        precision ``'auto'`` resolves to on this machine, and the content identity
        of every file the model options name (architecture JSON, vocabulary,
        templates, checkpoint).
    """
    import torch
    model = as_plain(cfg.get('model') or {})
    identity = dict(model=model)
    for key in NEUTRAL_KEYS:
        _drop(identity, key)
    files: Dict[str, str] = {}
    _files(model, files)
    precision = (model.get('clip') or {}).get('precision', 'auto')
    if precision == 'auto':  # resolved as the segmentor does: fp16 on a GPU, fp32 on a CPU
        precision = 'fp16' if torch.cuda.is_available() else 'fp32'
    identity.update(
        benchmark=cfg.get('benchmark'),
        dataset=as_plain((cfg.get('test_dataloader') or {}).get('dataset')),
        evaluator=as_plain(cfg.get('test_evaluator')),
        precision=precision,
        files=files)
    return identity


def identity_diff(old: Dict, new: Dict, limit: int = 3) -> List[str]:
    """``['model.last_block.attn: 'qq' -> 'qk'', ...]``: the first differing settings."""
    diffs: List[str] = []

    def walk(a, b, path):
        if len(diffs) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, '<unset>'), b.get(k, '<unset>'), f'{path}.{k}' if path else str(k))
        elif a != b:
            diffs.append(f'{path}: {a!r} -> {b!r}')
    walk(as_plain(old), as_plain(new), '')
    return diffs
