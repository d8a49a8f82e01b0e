"""ITACLIP's text side (``model.text_head=dict(type='ITACLIPText')``): LLM texts mixed into the class embeddings.

As the authors' evaluation runs it (method card ``itaclip_trident_cliptrase.md``,
section 1.4; official ``itaclip_segmentor.py::__init__``, ``get_aux_text``):

* An auxiliary file has one line per class, ``name >=text``, generated offline
  by Llama-3-8B-Instruct (definitions for VOC21, Context60, COCO-Stuff;
  synonyms for COCO-Object, Cityscapes). The text is everything after the
  first ``>=``, not stripped. The files ship verbatim in
  ``vocabularies/itaclip/llama_generated_texts/``.
* Each text goes through the same templates as a class name (so prompts such
  as "a photo of a a human being, a living individual.." are what the authors
  encode) and is embedded the same way: normalised per template, averaged,
  normalised again.
* Row of query q of class c: ``(1 - w) * e(q) + w * e_aux(c)``, w =
  ``def_coefficient``, **not** renormalised; every synonym of a class gets its
  class's text. Where the dataset has a background class, the file has no line
  for it and class 0's queries keep ``e(q)``.

The background case is read from the file: C - 1 lines for a C-class vocabulary
means class 0 has no text (the official code decides it by dataset name; the
shipped files agree), C lines means every class has one.
"""
import os
from typing import List, Optional, Sequence

import torch

from ..models.text_heads import TextHead, register_text_head
from ..options import check_number
from ..vocab import VOCAB_DIR

AUX_DIR = os.path.join(VOCAB_DIR, 'itaclip', 'llama_generated_texts')
AUX_SEPARATOR = '>='


def list_auxiliary_texts() -> List[str]:
    """Names of the shipped auxiliary text files."""
    return sorted(f[:-4] for f in os.listdir(AUX_DIR) if f.endswith('.txt'))


def resolve_auxiliary_text(name_or_path: str, key: str) -> str:
    """A shipped auxiliary file name (``'voc21_definitions'``) or a file path -> the file path."""
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = os.path.join(AUX_DIR, f'{name_or_path}.txt')
    if os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(f'{key}={name_or_path!r} not found: expected a file path or one of the shipped '
                            f'names {list_auxiliary_texts()}')


def read_auxiliary_texts(path: str) -> List[str]:
    """The text of each line: everything after the first ``>=`` (kept as it is; the line break dropped)."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    texts = []
    for number, line in enumerate(lines, 1):
        if AUX_SEPARATOR not in line:
            raise ValueError(f"{path}: line {number} has no '{AUX_SEPARATOR}': expected 'name {AUX_SEPARATOR}text'")
        texts.append(line.split(AUX_SEPARATOR)[1])
    return texts


def mix_embeddings(names: torch.Tensor, aux: torch.Tensor, query_to_class: Sequence[int], offset: int,
                   weight: float) -> torch.Tensor:
    """Rows ``(1 - weight) * names[q] + weight * aux[class(q) - offset]``; queries of classes below ``offset`` keep ``names[q]``.

    Args:
        names: (Q, dim) embeddings of the class-name queries.
        aux: (C - offset, dim) embeddings of the auxiliary texts.
        query_to_class: class index of each query.
        offset: 1 when class 0 (background) has no auxiliary text, else 0.
        weight: w, ``def_coefficient``.
    """
    idx = torch.as_tensor(query_to_class, dtype=torch.long, device=names.device)
    rows = names.clone()
    has = idx >= offset
    rows[has] = (1 - weight) * names[has] + weight * aux[idx[has] - offset]
    return rows


@register_text_head('ITACLIPText')
class ITACLIPText(TextHead):
    """Class-name embeddings mixed with LLM-generated definitions or synonyms.

    Args:
        auxiliary_text: a shipped file name (``voc21_definitions``,
            ``context60_definitions``, ``coco_object_synonyms``,
            ``coco_stuff_definitions``, ``cityscapes_synonyms``) or a file path,
            one ``name >=text`` line per class (background excluded). Required.
        def_coefficient: w, the weight of the auxiliary text (0.2, the class
            default; per benchmark in the card).
        key: config key named in errors.
    """

    def __init__(self, auxiliary_text: Optional[str] = None, def_coefficient: float = 0.2,
                 key: str = 'model.text_head'):
        if not isinstance(auxiliary_text, str) or not auxiliary_text:
            raise ValueError(f'{key}.auxiliary_text is required: a file name or path, one of '
                             f'{list_auxiliary_texts()}')
        self.auxiliary_text = auxiliary_text
        self.def_coefficient = check_number(def_coefficient, f'{key}.def_coefficient', low=0, high=1)
        self._key = key
        self._texts = read_auxiliary_texts(resolve_auxiliary_text(auxiliary_text, f'{key}.auxiliary_text'))
        self._offset = 0

    def bind(self, vocabulary, templates) -> None:
        n, c = len(self._texts), vocabulary.num_classes
        if n not in (c, c - 1):
            raise ValueError(f'{self._key}.auxiliary_text={self.auxiliary_text!r} has {n} lines; the vocabulary '
                             f"'{vocabulary.name}' has {c} classes: expected {c} (one per class) or {c - 1} "
                             '(none for the background, class 0)')
        self._offset = c - n

    def classifier(self, embed, vocabulary, templates: Sequence[str]) -> torch.Tensor:
        self.bind(vocabulary, templates)
        names = embed(vocabulary.queries, templates)
        aux = embed(self._texts, templates)
        return mix_embeddings(names, aux, vocabulary.query_to_class, self._offset, self.def_coefficient)
