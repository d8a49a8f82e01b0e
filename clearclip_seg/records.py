"""Run records: one JSON file per evaluation run, written atomically.

A record holds everything needed to trust and rebuild a number: the config
(path and resolved text), model and protocol settings, dataset and image
count, every metric with per-class IoU and the raw areas, timing, library
versions and the git commit. Tables are built from records only
(``tools/collect_results.py``).
"""
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Optional

RECORD_VERSION = 1


def atomic_write_json(obj, path: str) -> None:
    """Write JSON via a temporary file + rename: never a half-written record."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix='.tmp-', suffix='.json')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, indent=2, default=_jsonable)
            f.write('\n')
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(o):
    if hasattr(o, 'tolist'):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def load_record(path: str) -> Optional[dict]:
    """A complete record, or None when missing, partial or unreadable."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get('complete') else None


def git_commit(root: Optional[str] = None) -> Optional[str]:
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ('-dirty' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict:
    versions = {'python': platform.python_version()}
    for name in ('torch', 'torchvision', 'open_clip', 'mmseg', 'mmengine', 'mmcv', 'clearclip_seg', 'numpy'):
        mod = sys.modules.get(name)
        if mod is None:
            try:
                mod = __import__(name)
            except Exception:
                continue
        versions[name] = getattr(mod, '__version__', None)
    return versions


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
