"""Speed, FLOP-efficiency and memory measurement of the segmentor (no pass/fail).

One job per module:

- ``clearclip_seg.flops`` (re-exported here): analytic matmul FLOPs of the dense encoder (``vit_encoder_flops``,
  ``encoder_geometry``, ``windows_flops``).
- ``memory``: ``PeakMemory``, the peak over a block of code (GPU allocator or CPU RSS).
- ``image_memory``: peak RSS and time of one prediction on large images, a fresh
  process per case (``tools/benchmark_memory.py``).
- ``timing``: ``timed`` calls and the device's ``measure_matmul_peak``.
- ``paths``: the scoring paths (``measure_paths``), the encoder alone, output
  ``agreement`` and the text-classifier build time.
- ``inputs``: image sizes (``protocol_resize``), ``synthetic_images``, the
  random-weight segmentor (``build_segmentor``, through ``clearclip_seg.apis``) and
  the machine (``machine_info``, ``cpu_bf16_units``, ``bf16_advice``).
- ``report``: ``speed_report``, every figure of one run (``tools/benchmark_speed.py``).
- ``method_speed``: images/s of every method relative to ClearCLIP (``--methods``).
- ``profile``: where one pass's time goes, by kind of work (``--profile``).

Window geometry comes from ``clearclip_seg.models.slide`` and the protocol
values from ``clearclip_seg.protocol``.
"""
from ..flops import encoder_geometry, vit_encoder_flops, windows_flops
from .inputs import (DTYPES, VOC_RAW_SIZES, VOC_SIZES, benchmark_slide, build_segmentor, machine_info, parse_size,
                     protocol_resize, synthetic_images, voc_sizes)
from .memory import PeakMemory, process_peak_rss_mib
from .paths import agreement, measure_encoder_only, measure_path, measure_paths, time_text_classifier
from .report import speed_report
from .timing import measure_matmul_peak, synchronize, timed

__all__ = ['encoder_geometry', 'vit_encoder_flops', 'windows_flops', 'DTYPES', 'VOC_RAW_SIZES', 'VOC_SIZES',
           'voc_sizes', 'benchmark_slide', 'build_segmentor', 'machine_info', 'parse_size', 'protocol_resize',
           'synthetic_images', 'PeakMemory', 'process_peak_rss_mib', 'agreement', 'measure_encoder_only',
           'measure_path', 'measure_paths', 'time_text_classifier', 'speed_report', 'measure_matmul_peak',
           'synchronize', 'timed']
