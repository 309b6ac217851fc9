"""Wrong translations made from right ones, to measure what a score and the pair checks catch
(``polycap calibrate``'s perturbed negatives, ``benchmarks/pair_checks.py``). Each function
returns the perturbed translation, or None where the pair offers nothing to perturb (no number
word, no name kept verbatim, too few words).
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from polycap.transforms.checks import fold, missing_names, name_runs, number_words, words

KINDS = ("number_changed", "name_swapped", "cut_in_half", "half_echoed", "other_language")


def number_changed(translation: str, lang: str) -> Optional[str]:
    """The first number word of ``lang`` in ``translation`` changed to the next ("zwei" ->
    "drei", "Deux" -> "Trois")."""
    table = number_words(lang)
    by_value = {value: word for word, value in table.items()}
    for word in words(translation):
        value = table.get(word.casefold())
        if value is not None and value + 1 in by_value:
            new = by_value[value + 1]
            new = new.capitalize() if word[0].isupper() else new
            return re.sub(rf"\b{re.escape(word)}\b", new, translation, count=1)
    return None


def name_swaps(sources: Sequence[str], translations: Sequence[str]) -> list[Optional[str]]:
    """Per pair: where the translation carries the first name of its source verbatim, that name
    replaced by the name of the next such pair that no name of this source is near."""
    carried = [next((" ".join(run) for run in name_runs(source)[:1]
                     if " ".join(run) in translation), None)
               for source, translation in zip(sources, translations)]
    pool = [name for name in carried if name]
    swapped: list[Optional[str]] = []
    for source, translation, name in zip(sources, translations, carried):
        if name is None:
            swapped.append(None)
            continue
        start = pool.index(name) + 1
        other = next((candidate for candidate in pool[start:] + pool[:start]
                      if missing_names(source, candidate) and fold(candidate) != fold(name)), None)
        swapped.append(None if other is None else translation.replace(name, other, 1))
    return swapped


def cut_in_half(translation: str) -> Optional[str]:
    """The first half of the translation's words (four words or more)."""
    tokens = translation.split()
    return " ".join(tokens[: len(tokens) // 2]) if len(tokens) >= 4 else None


def half_echoed(source: str, translation: str) -> Optional[str]:
    """The translation's first half, then the source's second half: what MT returns for words it
    does not recognise ("UN POLICE OFFICER È SITTIGN DOWN TALKING")."""
    target, copied = translation.split(), source.split()
    if len(target) < 4 or len(copied) < 4:
        return None
    return " ".join(target[: len(target) // 2] + copied[len(copied) // 2 :])
