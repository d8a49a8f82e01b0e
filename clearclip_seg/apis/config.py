"""Loading a config (``clearclip_seg.config.load_config``) and its device-dependent settings."""
import warnings
from typing import Union

from ..config import load_config  # noqa: F401 (re-exported: the API's names)
from ..errors import ConfigError  # noqa: F401
from ..repo_root import ROOT, relative_to_root  # noqa: F401


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
    from ..models.clip_loader import resolve_precision  # lazy: the models import torch; importing the API does not
    clip = cfg.model.get('clip') or {}
    precision = clip.get('precision', 'auto')
    if precision == 'auto':
        cfg.model.clip['precision'] = resolve_precision('auto', device)


def quiet_known_warnings() -> None:
    """Silence the one library warning every run would print and that asks for nothing (command lines only).

    MMSeg 1.2.2 warns whenever ``LoadAnnotations`` is given ``reduce_zero_label``, which
    the generated configs do on purpose (the protocol's value written where the labels are
    loaded, beside the dataset's own): MMSeg asserts the two agree on every label it loads,
    so the warning never points at a problem. Filters are inherited by forked data workers.
    """
    warnings.filterwarnings('ignore', message='`reduce_zero_label` will be deprecated', category=UserWarning)
