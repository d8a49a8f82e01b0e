"""``Run``: one evaluation run, from the suite entry that names it to the record it writes.

The same object is a suite's entry (``clearclip_seg.suites``), a planned run of
the benchmark runner (record path, identity, status), a run of a pass
(``passes.run_pass``) and, through ``to_unit``/``from_unit``, an entry of a
worker's unit file. Its options are data (``{'a.b': value}``, what
``--cfg-options`` parses to); they become ``--cfg-options`` strings only where
a process is started (``identity.render_options``).
"""
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .identity import parse_cfg_options, render_options


@dataclass
class Run:
    """One evaluation run.

    Attributes:
        name: unique within its suite; names the record's folder.
        config: config file (the runner makes it absolute).
        options: config overrides as data, ``{'a.b': value}``, stored in the record.
        benchmark, preset, backbone, card, protocol: what a suite says about the run
            (``card``, ``protocol``: methods suites), stored in the record's ``run``.
        suite: the suite (or matrix file) the run belongs to.
        record: where its record goes ('' for none).
        work_dir: its work dir (default: the config's, else ``work_dirs/<config name>``).
        run_info: the record's ``run`` as given (default: ``info()`` of a suite run).
        identity: the settings that determine its numbers (``identity.run_identity``), once planned.
        status: ``todo``, ``done`` or ``stale`` (the runner's plan); why: what made it stale.
        cfg: the resolved config (``steps.prepare``); error: why the run failed in its pass.
        predictions: save the predicted label maps in this folder (``clearclip_seg.predictions``);
            format_only: save them without scoring them (no record). Neither is part
            of the config, so the record is the same with or without them.
    """
    name: str
    config: str
    options: Dict[str, Any] = field(default_factory=dict)
    benchmark: Optional[str] = None
    preset: Optional[str] = None
    backbone: Optional[str] = None
    card: Optional[str] = None
    protocol: Optional[str] = None
    suite: Optional[str] = None
    record: str = ''
    work_dir: Optional[str] = None
    run_info: Optional[Dict] = None
    identity: Dict = field(default_factory=dict)
    status: str = 'todo'
    why: List[str] = field(default_factory=list)
    cfg: Any = field(default=None, repr=False, compare=False)            # resolved config, once prepared
    error: Optional[BaseException] = field(default=None, repr=False, compare=False)  # why it failed in a pass
    predictions: Optional[str] = None
    format_only: bool = False

    def __post_init__(self):
        self.name = self.name or osp.splitext(osp.basename(str(self.config)))[0]

    @property
    def title(self) -> str:
        """``suite/name`` for messages."""
        return f'{self.suite}/{self.name}' if self.suite else self.name

    def option_items(self) -> List[str]:
        """The options as ``--cfg-options`` items."""
        return render_options(self.options, f'run {self.title}: cfg_options')

    def info(self, suite: Optional[str] = None) -> Optional[Dict]:
        """The record's ``run``: ``run_info`` when given, else what the suite says about the run."""
        if self.run_info is not None:
            return dict(self.run_info)
        suite = suite or self.suite
        if suite is None:
            return None
        info = dict(suite=suite, name=self.name, benchmark=self.benchmark, preset=self.preset,
                    backbone=self.backbone, overrides=self.option_items())
        if self.card is not None:
            info.update(card=self.card, protocol=self.protocol)
        return info

    def to_unit(self, extra: Optional[Dict] = None) -> Dict:
        """The run as an entry of a worker's unit file (options rendered: a process boundary)."""
        return dict(name=self.name, config=self.config,
                    options=render_options({**self.options, **(extra or {})}, f'run {self.title}: cfg_options'),
                    record=self.record, work_dir=self.work_dir, run_info=self.info())

    @classmethod
    def from_unit(cls, entry: Dict) -> 'Run':
        """A run from a unit-file entry, its options parsed as ``tools/test.py`` parses them."""
        info = entry.get('run_info')
        return cls(name=entry.get('name') or (info or {}).get('name') or
                   osp.splitext(osp.basename(entry['config']))[0],
                   config=entry['config'], options=parse_cfg_options(entry.get('options') or []),
                   record=entry.get('record') or '', work_dir=entry.get('work_dir'), run_info=info)
