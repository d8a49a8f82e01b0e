"""Wall and CPU time of one call, and the device's matmul peak (the yardstick of the GFLOP/s figures)."""
import time
import warnings
from typing import Callable, Optional, Sequence, Tuple

import torch


def synchronize(device) -> None:
    """Wait for the GPU (a no-op on the CPU), so that timings cover the work."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device) -> Tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call."""
    synchronize(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def benchmark_call(fn: Callable[[], object], min_run_time: float = 1.0, device='cpu'):
    """``torch.utils.benchmark`` measurement of ``fn()``: blocks of runs for at least ``min_run_time`` s.

    Returns the ``Measurement`` (``median``, ``iqr``, ``times``, one per block).
    """
    from torch.utils import benchmark

    def call():
        fn()
        synchronize(device)

    return benchmark.Timer(stmt='call()', globals={'call': call},
                           num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=min_run_time)


def summary(measurement) -> dict:
    """Median, IQR (seconds) and block count of a ``torch.utils.benchmark`` measurement."""
    return dict(median_s=measurement.median, iqr_s=measurement.iqr, blocks=len(measurement.times))


def check_repeat(name: str, medians: Sequence[float], iqrs: Sequence[float]) -> Optional[str]:
    """A warning (issued, and returned) when two timings of the same thing differ by more than their noise.

    The noise of a timing is its IQR; two medians further apart than the sum
    of the two largest IQRs (and than 2 % of the smaller median: an IQR of one
    block is 0) mean the machine's load changed between them.
    """
    if len(medians) < 2:
        return None
    lo, hi = min(medians), max(medians)
    noise = sum(sorted(iqrs)[-2:])
    if hi - lo <= max(noise, 0.02 * lo):
        return None
    msg = (f'{name}: two timings of the same case differ by {hi - lo:.3g} s ({lo:.3g} vs {hi:.3g} s), more '
           f'than their noise (IQR {noise:.3g} s): the load of the machine changed; compare figures with care')
    warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return msg


def measure_matmul_peak(device='cpu', dtype=torch.float32, n: Optional[int] = None,
                        min_time: float = 1.0, max_single_s: float = 1.0) -> dict:
    """Best achieved GFLOP/s of ``torch.matmul`` on n x n matrices (2 n^3 FLOPs each).

    Two layouts are timed, ``a @ b`` and ``a @ b.T`` (the ``nn.Linear`` weight
    layout; on a CPU without bf16 instructions bf16 ``a @ b`` is >10x slower
    than ``a @ b.T``), and the faster is the peak. Without ``n``: 2048 on CPU /
    8192 on GPU, or less where the dtype is slow: n doubles from 256 while one
    product would stay under ``max_single_s``. Each layout is repeated for
    ``min_time`` (at least 3 times) and its best time kept; a layout too slow
    to grow keeps the rate it had at the size where it dropped out.

    Returns:
        ``n``, ``dtype``, ``gflops`` (the peak), ``layout`` (``nn`` or ``nt``)
        and ``gflops_by_layout``.
    """
    device = torch.device(device)
    g = torch.Generator(device='cpu').manual_seed(0)

    def pair(k):
        return (torch.randn(k, k, generator=g).to(device=device, dtype=dtype),
                torch.randn(k, k, generator=g).to(device=device, dtype=dtype))

    def once(a, b, layout):
        synchronize(device)
        t0 = time.perf_counter()
        torch.matmul(a, b.t() if layout == 'nt' else b)
        synchronize(device)
        return time.perf_counter() - t0

    active = ['nn', 'nt']
    per_layout = {}
    with torch.inference_mode():
        if n is None:  # grow from 256 while one product stays well under max_single_s
            cap, n = (8192 if device.type == 'cuda' else 2048), 256
            while n < cap:
                a, b = pair(n)
                probes = {lay: min(once(a, b, lay) for _ in range(2)) for lay in active}
                fast = [lay for lay in active if probes[lay] * 8 <= max_single_s]
                for lay in active:
                    if lay not in fast and fast:  # too slow to grow: keep its rate at this n
                        per_layout[lay] = 2 * n**3 / probes[lay] / 1e9
                if not fast:
                    break
                active = fast
                n *= 2
        a, b = pair(n)
        for lay in active:
            once(a, b, lay)  # warm-up
            best, spent, reps = float('inf'), 0.0, 0
            while spent < min_time or reps < 3:
                dt = once(a, b, lay)
                best, spent, reps = min(best, dt), spent + dt, reps + 1
                if reps >= 200:
                    break
            per_layout[lay] = 2 * n**3 / best / 1e9
    rates = {k: v for k, v in per_layout.items() if v is not None}
    top = max(rates, key=rates.get)
    return dict(n=n, dtype=str(dtype).replace('torch.', ''), gflops=rates[top], layout=top,
                gflops_by_layout=per_layout)
