"""Config keys and values checked when a config is loaded (``load_config``).

MMEngine merges ``--cfg-options modle.prob_thd=0.5`` as a new key that nothing
reads, so a typo would silently run the default. Here every key must be read
by some part of the run:

* top level: a key of the loaded config or one MMEngine's ``Runner`` reads;
* ``model.*`` (the file's keys and the overrides alike): the segmentor's
  constructor keywords, ``model.clip`` / ``model.test_cfg`` /
  ``model.last_block`` keys, and the keywords of the method and the
  post-processor classes the config names (their registries);
* any other section (``test_dataloader.*``, pipelines, evaluator): an existing
  path, a keyword of the class its ``type`` names, or of PyTorch's
  ``DataLoader`` for a ``*_dataloader`` dict; MMEngine's own type-less dicts
  (``env_cfg``, hooks) accept new keys.

Values that would silently change a run are refused too: strings in boolean
options (``bool('False')`` is True), non-finite floats anywhere in ``model``,
``batch_size`` < 1 and ``num_workers`` < 0.
"""
import inspect
import math
from typing import Dict, Iterable, Optional, Set, Tuple

from .options import FLOAT32_MAX, ConfigError, check_bool, check_number, did_you_mean
from .protocol.constants import CLEARCLIP_LAST_BLOCK
from .registry import keyword_options

# Top-level keys read besides MMEngine Runner's keywords (Runner.from_cfg, the project's tools).
EXTRA_TOP_LEVEL = ('model_wrapper_cfg', 'compile', 'custom_imports', 'benchmark', 'method', 'backbone')
# Words that read as booleans: as a text_cache folder name they are almost surely a quoted boolean.
BOOL_WORDS = ('true', 'false', 'yes', 'no', 'on', 'off', '0', '1', 'none')


def _error(message: str):
    return ConfigError(message)


def class_keywords(cls) -> Tuple[Set[str], bool]:
    """A class's constructor keywords along its ``**kwargs`` chain; and whether any key goes (open)."""
    names: Set[str] = set()
    for klass in getattr(cls, '__mro__', ()):
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        if klass is object:
            return names, False
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return names, True
        names |= {n for n, p in params.items() if n != 'self' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names, False
    return names, True


def _runner_keys() -> Set[str]:
    try:
        from mmengine.runner import Runner
    except ImportError:
        return set()
    return class_keywords(Runner)[0] | set(EXTRA_TOP_LEVEL)


def _registered_class(type_name):
    """The class a ``type`` names in MMSeg's (and so MMEngine's) registries; None if unknown."""
    if not isinstance(type_name, str):
        return type_name if inspect.isclass(type_name) else None
    try:
        from mmseg import registry as r
    except ImportError:
        return None
    for reg in (r.DATASETS, r.TRANSFORMS, r.METRICS, r.DATA_SAMPLERS, r.MODELS, r.VISUALIZERS, r.VISBACKENDS,
                r.HOOKS, r.LOOPS, r.EVALUATOR):
        try:
            cls = reg.get(type_name)
        except Exception:  # a registry that cannot import its locations: not this one
            cls = None
        if cls is not None:
            return cls
    return None


def _dataloader_keys() -> Set[str]:
    from torch.utils.data import DataLoader
    return class_keywords(DataLoader)[0]


class _Origin:
    """Says where a key came from: ``--cfg-options`` or the config file."""

    def __init__(self, filename: Optional[str], overrides: Iterable[str]):
        self.filename, self.overrides = filename, list(overrides)

    def __call__(self, path: str) -> str:
        for k in self.overrides:
            if k == path or path.startswith(k + '.') or k.startswith(path + '.'):
                return f'--cfg-options {k}'
        return f"config '{self.filename}'" if self.filename else 'the config'


def _unknown(path: str, allowed: Iterable[str], where: str, parent: str, listed: bool = True):
    allowed = sorted(str(a) for a in allowed)
    name = path.rsplit('.', 1)[-1]
    near = did_you_mean(name, allowed, prefix=parent + '.' if parent else '')
    takes = f': {parent} takes {", ".join(allowed)}' if listed and parent else \
        ': expected a key the config or MMEngine\'s Runner reads'
    return _error(f"unknown config key '{path}' ({where}){near}{takes}")


# -- overrides outside ``model`` ------------------------------------------------------------------
def check_override_paths(cfg, cfg_options: Dict, filename: Optional[str] = None) -> None:
    """Each ``--cfg-options`` key outside ``model``, against the config before the merge."""
    origin = _Origin(filename, cfg_options)
    top = set(cfg.keys()) | _runner_keys()
    for key in cfg_options:
        parts = str(key).split('.')
        if parts[0] not in top:
            raise _unknown(parts[0], top, origin(key), '', listed=False)
        if parts[0] == 'model':
            continue  # checked after the merge, with the method the merged config names
        node = cfg
        for i, part in enumerate(parts):
            if isinstance(node, (list, tuple)):
                if not (part.lstrip('-').isdigit() and -len(node) <= int(part) < len(node)):
                    raise _error(f"config key '{key}' ({origin(key)}): '{'.'.join(parts[:i])}' is a list of "
                                 f'{len(node)} items; expected an index 0..{len(node) - 1}')
                node = node[int(part)]
                continue
            if not hasattr(node, 'keys'):
                break  # a value replaced by a dict: the value's own check decides
            if part in node:
                node = node[part]
                continue
            if i == 0:
                break
            parent = '.'.join(parts[:i])
            if 'type' in node:
                cls = _registered_class(node['type'])
                if cls is None:
                    break
                names, open_ = class_keywords(cls)
                if not open_ and part not in names:
                    raise _unknown('.'.join(parts[:i + 1]), names | set(node.keys()), origin(key), parent)
            elif parts[i - 1].endswith('_dataloader') and i == 1:
                names = _dataloader_keys() | set(node.keys())
                if part not in names:
                    raise _unknown('.'.join(parts[:i + 1]), names, origin(key), parent)
            break  # a new key of a type-less MMEngine dict (env_cfg, hooks): accepted


# -- the model dict (file and overrides) ----------------------------------------------------------
def _segmentor_schema(model) -> Dict[str, Set[str]]:
    """Allowed keys per ``model`` sub-dict of a ``ClearCLIPSegmentor``."""
    from .models.clip_loader import CLIP_KEYS  # lazy: the models import torch
    from .segmentor import ClearCLIPSegmentor  # lazy: it imports MMSeg (and torch)
    from .segmentor_options import default_test_cfg  # lazy: it imports the methods and models (torch)
    schema = {'model': class_keywords(ClearCLIPSegmentor)[0] | {'type'}, 'model.clip': set(CLIP_KEYS),
              'model.test_cfg': set(default_test_cfg()), 'model.last_block': set(CLEARCLIP_LAST_BLOCK)}
    method = model.get('method')
    if isinstance(method, dict) and isinstance(method.get('type'), str):
        try:
            schema['model.method'] = set(keyword_options(_component('model.method', method['type']))) | {'type'}
        except ValueError:
            pass  # an unknown type: the build names it in one line
    for section in ('model.postprocess', 'model.text_head', 'model.label_postprocess'):
        comp = model.get(section.split('.', 1)[1])
        if isinstance(comp, dict) and isinstance(comp.get('type'), str):
            try:
                schema[section] = set(keyword_options(_component(section, comp['type']))) | {'type'}
            except ValueError:
                pass  # an unknown type: the build names it in one line
    pre = model.get('data_preprocessor')
    if isinstance(pre, dict):
        cls = _registered_class(pre.get('type'))
        if cls is not None:
            names, open_ = class_keywords(cls)
            if not open_:
                schema['model.data_preprocessor'] = names | {'type'}
    return schema


def check_model(cfg, cfg_options: Optional[Dict] = None, filename: Optional[str] = None) -> None:
    """Keys and values of the merged ``model`` dict: one-line ``ConfigError`` naming the key."""
    model = cfg.get('model')
    if not hasattr(model, 'keys') or model.get('type') != 'ClearCLIPSegmentor':
        return
    origin = _Origin(filename, cfg_options or {})
    schema = _segmentor_schema(model)
    for section, allowed in schema.items():
        node = model if section == 'model' else model.get(section.split('.', 1)[1])
        if not hasattr(node, 'keys'):
            continue
        for k in node.keys():
            if k not in allowed:
                raise _unknown(f'{section}.{k}', allowed, origin(f'{section}.{k}'), section)
    try:
        _check_model_values(model, schema)
    except ValueError as e:
        raise _error(str(e)) from None


def _check_model_values(model, schema) -> None:
    _check_finite(model, 'model')
    cache = model.get('text_cache')
    if cache is not None and not isinstance(cache, bool):
        if not isinstance(cache, str) or cache.strip().lower() in BOOL_WORDS:
            raise ValueError(f'model.text_cache={cache!r}: expected None (default folder), False (no cache), '
                             'True or a folder path (booleans unquoted)')
    clip = model.get('clip')
    if hasattr(clip, 'keys') and clip.get('map_head') is not None:
        from .models.timm_encoder import MAP_HEADS  # lazy: the models import torch
        if not isinstance(clip['map_head'], str) or clip['map_head'] not in MAP_HEADS:
            raise ValueError(f"model.clip.map_head={clip['map_head']!r}: expected one of {list(MAP_HEADS)}")
    # options whose default is a boolean take real booleans only (bool('False') is True)
    for section in schema:
        node = model if section == 'model' else model.get(section.split('.', 1)[1])
        if not hasattr(node, 'keys'):
            continue
        defaults = _defaults(section, node)
        for k, v in node.items():
            if isinstance(defaults.get(k), bool):
                check_bool(v, f'{section}.{k}')


def _defaults(section: str, node) -> dict:
    """Default values of a ``model`` section's options (constructor defaults, or the resolved defaults)."""
    from .segmentor_options import default_test_cfg  # lazy: it imports the methods and models (torch)
    if section == 'model.test_cfg':
        return default_test_cfg()
    if section == 'model.last_block':
        return dict(CLEARCLIP_LAST_BLOCK)
    if section in ('model.method', 'model.postprocess', 'model.text_head', 'model.label_postprocess'):
        cls = _component(section, node['type'])
    elif section == 'model':
        from .segmentor import ClearCLIPSegmentor as cls  # lazy: it imports MMSeg (and torch)
    else:
        return {}
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()}


def _component(section: str, name: str):
    if section == 'model.method':
        from .methods.registry import METHODS  # lazy: the methods import torch
        return METHODS.get(name)
    if section == 'model.text_head':
        from .models.text_heads import TEXT_HEADS  # lazy: the models import torch
        return TEXT_HEADS.get(name)
    if section == 'model.label_postprocess':
        from .models.label_postprocess import LABEL_POSTPROCESSORS  # lazy: the models import torch
        return LABEL_POSTPROCESSORS.get(name)
    from .models.postprocess import POSTPROCESSORS  # lazy: the models import torch
    return POSTPROCESSORS.get(name)


def _check_finite(node, path: str) -> None:
    """Every float under ``node`` is finite and within float32's range (NaN, inf, 1e300 are refused)."""
    if isinstance(node, float):
        if not math.isfinite(node) or abs(node) > FLOAT32_MAX:
            raise ValueError(f'{path}={node!r}: expected a finite number (at most {FLOAT32_MAX:.3g} in size)')
    elif hasattr(node, 'keys'):
        for k in node.keys():
            _check_finite(node[k], f'{path}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _check_finite(v, f'{path}.{i}')


# -- data loading values --------------------------------------------------------------------------
def check_dataloader(cfg) -> None:
    """``test_dataloader.batch_size`` >= 1 and ``num_workers`` >= 0, integers; ``persistent_workers`` a boolean."""
    loader = cfg.get('test_dataloader')
    if not hasattr(loader, 'keys'):
        return
    try:
        if 'batch_size' in loader:
            check_number(loader['batch_size'], 'test_dataloader.batch_size', low=1, integer=True)
        if 'num_workers' in loader:
            check_number(loader['num_workers'], 'test_dataloader.num_workers', low=0, integer=True)
        if 'persistent_workers' in loader:
            check_bool(loader['persistent_workers'], 'test_dataloader.persistent_workers')
    except ValueError as e:
        raise _error(str(e)) from None
