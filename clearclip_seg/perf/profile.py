"""Where the time of one scoring pass goes, by kind of work (``--profile``).

Runs ``seg.query_logits`` under ``torch.profiler`` and sums the self time of
every ATen operator into the kinds that matter for a dense CLIP pass: the
matrix products (the FLOPs the GFLOP/s figures count), the attention kernel,
the activation, the layer norms, copies and dtype casts, the per-window logit
resize and the sliding-window sums.
"""
from collections import defaultdict
from typing import Callable, Dict, Sequence

import torch

# operator name (without ``aten::``) -> kind; anything else is ``other``
OP_KINDS: Dict[str, str] = {
    'addmm': 'matmul', 'mm': 'matmul', 'bmm': 'matmul', 'baddbmm': 'matmul', 'mkldnn_convolution': 'matmul',
    'cudnn_convolution': 'matmul',
    '_scaled_dot_product_flash_attention_for_cpu': 'attention kernel',
    '_scaled_dot_product_flash_attention': 'attention kernel',
    '_scaled_dot_product_efficient_attention': 'attention kernel',
    '_scaled_dot_product_cudnn_attention': 'attention kernel', '_softmax': 'softmax',
    'gelu': 'activation (GELU / QuickGELU)', 'sigmoid': 'activation (GELU / QuickGELU)',
    'native_layer_norm': 'layer norm',
    'copy_': 'copies and casts', '_to_copy': 'copies and casts', 'clone': 'copies and casts',
    'upsample_bilinear2d': 'window logits resize', 'add_': 'sums (residual, window overlap)',
    'add': 'sums (residual, window overlap)', 'div_': 'sums (residual, window overlap)',
    'fill_': 'zero fill', 'zero_': 'zero fill',
}


def op_breakdown(seg, images: Sequence[torch.Tensor], max_windows: int,
                 log: Callable[[str], None] = print) -> dict:
    """Self time per kind of work of one ``seg.query_logits(images)`` (after one untimed call).

    Returns:
        ``total_ms`` and ``kinds``: ``{kind: {ms, share, calls}}``, largest first.
    """
    from torch.profiler import ProfilerActivity, profile
    old = seg.test_cfg.get('max_windows')
    seg.test_cfg['max_windows'] = max_windows
    try:
        with torch.inference_mode():
            seg.query_logits(images)  # warm: text classifier, positional embeddings, allocator
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if images[0].is_cuda else [])
            with profile(activities=activities) as prof:
                seg.query_logits(images)
    finally:
        seg.test_cfg['max_windows'] = old
    kinds = defaultdict(lambda: dict(ms=0.0, calls=0))
    for evt in prof.key_averages():
        if not evt.key.startswith('aten::'):
            continue  # GPU kernels are listed again as their own events: count each operator once
        name = evt.key.split('::', 1)[-1]
        us = getattr(evt, 'self_device_time_total', 0) if images[0].is_cuda else evt.self_cpu_time_total
        k = kinds[OP_KINDS.get(name, 'other')]
        k['ms'] += us / 1e3
        k['calls'] += evt.count
    total = sum(k['ms'] for k in kinds.values()) or 1.0
    ordered = dict(sorted(((n, dict(k, share=k['ms'] / total)) for n, k in kinds.items()),
                          key=lambda kv: -kv[1]['ms']))
    log(f'where the time goes (self time of one pass, max_windows={max_windows}, {total:.0f} ms in all):')
    for name, k in ordered.items():
        log(f"  {name:<34} {k['ms']:8.1f} ms {100 * k['share']:5.1f} %  ({k['calls']} calls)")
    return dict(total_ms=total, kinds=ordered, max_windows=max_windows)
