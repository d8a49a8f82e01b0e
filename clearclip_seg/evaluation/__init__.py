"""Evaluation, one layer below the public API and the benchmark runner.

* ``run``: ``Run``, the one description of an evaluation run;
* ``identity``: what makes two runs the same run, and ``--cfg-options`` as data;
* ``share``: which runs may share the frozen blocks of one pass;
* ``steps``: prepare (config and checks) -> build (model and dataset) -> record;
* ``passes``: ``run_pass``, the evaluation itself: one pass scores one or many runs;
* ``trunk``: the record-and-replay of the frozen blocks;
* ``iou_metric``: the MMSeg metric (registered by ``clearclip_seg.registration``).

Importing it does not import MMSeg.
"""


def __getattr__(name):
    if name == 'ClearCLIPIoUMetric':
        from .iou_metric import ClearCLIPIoUMetric  # lazy: it imports (and registers in) MMSeg
        return ClearCLIPIoUMetric
    raise AttributeError(name)


__all__ = ['ClearCLIPIoUMetric']
