"""The ratio margin of Artetxe & Schwenk (2019), the score behind LASER's bitext mining: a pair's
cosine divided by how well its two sides fit other pairs of the same language, so a score says
"this translation fits this caption better than the others do".

    margin(s, t) = cos(s, t) / ((mean of cos(s, its k nearest reference translations)
                                 + mean of cos(t, its k nearest reference sources)) / 2)

The reference is a fixed sample of the language's pairs: the ``reference_pairs`` with the
smallest ``reference_rank`` (sha256 of the seed, the language and the source text), so it
depends on the data alone, never on batching, bundle order or worker count. A pair that is in
the reference is not its own neighbour (``own``): counting itself would lower its margin by
about a quarter against the pairs outside it. Above 1: the pair fits better than its
neighbourhoods do. Used by the score stage (``score.margin``) and ``polycap calibrate``.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Optional, Sequence

import numpy as np

from polycap.transforms.encoders import cosine_rows

K = 4  # neighbours per side (LASER's bitext mining uses 4)
_BLOCK = 1024  # query rows whose similarities to the whole reference are computed at once


def reference_rank(seed: int, lang: str, source_text: str) -> str:
    """The rank that chooses a language's reference pairs (smallest first): a hex digest, the
    same in every process (Python's ``hash`` is salted per process)."""
    return hashlib.sha256(f"{seed}:{lang}:{source_text}".encode("utf-8")).hexdigest()


def reference_order(seed: int, lang: str, source_texts: Sequence[str]) -> list[int]:
    """Indices of ``source_texts`` in reference order (``reference_rank``, ties by index): the
    first ``reference_pairs`` of them are the reference."""
    ranks = [reference_rank(seed, lang, text) for text in source_texts]
    return sorted(range(len(ranks)), key=lambda index: (ranks[index], index))


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


class Reference(NamedTuple):
    """One language's reference: its source texts (to find a pair's own row) and the unit
    embeddings of its sources and translations, row i of each from pair i. Made by ``of``."""

    source_texts: tuple
    sources: np.ndarray
    targets: np.ndarray
    row_of: dict  # source text -> its row, built once: the score stage asks for every pair

    @classmethod
    def of(cls, source_texts: Sequence[str], sources: np.ndarray, targets: np.ndarray) -> "Reference":
        texts = tuple(source_texts)
        return cls(texts, unit(sources), unit(targets), {text: row for row, text in enumerate(texts)})

    def own_rows(self, source_texts: Sequence[str]) -> np.ndarray:
        """Per text, the row of the reference pair with that source text, or -1."""
        return np.array([self.row_of.get(text, -1) for text in source_texts], dtype=np.int64)


def _mean_top_k(queries: np.ndarray, pool: np.ndarray, k: int, own: np.ndarray) -> np.ndarray:
    """Mean cosine of each unit query row with its k most similar unit pool rows, leaving out
    pool row ``own[i]`` for query i (where it is not -1)."""
    found = np.empty(len(queries))
    for start in range(0, len(queries), _BLOCK):
        similar = queries[start : start + _BLOCK] @ pool.T
        rows = np.flatnonzero(own[start : start + _BLOCK] >= 0)
        similar[rows, own[start + rows]] = -np.inf
        found[start : start + _BLOCK] = np.sort(similar, axis=1)[:, -k:].mean(axis=1)
    return found


def neighbours(reference: Reference, k: int) -> int:
    """The neighbours each side is compared with: k, or fewer in a reference of k pairs or
    less (a pair in it is not its own neighbour); 0 when the reference has one pair."""
    return min(k, len(reference.source_texts) - 1)


def ratio_margin(source_vectors: np.ndarray, target_vectors: np.ndarray, reference: Reference,
                 k: int = K, own: Optional[np.ndarray] = None) -> np.ndarray:
    """The ratio margin of each pair (row i of ``source_vectors`` and ``target_vectors``)
    against ``reference`` (see the module docstring); ``own[i]``: the reference row of pair i
    itself, or -1 (default: none is). ``k`` is capped by ``neighbours``; the caller refuses a
    reference with none. Not finite where the neighbourhoods' mean is 0."""
    count = neighbours(reference, k)
    if count < 1:
        raise ValueError("a ratio margin needs a reference of at least 2 pairs")
    own = np.full(len(source_vectors), -1, dtype=np.int64) if own is None else np.asarray(own)
    sources, targets = unit(source_vectors), unit(target_vectors)
    neighbourhood = (_mean_top_k(sources, reference.targets, count, own)
                     + _mean_top_k(targets, reference.sources, count, own)) / 2
    cosines = cosine_rows(source_vectors, target_vectors)  # the pair's similarity, exactly
    with np.errstate(divide="ignore", invalid="ignore"):
        return cosines / neighbourhood
