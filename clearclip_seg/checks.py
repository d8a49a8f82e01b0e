"""Checks that turn bad inputs into one-line errors before (or instead of) a wrong number.

An evaluation is long; everything that can be checked cheaply is checked before
the first image (paths writable, the launcher's environment, every listed file
present and non-empty), and what only decoding reveals (a truncated image, a
label of the wrong size or with out-of-range values) fails with one line naming
the file, the benchmark and ``tools/check_data.py``, which finds all such files
at once. ``DataError`` is a ``ConfigError``, so the tools print it as one line.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
from typing import Optional, Sequence

from .data_check import DataLayoutError, exif_orientation, has_valid_pixel, list_images, read_split
from .errors import ConfigError
from .options import check_number
from .repo_root import ROOT

DATA_ROOT_KEY = 'test_dataloader.dataset.data_root'


class DataError(ConfigError):
    """Bad data; the message is one line naming the file."""


def one_line(err: BaseException) -> str:
    """The message of an error raised in a DataLoader worker, without the worker's traceback.

    PyTorch re-raises a worker's exception as ``type(e)('Caught ... Original Traceback ...
    module.DataError: <message>')``; the message proper is after the last ``DataError: ``.
    """
    text = str(err).strip()
    marker = f'{type(err).__name__}: '
    last = text.splitlines()[-1] if text else repr(err)
    return last.split(marker, 1)[1] if 'Original Traceback' in text and marker in last else last


# -- paths ------------------------------------------------------------------------
def resolve_data_root(cfg, cfg_options: Optional[dict] = None) -> None:
    """Make the test dataset's ``data_root`` absolute, in place, by one rule.

    A path typed on the command line (``--cfg-options test_dataloader.dataset.data_root=...``)
    is relative to the current directory, as any path typed in a shell; a path
    written in a config file (``data/VOCdevkit/VOC2012``) is relative to the
    repository, the folder ``tools/prepare_data.py`` fills and
    ``tools/check_data.py`` checks, whatever the current directory.
    """
    ds = cfg.get('test_dataloader', {}).get('dataset')
    root = ds.get('data_root') if ds is not None else None
    if not isinstance(root, str) or not root or osp.isabs(root):
        return
    typed = DATA_ROOT_KEY in (cfg_options or {})
    ds['data_root'] = osp.abspath(root) if typed else osp.normpath(osp.join(ROOT, root))


def probe_writable(folder: str) -> None:
    """Make ``folder`` and write a file in it (then remove it); OSError when either fails.

    A read-only folder, a path that is a file and a full disk all fail here, before a run's work.
    """
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix='.write-test-')
    os.close(fd)
    os.unlink(probe)


def check_writable(work_dir: str, record_path: Optional[str]) -> None:
    """Fail before the first image when the work dir or the record's folder cannot be written."""
    targets = [(work_dir, 'work dir (--work-dir)')]
    if record_path:
        if osp.isdir(record_path):
            raise ConfigError(f"record path '{record_path}' (--record) is a directory: give a file path, "
                              "e.g. --record out/record.json")
        targets.append((osp.dirname(osp.abspath(record_path)), f"folder of the record '{record_path}' (--record)"))
    for folder, what in targets:
        try:
            probe_writable(folder)
        except OSError as e:
            raise ConfigError(f"cannot write to the {what} '{folder}': {e.strerror or e}; "
                              'the results would be lost after the run: choose a writable folder') from None


def check_launcher(launcher: str, environ=None) -> None:
    """``--launcher pytorch`` only works under torchrun, which sets the rendezvous variables."""
    env = os.environ if environ is None else environ
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in env]
        if missing:
            raise ConfigError(f"--launcher pytorch needs to be started by torchrun ({', '.join(missing)} unset): "
                              'use tools/dist_test.sh CONFIG NUM_GPUS, or drop --launcher for one process')


def check_show(show_dir: Optional[str], show_n: Optional[int]) -> None:
    """``--show-n`` is a positive count and only means something with ``--show-dir``."""
    if show_n is None:
        return
    check_or_fail(lambda: check_number(show_n, '--show-n', low=1, integer=True))
    if not show_dir:
        raise ConfigError('--show-n needs --show-dir (where the panels go)')


def check_or_fail(fn):
    try:
        return fn()
    except ValueError as e:
        raise ConfigError(str(e)) from None


# -- data -------------------------------------------------------------------------
def check_data_hint(benchmark: Optional[str], data_root: Optional[str] = None) -> str:
    """The check_data command that lists every problem of a benchmark's data."""
    if not benchmark:
        return 'python tools/check_data.py BENCHMARK --data-root-override BENCHMARK=DATA_ROOT'
    cmd = f'python tools/check_data.py {benchmark}'
    return cmd + (f' --data-root-override {benchmark}={data_root}' if data_root else '')


def check_split_file(cfg) -> None:
    """The test split, checked before the model is built (cheaply: one label decoded on good data).

    The split file (``ann_file``), when there is one, exists, lists at least one id, and
    has no blank line (MMSeg reads it as an image named '') and no id twice (it would be
    scored twice); MMEngine's own failure for an empty list is 'need at least one array to
    concatenate'. Without a split file, the image folder has no symbolic-link loop
    (MMSeg's listing would follow it until the system gives up). Then at least one label
    holds a pixel to score: a benchmark whose labels are all 255 has no mIoU.
    """
    ds = cfg.get('test_dataloader', {}).get('dataset') or {}
    root = ds.get('data_root') or ''
    bench = cfg.get('benchmark')
    hint = f'run {check_data_hint(bench, ds.get("data_root"))}'
    ann = ds.get('ann_file')
    if ann:
        path = ann if osp.isabs(ann) else osp.join(root, ann)
        if not osp.isfile(path):
            raise DataError(f"split file '{path}' (test_dataloader.dataset.ann_file) not found: {hint}")
        split = read_split(path)
        if not split.ids:
            raise DataError(f"split file '{path}' lists no images (it is empty): {hint}")
        if split.problem():
            raise DataError(f"split file '{path}' {split.problem()} ({hint} to see every problem)")
        ids = split.ids
    else:
        img_dir = osp.join(root, (ds.get('data_prefix') or {}).get('img_path', ''))
        if not ds.get('img_suffix') or not osp.isdir(img_dir):
            return
        try:
            ids = list_images(img_dir, ds['img_suffix'])
        except DataLayoutError as e:
            raise DataError(f"image folder '{img_dir}' of {bench or 'the test dataset'}: {e}") from None
    check_something_to_score(ds, ids, bench, hint)


def check_something_to_score(ds, ids: Sequence[str], benchmark: Optional[str], hint: str) -> None:
    """At least one listed label holds a pixel that is scored (not 255, nor 0 under reduce_zero_label).

    Reads labels in order and stops at the first such one, so good data costs one decode.
    Missing or undecodable labels are skipped here: the dataset checks name them.
    """
    import numpy as np
    from PIL import Image
    seg_prefix = (ds.get('data_prefix') or {}).get('seg_map_path')
    suffix = ds.get('seg_map_suffix')
    if not seg_prefix or not suffix:
        return
    seg_dir = osp.join(ds.get('data_root') or '', seg_prefix)
    reduce_zero = bool(ds.get('reduce_zero_label', False))
    read = 0
    for name in ids:
        try:
            with Image.open(osp.join(seg_dir, name + suffix)) as im:
                values = np.asarray(im)
        except Exception:
            continue
        read += 1
        if has_valid_pixel(values, reduce_zero):
            return
    if read:
        only = '255' + (' and 0 (reduce_zero_label)' if reduce_zero else '')
        raise DataError(f"no label of {benchmark or 'the test dataset'} at '{ds.get('data_root')}' holds a pixel "
                        f"to score: all {read} labels read under '{seg_dir}' hold only {only}, so there would be "
                        f'no mIoU: {hint}')


def check_label_map(label, pred_shape: Sequence[int], num_classes: int, ignore_index: int,
                    path: Optional[str] = None, reduce_zero_label: bool = False,
                    hint: Optional[str] = None, img_path: Optional[str] = None) -> None:
    """A ground-truth map is (H, W) like the prediction and holds only classes and the ignore index.

    Without this, a label of the wrong size fails inside MMSeg with a shape error, and an
    out-of-range value (a 77 in a VOC label) is silently scored: it counts as a label pixel
    of no class, changing aAcc and disagreeing with the predicted areas.

    Args:
        label: the label tensor as the metric receives it (after ``reduce_zero_label``).
        pred_shape: (H, W) of the prediction, i.e. of the original image.
        num_classes: the dataset's class count.
        ignore_index: the value that is not scored (255).
        path: the label file, for the message.
        reduce_zero_label: values were shifted down by one when loaded (named as in the file).
        hint: the check_data command for this benchmark (``check_data_hint``).
        img_path: the image file, named with the label when their sizes differ.
    """
    import torch
    name = f"label '{path}'" if path else 'a label map'
    hint = f'run {hint or check_data_hint(None)} to list every such file'
    shape = tuple(label.shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise DataError(f'{name} has shape {"x".join(map(str, label.shape))}: expected a single-channel '
                        f'(H, W) map of class indices (an RGB-coloured label?): {hint}')
    if shape != tuple(pred_shape):
        image, turned = '', ''
        if img_path:
            orientation = exif_orientation(img_path)
            image = f"; image '{img_path}'"
            turned = (f', turned by its EXIF orientation {orientation} as the loader decodes it, while the label '
                      'is used as stored' if orientation else '')
        raise DataError(f'{name} is {shape[1]}x{shape[0]} but its image is {pred_shape[1]}x{pred_shape[0]} '
                        f'(W x H{image}{turned}): {hint}')
    values = torch.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_index)].tolist()
    if bad:
        shift = 1 if reduce_zero_label else 0  # name the values as they are in the file
        in_file = [v + shift for v in bad]
        allowed = f'0..{num_classes - 1 + shift} and {ignore_index}'
        raise DataError(f'{name} holds value{"s" if len(bad) > 1 else ""} {in_file[:8]} outside the '
                        f'{num_classes} classes ({allowed}); such pixels would be scored as no class: {hint}')


# -- command line -----------------------------------------------------------------
def strict_dict_action():
    """MMEngine's ``DictAction`` that refuses an item without ``=`` with one line (not a traceback),
    and keeps the spaces of a plain string value (a path), which MMEngine's would delete."""
    from mmengine.config import DictAction

    class StrictDictAction(DictAction):
        def __call__(self, parser, namespace, values, option_string=None):
            for kv in values:
                key, sep, _ = kv.partition('=')
                if not sep or not key.strip():
                    print(f"error: {option_string} '{kv}': expected KEY=VALUE, e.g. model.prob_thd=0.3",
                          file=sys.stderr)
                    sys.exit(2)
            super().__call__(parser, namespace, values, option_string)
            options = getattr(namespace, self.dest)
            for kv in values:
                key, _, raw = kv.partition('=')
                if ' ' in raw and isinstance(options.get(key), str):
                    # MMEngine deletes every space of a value: a path with spaces ('my data/VOC2012')
                    # would name another folder; a plain string keeps its spaces
                    options[key] = raw.strip('\'"')

    return StrictDictAction


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value}: expected a positive integer')
    return value


# -- output folders ---------------------------------------------------------------
def claim_output_dir(folder: str, earlier: Sequence[str], overwrite: bool = False, what: str = 'outputs') -> str:
    """Make sure a tool's new outputs do not mix with an earlier run's in ``folder``.

    Args:
        folder: the output folder (created when missing).
        earlier: names of files in it that a previous run of the same tool wrote.
        overwrite: delete those first instead of refusing.
        what: how to call them in messages.

    Returns:
        A one-line note of what was deleted ('' when nothing was).

    Raises:
        ConfigError: earlier outputs are there and ``overwrite`` is off.
    """
    earlier = sorted(earlier)
    if earlier and not overwrite:
        raise ConfigError(f"output folder '{folder}' already holds {len(earlier)} {what} of an earlier run "
                          f"(e.g. {earlier[0]}): old and new would mix; choose another --out, or pass "
                          '--overwrite to delete them first')
    for name in earlier:
        os.unlink(osp.join(folder, name))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output folder '{folder}': {e.strerror or e}") from None
    return f"--overwrite: deleted {len(earlier)} earlier {what} from '{folder}'" if earlier else ''
