"""Method rows: which card and protocol a record ran under, its row identity, label and published number.

A record of a registered method other than ``LastBlock`` (``model.method.type``
= ``NACLIP``, ...) belongs to a method card (``protocol/methods.py``; the
runner stores it in ``run.card``, else the config's ``method`` name or the
method type names it). Its protocol is ``own`` (the card's own setting for
that benchmark and backbone) or ``common`` (``common_setting``, ClearCLIP's);
the runner's ``run.protocol`` says which, otherwise the record's values are
compared with both. PAMR is kept apart (``pamr``): a row with PAMR switched
relative to its protocol is a variant ("NACLIP, PAMR off"), not a deviation.

``record_setting`` reads the record's values under the ``Setting`` field names;
``setting_deviations`` names where they differ from the expected setting.
Options the card sets per benchmark (ResCLIP's thresholds and weights) are
left out of the row identity, so one method is one row.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..protocol.benchmarks import BENCHMARKS
from ..protocol.methods import DENSE_CARDS, METHOD_CARDS, MethodCard, Setting, common_setting
from ..protocol.published_methods import MethodEntry, find_method_entry
from .records import Record

# method type (model.method.type) -> card name; a dense method's own card before a text-head card on it
# (FLOSS's NACLIP card has NACLIP's type)
CARD_BY_TYPE: Dict[str, str] = {}
for _name in (*DENSE_CARDS, *METHOD_CARDS):
    CARD_BY_TYPE.setdefault(METHOD_CARDS[_name].method['type'], _name)

# after a row's label: the row ran its method's own scoring (a centre crop, its own metric), whose numbers,
# ours and published alike, are not comparable with the other rows' (CLIPtrase)
OWN_SCORING_MARK = '\u2021'   # double dagger


def own_scoring(card: MethodCard) -> bool:
    """Whether the card's own protocol scores its own way on some benchmark (``centre_crop`` or ``metric``)."""
    return any(card.setting(b).centre_crop is not None or card.setting(b).metric is not None for b in BENCHMARKS)


# the fields of a row's protocol card, in display order (field, label)
SETTING_FIELDS = (('resize', 'resize (short side)'), ('windows', 'windows'), ('patch_fit', 'patch fit'),
                  ('logit_scale', 'logit scale'), ('prob_thd', 'prob_thd'), ('area_thd', 'area_thd'),
                  ('pamr', 'PAMR'), ('vocabulary', 'vocabulary'))


def _num(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _pair(v):
    if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
        return _num(v[0])
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _pamr_text(post) -> str:
    if not post:
        return 'off'
    if post.get('type') != 'PAMR':
        return str(post.get('type'))
    dil = ','.join(str(d) for d in post.get('dilations') or ())
    return f"{post.get('num_iter')} it ({dil})"


def _windows_text(mode, crop, stride) -> str:
    if mode == 'whole':
        return 'whole'
    return f'{_pair(crop)}/{_pair(stride)}'


def record_setting(rec: Record) -> Dict[str, object]:
    """A record's protocol values under the row-card field names (None where the record lacks one)."""
    p, model = rec.protocol, rec.data.get('model') or {}
    resize = p.get('resize')
    tc = model.get('test_cfg') or {}
    voc = model.get('vocabulary') or {}
    post = model.get('postprocess')
    return dict(resize=_num(min(resize)) if resize else None,
                windows=_windows_text(p.get('mode'), p.get('crop'), p.get('stride')) if p.get('mode') else None,
                patch_fit=tc.get('patch_fit', 'pad'), logit_scale=_num(p.get('logit_scale')),
                prob_thd=_num(p.get('prob_thd')),
                area_thd=(_num(model['area_thd']) if model['area_thd'] is not None else 'off')
                if 'area_thd' in model else None,
                pamr=_pamr_text(post), vocabulary=voc.get('name'))


def setting_values(s: Setting) -> Dict[str, object]:
    """A card setting under the row-card field names."""
    return dict(resize=s.resize, windows=_windows_text(s.mode, (s.crop, s.crop), (s.stride, s.stride)),
                patch_fit=s.patch_fit, logit_scale=_num(s.logit_scale), prob_thd=_num(s.prob_thd),
                area_thd='off' if s.area_thd is None else _num(s.area_thd), pamr=_pamr_text(s.postprocess),
                vocabulary=s.vocabulary)


@dataclass(frozen=True)
class MethodRun:
    """What a method record ran: card, protocol, PAMR, the expected setting and the variant options.

    Attributes:
        card: the method card.
        protocol: ``own`` or ``common``.
        pamr: PAMR on in the run.
        pamr_default: PAMR on in the protocol itself (NACLIP's own protocol).
        expected: the setting the run is compared with (its protocol, with the run's PAMR).
        variant: method options that differ from the card's (``(key, value)`` pairs).
    """
    card: MethodCard
    protocol: str
    pamr: bool
    pamr_default: bool
    expected: Setting
    variant: Tuple[Tuple[str, str], ...]

    def label(self) -> str:
        """``NACLIP``, ``NACLIP, PAMR off``, ``SCLIP (common protocol + PAMR)``, ``GEM [ignore_residual=True]``."""
        text = self.card.title
        if self.variant:
            text += ' [' + ', '.join(f'{k}={v}' for k, v in self.variant) + ']'
        if self.protocol == 'common':
            return text + (' (common protocol + PAMR)' if self.pamr else ' (common protocol)')
        if self.pamr != self.pamr_default:
            text += ' + PAMR' if self.pamr else ', PAMR off'
        return text + (' ' + OWN_SCORING_MARK if own_scoring(self.card) else '')


def card_of(rec: Record) -> Optional[MethodCard]:
    """The method card of a record of a registered method (None for ``LastBlock`` records)."""
    if rec.method_type == 'LastBlock':
        return None
    run = rec.data.get('run') if isinstance(rec.data.get('run'), dict) else {}
    for name in (run.get('card'), rec.data.get('method')):
        if name in METHOD_CARDS and METHOD_CARDS[name].method['type'] == rec.method_type:
            return METHOD_CARDS[name]
    name = CARD_BY_TYPE.get(rec.method_type)
    return METHOD_CARDS[name] if name else None


def _method_options(rec: Record) -> Dict[str, str]:
    return {k: v for k, v in rec.method[1:]} if rec.method and rec.method[0] != 'LastBlock' else {}


def _per_benchmark_options(card: MethodCard) -> set:
    keys = set()
    for values in card.overrides.values():
        keys |= set(values.get('method', {}))
    for per_bench in card.backbone_overrides.values():
        for values in per_bench.values():
            keys |= set(values.get('method', {}))
    return keys


def _differs(got: Dict[str, object], want: Dict[str, object]) -> List[str]:
    out = []
    for f, label in SETTING_FIELDS:
        if f == 'pamr' or got.get(f) is None:
            continue
        if str(got[f]) != str(want[f]):
            out.append(f"{label} {got[f]} (expected: {want[f]})")
    return out


def method_run(rec: Record) -> Optional[MethodRun]:
    """Card, protocol and expected setting of a method record; None for ``LastBlock`` records or unknown types."""
    card = card_of(rec)
    if card is None:
        return None
    got = record_setting(rec)
    pamr = got['pamr'] != 'off'
    run = rec.data.get('run') if isinstance(rec.data.get('run'), dict) else {}
    hint = run.get('protocol')
    own = card.setting(rec.benchmark, rec.backbone)
    common = common_setting(card, rec.benchmark, pamr=pamr, backbone=rec.backbone)
    if hint in ('own', 'common', 'common+pamr'):
        protocol = 'own' if hint == 'own' else 'common'
    else:  # made outside the runner: the protocol whose values the record has
        protocol = 'common' if _differs(got, setting_values(own)) and not _differs(got, setting_values(common)) \
            else 'own'
    expected = own if protocol == 'own' else common
    options = _method_options(rec)
    skip = _per_benchmark_options(card)
    variant = tuple((k, options[k]) for k in sorted(card.method) if k != 'type' and k not in skip
                    and k in options and str(options[k]) != str(card.method[k]))
    return MethodRun(card, protocol, pamr, protocol == 'own' and own.postprocess is not None, expected, variant)


def method_row_key(rec: Record, mr: MethodRun) -> tuple:
    """Row identity of a method record: model, method type, options not set per benchmark, protocol, PAMR."""
    skip = _per_benchmark_options(mr.card)
    options = tuple((k, v) for k, v in rec.method[1:] if k not in skip)
    return (rec.arch, rec.pretrained, rec.method_type) + options + (mr.card.name, mr.protocol, mr.pamr)


def setting_deviations(rec: Record, mr: MethodRun) -> List[str]:
    """Where a method record differs from the setting of its protocol (PAMR on/off is the row's variant)."""
    got, want = record_setting(rec), setting_values(mr.expected)
    out = _differs(got, want)
    if mr.pamr and mr.expected.postprocess is not None and got['pamr'] != want['pamr']:
        out.append(f"PAMR {got['pamr']} (expected: {want['pamr']})")
    return out


def published_entry(rec: Record, mr: MethodRun) -> Optional[MethodEntry]:
    """The published row matching a method record (card, backbone, protocol, PAMR, variant options)."""
    return find_method_entry(mr.card.name, rec.backbone, mr.protocol, mr.pamr, _method_options(rec))
