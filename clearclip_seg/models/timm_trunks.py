"""timm trunks described by a config dict, for architectures registered from JSON.

open_clip builds a timm-trunk tower (SigLIP, EVA02, PE, ...) with
``timm.create_model(vision_cfg.timm_model_name)`` and passes no architecture
keywords, so a small test tower cannot be written as an open_clip JSON alone.
An architecture file may therefore carry one extra top-level entry::

    "timm_trunk": {"name": "clearclip_tiny_map_vit",
                   "base": "vit_base_patch16_siglip_224",
                   "kwargs": {"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2}}

``name`` is registered with timm (``register_model``) as ``base`` built with
``kwargs`` (random weights: these are test and experiment towers), and the
rest of the file is handed to open_clip unchanged. ``vision_cfg.timm_model_name``
must name the trunk.
"""
import json
import os
import tempfile
from typing import Dict

_REGISTERED: Dict[str, dict] = {}
_SPEC_KEYS = ('name', 'base', 'kwargs')


def register_timm_trunk(spec: dict, source: str = 'timm_trunk') -> str:
    """Register ``spec['name']`` with timm as ``spec['base']`` built with ``spec['kwargs']``.

    Registering the same spec again is a no-op; a different spec under a
    registered name is an error (two files would silently share one trunk).

    Returns:
        The registered timm model name.
    """
    import timm
    from timm.models import register_model

    if not isinstance(spec, dict) or not spec.get('name') or not spec.get('base'):
        raise ValueError(f'{source}={spec!r}: expected a dict with name, base and optional kwargs')
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f'unknown keys {unknown} in {source}: expected {", ".join(_SPEC_KEYS)}')
    name, base, kwargs = spec['name'], spec['base'], dict(spec.get('kwargs') or {})
    if base not in timm.list_models():
        raise ValueError(f"{source}.base='{base}' is not a timm model name (timm {timm.__version__})")
    canonical = dict(name=name, base=base, kwargs=kwargs)
    if name in _REGISTERED:
        if _REGISTERED[name] != canonical:
            raise ValueError(f"timm trunk '{name}' ({source}) is already registered with a different "
                             f'spec {_REGISTERED[name]}: give it another name')
        return name
    if name in timm.list_models():
        raise ValueError(f"{source}.name='{name}' is already a timm model: pick a new name")

    def entrypoint(pretrained: bool = False, **overrides):
        if pretrained:
            raise ValueError(f"timm trunk '{name}' is built from a config dict and has no pretrained weights")
        return timm.create_model(base, pretrained=False, **{**kwargs, **overrides})

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    register_model(entrypoint)
    _REGISTERED[name] = canonical
    return name


def prepare_arch_file(path: str) -> str:
    """An open_clip-loadable copy of an architecture file, its ``timm_trunk`` registered.

    Returns ``path`` itself when the file has no ``timm_trunk`` entry; otherwise
    a copy without that entry, under the same file name (the file stem is the
    architecture name) in a temporary folder.
    """
    with open(path, encoding='utf-8') as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"architecture file '{path}' (model.clip.arch_file) is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or 'timm_trunk' not in cfg:
        return path
    spec = cfg.pop('timm_trunk')
    name = register_timm_trunk(spec, source=f"'{path}' timm_trunk")
    vision = cfg.get('vision_cfg', {})
    if vision.get('timm_model_name') != name:
        raise ValueError(f"architecture file '{path}': vision_cfg.timm_model_name="
                         f"{vision.get('timm_model_name')!r} does not name its timm_trunk '{name}'")
    folder = tempfile.mkdtemp(prefix='clearclip-arch-')
    out = os.path.join(folder, os.path.basename(path))
    with open(out, 'w', encoding='utf-8') as f:
        json.dump(cfg, f)
    return out
