"""Shared passes: one evaluation over an image set scores many runs.

A sweep is many runs over few image sets: the ablation grid is 20 last-block
variants on each of five image sets, and VOC21/VOC20, Context60/59 and
COCO-Object/COCO-Stuff read the same images. Runs that agree on everything up
to the last block's input (backbone, weights, precision, resize, windows) share
one pass: blocks 0..L-2 run once per window, each run's last block, head,
scoring and metric run on the shared tokens, and each run still gets its own
record, identical to the record of a separate ``tools/test.py`` run.

* ``plan``: which runs share (``share_key``, ``group_units``) and the dry-run lines;
* ``engine``: ``run_shared_pass``, the evaluation itself;
* ``trunk``: the record-and-replay of the frozen blocks;
* ``worker``: a unit in its own process (``python -m clearclip_seg.sweep.worker``);
* ``schedule``: units one after the other, on N local workers or as a Slurm array;
* ``execute``: the benchmark runner's side (``tools/benchmark.py``);
* ``cost``: encoder passes and the whole-paper estimate.

Importing it does not import MMSeg.
"""
from .plan import ShareError, WorkUnit, group_units, share_key

__all__ = ['ShareError', 'WorkUnit', 'group_units', 'share_key']
