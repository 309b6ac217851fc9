"""Assemble polycap's pipeline from its config: read -> clean -> deduplicate -> PROPN filter
(of the captions sampling can still choose) -> sample -> translate -> score -> keep -> write.
Every stage returns a ``StageOutput``; its rejected and failed rows flow to the output and its
counts to ``audit/counts.json``, so each caption read ends in exactly one of accepted, rejected
or failed, and the audit can check that it did."""

from __future__ import annotations

import logging
from typing import NamedTuple

import apache_beam as beam

from polycap.pipeline.config import Config
from polycap.transforms import claims, encoders, pos_tagger, store
from polycap.transforms.clean import CleanCaptions
from polycap.transforms.deduplicate import DropDuplicateCaptions
from polycap.transforms.errors import ConfigError
from polycap.transforms.keep import KeepPairs
from polycap.transforms.memory import ReadTranslationMemory, check_memories
from polycap.transforms.outputs import StageOutput
from polycap.transforms.propn import DropProperNounCaptions
from polycap.transforms.providers import OnlineProvider
from polycap.transforms.read import ReadCaptions, check_inputs
from polycap.transforms.records import Failed, Rejected
from polycap.transforms.sample import SampleCaptions
from polycap.transforms.score import ScorePairs
from polycap.transforms.translate import TranslateCaptions
from polycap.transforms.write import COUNTS_FILE, DRY_RUN_FILE, WriteCounts, WriteOutputs


log = logging.getLogger(__name__)


def check_before_running(cfg: Config) -> None:
    """Fail fast, naming the key, on what validation of the YAML alone cannot see: inputs
    that match no file or whose caption ids would collide, a translation memory that covers no
    configured language (and, as a warning, languages no memory covers), a spaCy model that is
    not installed, languages the scorer does not cover."""
    check_inputs(cfg.inputs)
    covered = check_memories(cfg.translation.memory, cfg.source_lang, cfg.languages)
    uncovered = [lang for lang in cfg.languages if covered is not None and lang not in covered]
    if uncovered:
        then = (
            "every pair of it fails no_translation (translation.provider: none)"
            if cfg.translation.provider is OnlineProvider.NONE
            else f"every pair of it goes to {cfg.translation.provider.value}"
        )
        log.warning("no translation memory covers %s: %s", ", ".join(uncovered), then)
    pos_tagger.check_model(cfg.propn.model)
    encoders.check_languages(cfg.score, cfg.source_lang, cfg.languages)
    encoders.check_device(cfg.score)
    if cfg.translation.provider is OnlineProvider.AWS:
        _check_aws_credentials()


def _check_aws_credentials() -> None:
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise ConfigError(
            "translation.provider: aws needs credentials from boto3's default chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, or an instance role); none found"
        )


class _Translated(NamedTuple):
    stages: tuple  # the StageOutput of every stage so far, in order
    counts: tuple  # PCollection[(name, value)] of every stage that counted, and the run's facts


def _read_to_translated(pipeline, cfg: Config, store_root: str, run_id: str, dry_run: bool):
    """Every stage up to and including translation."""
    read = pipeline | "Read" >> ReadCaptions(cfg.inputs, cfg.source_lang)
    cleaned = read.kept | "Clean" >> CleanCaptions(cfg.clean)
    unique = cleaned.kept | "Deduplicate" >> DropDuplicateCaptions()
    eligible = unique.kept | "DropProperNouns" >> DropProperNounCaptions(
        cfg.propn, cfg.sample, cfg.languages
    )
    sampled = eligible.kept | "Sample" >> SampleCaptions(cfg.sample, cfg.languages)
    memory = pipeline | "ReadMemory" >> ReadTranslationMemory(
        cfg.translation.memory, cfg.source_lang, cfg.languages
    )
    translated = sampled.kept | "Translate" >> TranslateCaptions(
        cfg.translation, memory.kept, store_root, run_id, dry_run=dry_run
    )
    facts = pipeline | "RunFacts" >> beam.Create(
        [
            ("languages", list(cfg.languages)),
            ("run_id", run_id),
            ("store", store_root),
            ("provider", cfg.translation.provider.value),
            ("price_per_million_chars", cfg.translation.price),
        ]
    )
    stages = (read, cleaned, unique, eligible, sampled, translated)
    return _Translated(stages, (*[stage.counts for stage in stages if stage.counts], facts))


def _flatten(label: str, pcollections, pipeline, element_type):
    present = [pcollection for pcollection in pcollections if pcollection is not None]
    return present | label >> beam.Flatten(pipeline=pipeline).with_output_types(element_type)


def build(
    pipeline: beam.Pipeline, cfg: Config, output: str, run_id: str, dry_run: bool = False
) -> None:
    """Add every stage of the run described by ``cfg`` to ``pipeline``, writing under ``output``.

    ``dry_run``: run up to the translation lookup only and write ``DRY_RUN_FILE``: what the run
    would need and pay, per language; no provider is called and no shard is written."""
    store_root = store.store_root(cfg.translation.store, output)
    if cfg.translation.provider is not OnlineProvider.NONE:
        claims.check_store(store_root)
    so_far = _read_to_translated(pipeline, cfg, store_root, run_id, dry_run)
    counts = so_far.counts | "AllCounts" >> beam.Flatten()
    if dry_run:
        counts | "WriteEstimate" >> WriteCounts(output, DRY_RUN_FILE)
        return
    translated: StageOutput = so_far.stages[-1]
    # The provider step emits from at most PROVIDER_BUCKETS groups; spread its output before
    # the encoder, and keep network-bound calls and CPU/GPU-bound scoring in separate stages.
    scored = (
        translated.kept
        | "SpreadTranslated" >> beam.Reshuffle()
        | "Score" >> ScorePairs(cfg.score)
    )
    kept = scored.kept | "Keep" >> KeepPairs(cfg.keep)
    stages = (*so_far.stages, scored, kept)
    rejected = _flatten("AllRejected", [stage.rejected for stage in stages], pipeline, Rejected)
    failed = _flatten("AllFailed", [stage.failed for stage in stages], pipeline, Failed)
    (kept.kept, rejected, failed) | "Write" >> WriteOutputs(
        output, cfg.languages, cfg.output.num_shards
    )
    if kept.counts is not None:  # the per-language thresholds of keep.memory_share
        counts = (counts, kept.counts) | "WithKeepCounts" >> beam.Flatten()
    counts | "WriteCounts" >> WriteCounts(output, COUNTS_FILE)
