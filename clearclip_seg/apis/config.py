"""Loading a config: file, ``--cfg-options`` overrides, device-dependent settings.

Every tool and API function loads configs through ``load_config`` so that the
same overrides mean the same thing everywhere.
"""
import os
import os.path as osp
from typing import Optional, Union

from ..options import ConfigError  # noqa: F401  (defined with the option checks; exported here)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_config(config, cfg_options: Optional[dict] = None):
    """An ``mmengine.Config`` from a path (or a Config), with overrides merged.

    Args:
        config: config file path or ``mmengine.Config``.
        cfg_options: ``{'a.b': value}`` overrides (``--cfg-options``).
    """
    from .config_keys import check_dataloader, check_model, check_override_paths
    if isinstance(config, (str, os.PathLike)):
        if not osp.isfile(config):
            raise ConfigError(f"config '{config}' not found")
        cfg = read_config_file(str(config))
        cfg.filename_ = str(config)
    else:
        cfg = config.copy() if hasattr(config, 'copy') else config
    filename = getattr(cfg, 'filename_', None) or getattr(cfg, 'filename', None)
    # every key must be read by some part of the run: a typo is an error, never a silent default
    if cfg_options:
        check_override_paths(cfg, cfg_options, filename)
        cfg.merge_from_dict(dict(cfg_options))
    check_model(cfg, cfg_options, filename)
    check_dataloader(cfg)
    return cfg


def resolve_device(device: Union[None, str, 'torch.device'] = None) -> str:
    """``None``: the GPU when there is one, else the CPU."""
    import torch
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return str(device)


def pin_precision(cfg, device: str) -> None:
    """Resolve ``model.clip.precision='auto'`` for the device the model will run on.

    The segmentor would otherwise decide from MMEngine's default device, which
    is the GPU on a GPU machine even when the caller runs on the CPU.
    """
    from ..models.clip_loader import resolve_precision
    clip = cfg.model.get('clip') or {}
    precision = clip.get('precision', 'auto')
    if precision == 'auto':
        cfg.model.clip['precision'] = resolve_precision('auto', device)


def relative_to_root(path: str) -> str:
    """A config path as recorded: relative to the repository when inside it."""
    path = osp.abspath(path)
    return osp.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def read_config_file(path: str):
    """``Config.fromfile`` with a syntax error (here or in a ``_base_`` file) as one line naming file and line."""
    from mmengine.config import Config
    try:
        return Config.fromfile(path)
    except SyntaxError as e:
        where, err = _syntax_error(path) or (path, e)
        line = f' line {err.lineno}' if err.lineno else ''
        text = (err.text or '').strip()[:80]
        raise ConfigError(f"config '{where}'{line}: syntax error ({err.msg})" + (f': {text!r}' if text else '')
                          ) from None


def _syntax_error(path: str, seen=()):
    """(file, SyntaxError) of the first file that does not parse: ``path`` or one of its ``_base_`` files."""
    import ast
    try:
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=path)
    except SyntaxError as e:
        return path, e
    except OSError:
        return None
    for node in tree.body:  # _base_ = '...' or [...]: literal paths relative to this file
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return None
            for base in [bases] if isinstance(bases, str) else list(bases):
                full = osp.normpath(osp.join(osp.dirname(path), base))
                if full not in seen:
                    found = _syntax_error(full, (*seen, path))
                    if found:
                        return found
    return None
