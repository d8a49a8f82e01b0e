"""Loading a config: file and ``--cfg-options`` overrides, one rule for every tool and layer.

Every tool and API function loads configs through ``load_config`` (re-exported
by ``clearclip_seg.apis``) so that the same overrides mean the same thing everywhere.
"""
import os
import os.path as osp
from typing import Optional

from .errors import ConfigError


def load_config(config, cfg_options: Optional[dict] = None):
    """An ``mmengine.Config`` from a path (or a Config), with overrides merged.

    Args:
        config: config file path or ``mmengine.Config``.
        cfg_options: ``{'a.b': value}`` overrides (``--cfg-options``).
    """
    from mmengine.config import Config  # lazy: importing the package stays light
    if isinstance(config, (str, os.PathLike)):
        if not osp.isfile(config):
            raise ConfigError(f"config '{config}' not found")
        cfg = Config.fromfile(str(config))
        cfg.filename_ = str(config)
    else:
        cfg = config.copy() if hasattr(config, 'copy') else config
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    return cfg
