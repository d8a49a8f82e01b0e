"""Vocabularies and prompt templates: data referred to by name or path.

A vocabulary file has one class per line, in label order. Commas separate
synonyms; each synonym becomes its own text query mapped back to that line's
class (docs/protocol.md, "Text side"). Surrounding whitespace is stripped, so the
stray trailing space in the reference ``cls_context60.txt`` does not leak into
a prompt.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple, Union

from .protocol import constants

VOCAB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vocabularies')


@dataclass(frozen=True)
class Vocabulary:
    """A parsed vocabulary.

    Attributes:
        name: the shipped name or the file path it came from.
        classes: one display name per class (the line's first synonym).
        queries: every text query, in file order.
        query_to_class: for each query, the index of its class.
    """
    name: str
    classes: Tuple[str, ...]
    queries: Tuple[str, ...]
    query_to_class: Tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def digest(self) -> str:
        """Content hash: identical vocabularies share cached text embeddings."""
        text = '\n'.join(f'{c}\t{q}' for q, c in zip(self.queries, self.query_to_class))
        return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def list_vocabularies() -> List[str]:
    """Names of the vocabularies shipped with the package."""
    return sorted(f[:-4] for f in os.listdir(VOCAB_DIR) if f.endswith('.txt'))


def resolve_vocabulary_path(name_or_path: str) -> str:
    """Map a shipped vocabulary name (``'voc21'``) or a file path to a file path."""
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = os.path.join(VOCAB_DIR, f'{name_or_path}.txt')
    if os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(
        f"vocabulary '{name_or_path}' not found: expected a file path or one of "
        f"the shipped names {list_vocabularies()}")


# How a vocabulary file is read, by the end of its name (default: ',' and no repeated names).
# ProxyCLIP's class files, shipped verbatim as 'proxyclip/<benchmark>.semicolon.txt', split
# synonyms on '; ', and their COCO-Object background list repeats 'bed', which is also a class:
# the official code scores both queries, so a reproduction keeps the repeat.
#
# The SCLIP family's files (SCLIP, NACLIP, ResCLIP, SC-CLIP share them byte for byte) are shipped
# verbatim where they differ from ClearCLIP's; the official code splits them on ', ':
#   voc21_bg26.txt        26 background names on line 0, person (7) and tv (5) synonyms: 21 / 56
#   voc20_synonyms.txt    person (7) and tv (5) synonyms: 20 classes / 30 queries
#   coco_object_bg26.txt  26 background names, person (8, with 'body'): 81 / 113; its background
#                         list repeats 'bed', also a class (both queries are scored, as officially)
# Their other five files equal ClearCLIP's (context60, context59, coco_stuff164k, cityscapes, ade20k).
# ITACLIP's class files, shipped verbatim as 'itaclip/<benchmark>.comma.txt', split on ', ' (SCLIP's
# code); its COCO-Object background list repeats 'bed' as SCLIP's does.
#
# LPOSS's class names ('lposs/<benchmark>.lposs.txt', each dataset class's CLASSES verbatim) split
# synonyms on ';' without a space; COCO-Object's 17 background names also repeat 'bed'.
VOCAB_FORMATS = {'.semicolon.txt': dict(sep='; ', repeats=True),
                 '_bg26.txt': dict(sep=', ', repeats=True),
                 '_synonyms.txt': dict(sep=', ', repeats=True),
                 '.comma.txt': dict(sep=', ', repeats=True),
                 '.lposs.txt': dict(sep=';', repeats=True)}


def vocabulary_format(path: str) -> dict:
    """``parse_vocabulary`` keywords for a vocabulary file, from its name."""
    return next((dict(fmt) for suffix, fmt in VOCAB_FORMATS.items() if path.endswith(suffix)), {})


def parse_vocabulary(lines: Sequence[str], name: str = '<inline>', sep: str = ',',
                     repeats: bool = False) -> Vocabulary:
    """Parse vocabulary lines (one class per line, ``sep`` separates synonyms).

    ``repeats`` accepts a name on two lines (only for verbatim copies of
    official files that have them, see ``VOCAB_FORMATS``).
    """
    classes, queries, query_to_class = [], [], []
    first_line = {}  # normalised query -> line number of the class that has it
    for number, line in enumerate(lines, 1):
        synonyms = [s.strip() for s in line.split(sep)]
        synonyms = [s for s in synonyms if s]
        if not synonyms:
            continue
        for s in synonyms:
            # CLIP's tokenizer lowercases and collapses whitespace: 'Cat' and 'cat' embed the same
            norm = ' '.join(s.split()).lower()
            other = first_line.setdefault(norm, number)
            if other != number and not repeats:
                where = 'entries' if name == '<inline>' else 'lines'
                raise ValueError(
                    f"vocabulary '{name}' has '{s}' on {where} {other} and {number}: two classes with the "
                    'same text get the same embedding and the later one is never predicted; merge them into '
                    'one line (commas separate synonyms) or rename one')
            queries.append(s)
            query_to_class.append(len(classes))
        classes.append(synonyms[0])
    if not classes:
        raise ValueError(f"vocabulary '{name}' is empty: expected one class name per line")
    return Vocabulary(name, tuple(classes), tuple(queries), tuple(query_to_class))


def load_vocabulary(name_or_path: Union[str, Sequence[str]]) -> Vocabulary:
    """Load a shipped vocabulary by name, a vocabulary file, or a list of class names."""
    if not isinstance(name_or_path, str):
        return parse_vocabulary(list(name_or_path))
    path = resolve_vocabulary_path(name_or_path)
    with open(path, encoding='utf-8') as f:
        return parse_vocabulary(f.read().splitlines(), name=name_or_path, **vocabulary_format(path))


def _openai_imagenet() -> List[Callable[[str], str]]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    return list(OPENAI_IMAGENET_TEMPLATES)


def _simple_imagenet() -> List[Callable[[str], str]]:
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES
    return list(SIMPLE_IMAGENET_TEMPLATES)


TEMPLATE_SETS: Dict[str, Callable[[], List]] = {
    'openai_imagenet': _openai_imagenet,   # the paper's 80 templates (default)
    'simple_imagenet': _simple_imagenet,
    'a_photo_of': lambda: ['a photo of a {}.'],
    'name_only': lambda: ['{}'],
}


def _short(spec) -> str:
    return f"'{spec}'" if isinstance(spec, str) else f'{list(spec)[:3]!r}'


def load_templates(spec: Union[None, str, Sequence[str]] = None) -> List[str]:
    """Return prompt templates as format strings with one ``{}``.

    Args:
        spec: a template-set name from ``TEMPLATE_SETS``, a file with one
            template per line (each containing ``{}``), or a list of templates;
            None: the protocol's (``protocol.constants.TEMPLATES``).
    """
    if spec is None:
        spec = constants.TEMPLATES
    lines = None  # (line number, template) of a file, for errors naming the line
    if isinstance(spec, str):
        if spec in TEMPLATE_SETS:
            raw = TEMPLATE_SETS[spec]()
        elif os.path.isfile(spec):
            with open(spec, encoding='utf-8') as f:
                lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
            raw = [t for _, t in lines]
        else:
            raise FileNotFoundError(
                f"templates '{spec}' not found: expected a file path or one of {sorted(TEMPLATE_SETS)}")
    else:
        raw = list(spec)
    templates = []
    for i, t in enumerate(raw):
        where = f"line {lines[i][0]} of templates file '{spec}'" if lines else f"templates {_short(spec)}"
        if callable(t):
            # open_clip's templates are lambdas; turn them into format strings once.
            t = t('\x00').replace('{', '{{').replace('}', '}}').replace('\x00', '{}')
        if not isinstance(t, str):
            raise ValueError(f'{where}: template {t!r} is not a string: expected text with one {{}} '
                             'for the class name')
        try:  # exactly one '{}' and no other field: 'a {} of {}' or '{name}' would fail at encoding
            ok = t.format('\x00').count('\x00') == 1
        except (IndexError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{where}: template {t!r} must hold exactly one '{{}}' placeholder for the class "
                             "name (write other braces as '{{' and '}}')")
        templates.append(t)
    if not templates:
        raise ValueError(f"templates {_short(spec)} are empty: expected one template per line, each with one "
                         "'{}' for the class name")
    return templates
