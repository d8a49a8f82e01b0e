"""Decomposing CLIP's last block: norms, attention entropy, per-component segmentation.

The computations behind the paper's analysis (Sec. 3, figures 2 to 4). The
last block of CLIP's ViT is

    X_sum = X_res + X_attn,      X_res = the block's input (the residual stream)
                                 X_attn = ls_1(out_proj(Attn(ln_1(X_res))))
    output = X_sum + FFN(X_sum)  (when the FFN is kept)

so ``X_res + X_attn`` is exactly the block's output with the residual on and
the FFN off; the decomposition (``DenseEncoder.decompose``, as in the
paper's figures) is of the sum *before* the FFN. Nothing in the encoder or
the segmentor is changed: each mode's attention branch is asked for by name,
the per-component logits reuse the segmentor's text classifier, slide
inference and ``postprocess_result`` (resize, logit scale, synonyms,
``prob_thd``).

- ``components``: the feature sources, mode parsing, per-component query logits.
- ``statistics``: Frobenius norms, attention entropy (float64), per-window statistics.
- ``metrics``: mIoU from summed areas, as MMSeg's IoUMetric.
- ``run``: the loop over a benchmark's images and its record (``run_analysis``).
- ``plots``: the figures and the summary table.
"""
from .components import (ALL_MODES, SOURCES, LastBlockInputCache, component_features, component_query_logits,
                         parse_modes)
from .metrics import AreaAccumulator, miou_from_areas
from .plots import MODE_TITLES, format_summary, plot_figures
from .run import RECORD_NAME, analyze, build_model_and_dataset, run_analysis
from .statistics import (attention_map_float64, frobenius_norm, normalized_entropy, qkv_float64,
                         window_statistics)

__all__ = ['ALL_MODES', 'SOURCES', 'LastBlockInputCache', 'component_features', 'component_query_logits',
           'parse_modes', 'AreaAccumulator', 'miou_from_areas', 'MODE_TITLES', 'format_summary', 'plot_figures',
           'RECORD_NAME', 'analyze', 'build_model_and_dataset', 'run_analysis', 'attention_map_float64',
           'frobenius_norm', 'normalized_entropy', 'qkv_float64', 'window_statistics']
