"""``polycap audit --pairs``: score a parallel set that polycap did not produce with the
project's own encoder code (``polycap.transforms.encoders``) and audit it with the same report as
a run.

    polycap audit REPORT_DIR --pairs FILE_OR_GLOB --source-col en --target-col de --lang de

The set is read by ``parallel_sets.py``. A row whose source or translation is missing or blank is
rejected as ``empty`` (stage ``read``); one whose translation is its source again
(``text.is_untranslated``, keep's rule) is rejected as ``untranslated``; then keep's pair checks
(``transforms/checks.py``, all of them) reject with their reasons; the rest are accepted or,
given ``--min-similarity``, rejected as ``low_similarity``. Every row, with its score, outcome,
stage and reason, is written to ``OUTPUT/pairs.parquet`` (``PAIRS_SCHEMA``), so the set can be
filtered, not only looked at; ``sent_text`` there is what a run would send to MT for the caption
where that is not the caption (a shouting one in sentence case), as a run's output records it.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from polycap.report import audit, runfacts
from polycap.report.parallel_sets import ParallelSet, read_parallel
from polycap.transforms import encoders
from polycap.transforms.checks import ChecksConfig, Judged, PairChecks
from polycap.transforms.encoders import ScoreBackend, ScoreConfig
from polycap.transforms.errors import ConfigError, InputError
from polycap.transforms.records import Stage
from polycap.transforms.text import is_untranslated, sent_text

EMPTY = "empty"
PAIRS_FILE = "pairs.parquet"
# One row per pair of the set: what the audit judged it, and why.
PAIRS_SCHEMA = pa.schema(
    [
        ("caption_id", pa.string()),
        ("dataset", pa.string()),
        ("source_lang", pa.string()),
        ("target_lang", pa.string()),
        ("source_text", pa.string()),
        ("translated_text", pa.string()),
        # what polycap sends to MT for this caption where it is not the caption (a shouting
        # one recased: text.text_for_mt), to translate the set's rejected rows again
        ("sent_text", pa.string()),
        ("similarity", pa.float64()),
        ("outcome", pa.string()),  # accepted or rejected
        ("stage", pa.string()),  # null when accepted
        ("reason", pa.string()),  # null when accepted
    ]
)

log = logging.getLogger(__name__)


def scorer_config(spec: Optional[str], batch_size: int = 128) -> ScoreConfig:
    """``use-multilingual`` or ``sentence-transformers/<model name or local path>``."""
    if not spec:
        return ScoreConfig(batch_size=batch_size)
    backend, _, model = spec.partition("/")
    try:
        return ScoreConfig(
            backend=ScoreBackend(backend), model=model or None, batch_size=batch_size
        )
    except ValueError as error:
        known = ", ".join(item.value for item in ScoreBackend)
        raise ConfigError(
            f"--scorer {spec}: expected BACKEND[/MODEL] with BACKEND one of {known} "
            f"({str(error).splitlines()[-1].strip()})"
        ) from None


def similarities_of(pairs: ParallelSet, encoder: encoders.Encoder, cfg: ScoreConfig) -> dict:
    """{position: cosine} of every usable pair of ``pairs``."""
    valid = pairs.usable()
    if not valid:
        return {}
    cosines = encoders.similarities(
        encoder,
        [pairs.sources[i] for i in valid],
        [pairs.targets[i] for i in valid],
        batch_size=cfg.batch_size,
        sort_by_length=cfg.sort_by_length,
    )
    return {index: float(value) for index, value in zip(valid, cosines)}


def _row(pairs: ParallelSet, index: int, lang: Optional[str], similarity: Optional[float],
         decision: tuple[str, Optional[str], Optional[str]]) -> dict:
    outcome, stage, reason = decision
    return {
        "caption_id": pairs.ids[index], "dataset": pairs.datasets[index], "target_lang": lang,
        "source_text": pairs.sources[index], "translated_text": pairs.targets[index],
        "sent_text": sent_text(pairs.sources[index]) if pairs.sources[index] else None,
        "provider": None, "similarity": similarity, "propn_ratio": None,
        "outcome": outcome, "stage": stage, "reason": reason,
    }


def audited(pairs: ParallelSet, lang: str, similarities: dict, min_similarity: Optional[float],
            output: str, run: dict, checks: PairChecks, source_lang: str = "en") -> audit.Audited:
    """The audit's view of a scored parallel set: blank rows are invalid (``empty``), untranslated
    rows rejected (keep's rule, ``text.is_untranslated``), then those a pair check fails (keep's
    ``checks``, with its reason), scored rows accepted unless under ``min_similarity``."""
    scored = list(similarities)
    failed = dict(zip(scored, checks.reasons(
        [Judged(pairs.sources[i], source_lang, pairs.targets[i], lang) for i in scored]
    )))
    rows = []
    for index in range(len(pairs)):
        similarity = similarities.get(index)
        if similarity is None:
            rows.append(_row(pairs, index, None, None, (audit.REJECTED, Stage.READ.value, EMPTY)))
            continue
        if is_untranslated(pairs.sources[index], pairs.targets[index]):
            decision = (audit.REJECTED, Stage.KEEP.value, audit.UNTRANSLATED)
        elif failed[index] is not None:
            decision = (audit.REJECTED, Stage.KEEP.value, failed[index].value)
        elif min_similarity is not None and similarity < min_similarity:
            decision = (audit.REJECTED, Stage.KEEP.value, audit.LOW_SIMILARITY)
        else:
            decision = (audit.ACCEPTED, None, None)
        rows.append(_row(pairs, index, lang, similarity, decision))
    eligible = len(similarities)
    counted = {"read": len(pairs), "eligible": eligible, "languages": [lang],
               "sampled": {lang: eligible}}
    return audit.Audited(output, "pairs", rows, counted, run)


def write_pairs(output: str, rows: list[dict], source_lang: str, lang: str) -> str:
    """Write the judged ``rows`` (``audited``'s) as ``OUTPUT/pairs.parquet``; returns its path."""
    table = pa.Table.from_pylist(
        [{**row, "source_lang": source_lang, "target_lang": lang} for row in rows],
        schema=PAIRS_SCHEMA,
    )
    path = f"{output.rstrip('/')}/{PAIRS_FILE}"
    with FileSystems.create(path) as stream:
        pq.write_table(table, stream)
    return path


def audit_pairs(
    output: str,
    pattern: str,
    lang: str,
    *,
    source_lang: str = "en",
    source_col: Optional[str] = None,
    target_col: Optional[str] = None,
    dataset_col: Optional[str] = None,
    scorer: Optional[str] = None,
    min_similarity: Optional[float] = None,
    allow_uncovered: bool = False,
    load: Callable[[ScoreConfig], encoders.Encoder] = encoders.load_encoder,
) -> dict:
    """Score and check the parallel set ``pattern``; write its audit under ``output``
    (``audit/``) and its judged rows as ``OUTPUT/pairs.parquet``."""
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    cfg = scorer_config(scorer)
    missing = encoders.uncovered(cfg, source_lang, [lang])
    if missing and not allow_uncovered:
        raise ConfigError(
            f"--scorer: {cfg.backend.value} does not cover {', '.join(missing)}; its scores "
            "would say nothing about translation quality (--allow-uncovered to score anyway)"
        )
    pairs = read_parallel(
        "--pairs", pattern, source_lang, lang, source_col, target_col, dataset_col
    )
    if not len(pairs):
        raise InputError(f"--pairs {pattern}: no pairs")
    similarities = similarities_of(pairs, load(cfg), cfg)
    checks_cfg = ChecksConfig()
    run = {
        **runfacts.versions(),
        "runner": "polycap audit --pairs (no pipeline)",
        "started": runfacts.timestamp(started),
        "wall_seconds": round(time.monotonic() - clock, 3),
        "models": {"score": runfacts.score_model(cfg)},
        "config": {
            "pairs": {"path": pattern, "source_lang": source_lang, "lang": lang,
                      "source_col": source_col, "target_col": target_col,
                      "dataset_col": dataset_col},
            "score": cfg.model_dump(mode="json"),
            "keep": {"min_similarity": min_similarity, "checks": checks_cfg.model_dump(mode="json")},
        },
        "uncovered_languages": missing,
    }
    if missing:
        log.warning(
            "the scorer does not cover %s: these scores say nothing about quality",
            ", ".join(missing),
        )
    judged = audited(pairs, lang, similarities, min_similarity, output, run,
                     PairChecks(checks_cfg), source_lang)
    write_pairs(output, judged.rows, source_lang, lang)
    return audit.write_report(output, audit.analyse(judged))
