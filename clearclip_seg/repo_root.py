"""The repository's root folder, computed once (configs, tools and data paths hang off it)."""
import os
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def relative_to_root(path: str) -> str:
    """A path as recorded: relative to the repository when inside it, else absolute."""
    path = osp.abspath(path)
    return osp.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
