"""Assemble polycap's pipeline from its config: read -> clean -> deduplicate -> PROPN filter
(of the captions sampling can still choose) -> sample -> translate -> score -> keep -> write. Every stage's rejected and failed rows flow to
the output, so each caption read ends in exactly one of accepted, rejected or failed."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from polycap.pipeline.config import Config, OnlineProvider
from polycap.transforms.errors import ConfigError
from polycap.transforms import propn, score
from polycap.transforms.clean import CleanCaptions
from polycap.transforms.deduplicate import DropDuplicateCaptions
from polycap.transforms.keep import KeepPairs
from polycap.transforms.memory import ReadTranslationMemory
from polycap.transforms.preselect import TagSampleCandidates
from polycap.transforms.propn import DropProperNounCaptions
from polycap.transforms.read import ReadCaptions
from polycap.transforms.records import Failed, Rejected
from polycap.transforms.sample import SampleCaptions
from polycap.transforms.score import ScorePairs
from polycap.transforms.translate import TranslateCaptions
from polycap.transforms import store
from polycap.transforms.write import COUNTS_FILE, DRY_RUN_FILE, WriteCounts, WriteOutputs


def check_before_running(cfg: Config) -> None:
    """Fail fast, naming the key, on what validation of the YAML alone cannot see: inputs
    that match no file, a spaCy model that is not installed, languages the scorer does not cover."""
    for index, source in enumerate(cfg.inputs):
        try:
            matched = FileSystems.match([source.path])[0].metadata_list
        except Exception as error:  # each filesystem raises its own errors
            raise ConfigError(f"inputs[{index}].path: cannot list {source.path!r}: {error}") from None
        if not matched:
            raise ConfigError(f"inputs[{index}].path: no file matches {source.path!r}")
    propn.check_model(cfg.propn)
    score.check_languages(cfg.score, cfg.source_lang, cfg.languages)
    score.check_device(cfg.score)
    if cfg.translation.provider is OnlineProvider.AWS:
        _check_aws_credentials()


def _check_aws_credentials() -> None:
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise ConfigError(
            "translation.provider: aws needs credentials from boto3's default chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, or an instance role); none found"
        )


def _flatten(label: str, pcollections, pipeline, element_type):
    present = [pcollection for pcollection in pcollections if pcollection is not None]
    return present | label >> beam.Flatten(pipeline=pipeline).with_output_types(element_type)


def _count(label: str, name: str, pcollection):
    return pcollection | label >> beam.combiners.Count.Globally() | f"{label}Named" >> beam.Map(
        lambda count: (name, count)
    )


def _sum_pairs(pairs):
    return tuple(map(sum, zip(*pairs))) or (0, 0)


def _lookup_counts(lookups):
    """PCollection[Lookup] -> ("translation", {lang: {memory, store, miss, miss_characters}})."""

    def table(totals):
        by_language = {}
        for (lang, found), (count, characters) in sorted(totals):
            numbers = by_language.setdefault(
                lang, {"memory": 0, "store": 0, "miss": 0, "miss_characters": 0}
            )
            numbers[found] = count
            if found == "miss":
                numbers["miss_characters"] = characters
        return "translation", by_language

    return (
        lookups
        | "LookupKey" >> beam.Map(lambda lookup: ((lookup.target_lang, lookup.found), (1, lookup.characters)))
        | "SumLookups" >> beam.CombinePerKey(_sum_pairs)
        | "LookupTotals" >> beam.combiners.ToList()
        | "LookupTable" >> beam.Map(table)
    )


def build(
    pipeline: beam.Pipeline, cfg: Config, output: str, run_id: str, dry_run: bool = False
) -> None:
    """Add every stage of the run described by ``cfg`` to ``pipeline``, writing under ``output``.

    ``dry_run``: run up to the translation lookup only and write ``DRY_RUN_FILE``: what the run
    would need and pay, per language; no provider is called and no shard is written."""
    read = pipeline | "Read" >> ReadCaptions(cfg.inputs, cfg.source_lang)
    cleaned = read.kept | "Clean" >> CleanCaptions(cfg.clean)
    unique = cleaned.kept | "Deduplicate" >> DropDuplicateCaptions()
    if cfg.sample.preselect_margin is None:
        tagged = unique.kept | "DropProperNouns" >> DropProperNounCaptions(cfg.propn)
        untagged = pipeline | "NothingUntagged" >> beam.Create([])
    else:
        tagged = unique.kept | "DropProperNouns" >> TagSampleCandidates(
            cfg.propn, cfg.sample, cfg.languages
        )
        untagged = tagged.untagged
    pairs = tagged.kept | "Sample" >> SampleCaptions(cfg.sample, cfg.languages)
    memory = pipeline | "ReadMemory" >> ReadTranslationMemory(
        cfg.translation.memory, cfg.source_lang, cfg.languages
    )
    store_root = store.store_root(cfg.translation.store, output)
    translated = pairs | "Translate" >> TranslateCaptions(
        cfg.translation, memory, store_root, run_id, dry_run=dry_run
    )

    read_rows = (read.kept, read.rejected, read.failed) | "AllRead" >> beam.Flatten()
    sampled = (
        pairs
        | "SampledLanguage" >> beam.Map(lambda pair: pair.target_lang)
        | "CountSampled" >> beam.combiners.Count.PerElement()
        | "SampledToDict" >> beam.combiners.ToDict()
        | "SampledNamed" >> beam.Map(lambda counts: ("sampled", counts))
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
    counts = (
        _count("CountRead", "read", read_rows),
        _count("CountEligible", "eligible", (tagged.kept, untagged) | "Eligible" >> beam.Flatten()),
        _count("CountUntagged", "untagged", untagged),
        sampled,
        _lookup_counts(translated.lookups),
        facts,
    ) | "AllCounts" >> beam.Flatten()
    if dry_run:
        counts | "WriteEstimate" >> WriteCounts(output, DRY_RUN_FILE)
        return

    # The provider step emits from at most PROVIDER_BUCKETS groups; spread its output before
    # the encoder, and keep network-bound calls and CPU/GPU-bound scoring in separate stages.
    scored = (
        translated.kept
        | "SpreadTranslated" >> beam.Reshuffle()
        | "Score" >> ScorePairs(cfg.score)
    )
    kept = scored.kept | "Keep" >> KeepPairs(cfg.keep)
    stages = (read, cleaned, unique, tagged, translated, scored, kept)
    rejected = _flatten("AllRejected", [stage.rejected for stage in stages], pipeline, Rejected)
    failed = _flatten("AllFailed", [stage.failed for stage in stages], pipeline, Failed)
    (kept.kept, rejected, failed) | "Write" >> WriteOutputs(
        output, cfg.languages, cfg.output.num_shards
    )
    counts | "WriteCounts" >> WriteCounts(output, COUNTS_FILE)
