"""Turn the official dataset downloads into the trees the eight benchmarks expect.

The command line is ``tools/prepare_data.py``; the work is split by job:

- ``errors``: ``PrepareError``, the one-line, fixable failure of a step.
- ``files``: atomic writes (PNG labels, text), label reading, the progress bar.
- ``labels``: the pure numpy label conversions (COCO-Stuff, COCO-Object, Cityscapes,
  Pascal Context).
- ``convert``: those conversions over folders, in worker processes, skipping done files.
- ``archives``: the official archives, downloads, checksums and extraction.
- ``steps``: one step per benchmark family (``STEPS``) and their shared ``Options``.
"""
from .archives import (ARCHIVES, CHECKSUM_RECORD, Archive, download, ensure_archive, extract_subtree,
                       file_digests, verify_archive)
from .convert import (ConversionResult, convert_cityscapes, convert_coco_object, convert_coco_stuff,
                      run_conversions)
from .errors import PrepareError
from .files import atomic_save_png, atomic_write_text, read_label
from .labels import (CITYSCAPES_LABEL_TO_TRAIN, CITYSCAPES_LUT, COCO_STUFF_CLASSES, COCO_STUFFS,
                     COCO_THINGS, CONTEXT59_DETAIL_IDS, CONTEXT_LUT, NUM_COCO_THINGS, RAW_TO_TRAIN_LUT,
                     TRAIN_TO_OBJECT_LUT, cityscapes_label_to_train_id, context_mask_to_labels,
                     raw_stuff_to_train_ids, stuff_to_object_labels, train_ids_to_object_labels)
from .steps import (STEPS, Options, bench_root, prepare_ade20k, prepare_cityscapes, prepare_coco_object,
                    prepare_coco_stuff, prepare_context, prepare_voc)

__all__ = [
    'ARCHIVES', 'CHECKSUM_RECORD', 'Archive', 'download', 'ensure_archive', 'extract_subtree',
    'file_digests', 'verify_archive',
    'ConversionResult', 'convert_cityscapes', 'convert_coco_object', 'convert_coco_stuff',
    'run_conversions',
    'PrepareError',
    'atomic_save_png', 'atomic_write_text', 'read_label',
    'CITYSCAPES_LABEL_TO_TRAIN', 'CITYSCAPES_LUT', 'COCO_STUFF_CLASSES', 'COCO_STUFFS', 'COCO_THINGS',
    'CONTEXT59_DETAIL_IDS', 'CONTEXT_LUT', 'NUM_COCO_THINGS', 'RAW_TO_TRAIN_LUT', 'TRAIN_TO_OBJECT_LUT',
    'cityscapes_label_to_train_id', 'context_mask_to_labels', 'raw_stuff_to_train_ids',
    'stuff_to_object_labels', 'train_ids_to_object_labels',
    'STEPS', 'Options', 'bench_root', 'prepare_ade20k', 'prepare_cityscapes', 'prepare_coco_object',
    'prepare_coco_stuff', 'prepare_context', 'prepare_voc',
]
