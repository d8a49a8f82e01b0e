"""Loading a config: file, ``--cfg-options`` overrides, device-dependent settings.

Every tool and API function loads configs through ``load_config`` so that the
same overrides mean the same thing everywhere.
"""
import os
import os.path as osp
from typing import Optional, Union

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class ConfigError(ValueError):
    """A config mistake; the message is one line naming the file or key."""


def load_config(config, cfg_options: Optional[dict] = None):
    """An ``mmengine.Config`` from a path (or a Config), with overrides merged.

    Args:
        config: config file path or ``mmengine.Config``.
        cfg_options: ``{'a.b': value}`` overrides (``--cfg-options``).
    """
    from mmengine.config import Config
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
