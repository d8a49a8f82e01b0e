"""Loading a config: file and ``--cfg-options`` overrides, one rule for every tool and layer.

Every tool and API function loads configs through ``load_config`` (re-exported
by ``clearclip_seg.apis``) so that the same overrides mean the same thing
everywhere: a syntax error names its file and line, and every key must be read
by some part of the run (``config_keys``): a typo is an error, never a silent default.
"""
import os
import os.path as osp
from typing import Optional

from .config_keys import check_dataloader, check_model, check_override_paths
from .errors import ConfigError


def load_config(config, cfg_options: Optional[dict] = None):
    """An ``mmengine.Config`` from a path (or a Config), with overrides merged and every key checked.

    Args:
        config: config file path or ``mmengine.Config``.
        cfg_options: ``{'a.b': value}`` overrides (``--cfg-options``).

    Raises:
        ConfigError: a missing file, a syntax error, an unknown key or a bad value, in one line.
    """
    if isinstance(config, (str, os.PathLike)):
        if not osp.isfile(config):
            raise ConfigError(f"config '{config}' not found")
        cfg = read_config_file(str(config))
        cfg.filename_ = str(config)
    else:
        cfg = config.copy() if hasattr(config, 'copy') else config
    filename = getattr(cfg, 'filename_', None) or getattr(cfg, 'filename', None)
    if cfg_options:
        check_override_paths(cfg, cfg_options, filename)
        cfg.merge_from_dict(dict(cfg_options))
    check_model(cfg, cfg_options, filename)
    check_dataloader(cfg)
    return cfg


def read_config_file(path: str):
    """``Config.fromfile`` with a syntax error (here or in a ``_base_`` file) as one line naming file and line."""
    from mmengine.config import Config  # lazy: importing the package stays light
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
