"""Peak memory over a block of code: the GPU allocator's peak, or the process's resident set."""
import resource
from typing import Optional

import torch


def _proc_status_kb(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def process_peak_rss_mib() -> float:
    """The process-lifetime resident-set high-water mark, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PeakMemory:
    """Peak memory over a ``with`` block, in MiB.

    GPU: ``torch.cuda.max_memory_allocated`` after a reset. CPU: VmHWM from
    /proc/self/status, reset at entry through /proc/self/clear_refs where the
    kernel allows it (``resettable``); otherwise the process-lifetime
    high-water mark (``ru_maxrss``), which only ever grows.

    Args:
        device: the device whose memory is watched.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_mib = None
        self.start_mib = None
        self.kind = None
        self.resettable = False

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mib = torch.cuda.memory_allocated() / 2**20
            self.kind = 'cuda max_memory_allocated'
        else:
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')  # reset the peak RSS to the current RSS
                self.resettable = True
            except OSError:
                self.resettable = False
            rss = _proc_status_kb('VmRSS')
            self.start_mib = rss / 1024 if rss is not None else None
            self.kind = 'cpu VmHWM' + (' (reset per phase)' if self.resettable else ' (process lifetime)')
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            hwm = _proc_status_kb('VmHWM')
            self.peak_mib = hwm / 1024 if hwm is not None else process_peak_rss_mib()
        return False

    def as_dict(self) -> dict:
        """``peak_mib``, ``start_mib``, ``delta_mib`` (None where the peak could not be reset) and ``kind``."""
        start = None if self.start_mib is None else round(self.start_mib, 1)
        delta = None if start is None or not (self.resettable or self.device.type == 'cuda') \
            else round(self.peak_mib - self.start_mib, 1)
        return dict(peak_mib=round(self.peak_mib, 1), start_mib=start, delta_mib=delta, kind=self.kind)
