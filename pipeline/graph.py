"""Assemble polycap's pipeline from its config: read -> clean -> deduplicate -> PROPN filter ->
sample -> translate -> score -> keep -> write. Every stage's rejected and failed rows flow to
the output, so each caption read ends in exactly one of accepted, rejected or failed."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.config import Config
from pipeline.errors import ConfigError
from transforms import propn, score
from transforms.clean import CleanCaptions
from transforms.deduplicate import DropDuplicateCaptions
from transforms.keep import KeepPairs
from transforms.memory import ReadTranslationMemory
from transforms.propn import DropProperNounCaptions
from transforms.read import ReadCaptions
from transforms.records import Failed, Rejected
from transforms.sample import SampleCaptions
from transforms.score import ScorePairs
from transforms.translate import TranslateCaptions
from transforms.write import WriteCounts, WriteOutputs


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


def _flatten(label: str, pcollections, pipeline, element_type):
    present = [pcollection for pcollection in pcollections if pcollection is not None]
    return present | label >> beam.Flatten(pipeline=pipeline).with_output_types(element_type)


def _count(label: str, name: str, pcollection):
    return pcollection | label >> beam.combiners.Count.Globally() | f"{label}Named" >> beam.Map(
        lambda count: (name, count)
    )


def build(pipeline: beam.Pipeline, cfg: Config, output: str) -> None:
    """Add every stage of the run described by ``cfg`` to ``pipeline``, writing under ``output``."""
    read = pipeline | "Read" >> ReadCaptions(cfg.inputs, cfg.source_lang)
    cleaned = read.kept | "Clean" >> CleanCaptions(cfg.clean)
    unique = cleaned.kept | "Deduplicate" >> DropDuplicateCaptions()
    tagged = unique.kept | "DropProperNouns" >> DropProperNounCaptions(cfg.propn)
    pairs = tagged.kept | "Sample" >> SampleCaptions(cfg.sample, cfg.languages)
    memory = pipeline | "ReadMemory" >> ReadTranslationMemory(
        cfg.translation.memory, cfg.source_lang, cfg.languages
    )
    translated = pairs | "Translate" >> TranslateCaptions(cfg.translation, memory)
    scored = translated.kept | "Score" >> ScorePairs(cfg.score)
    kept = scored.kept | "Keep" >> KeepPairs(cfg.keep)

    stages = (read, cleaned, unique, tagged, translated, scored, kept)
    rejected = _flatten("AllRejected", [stage.rejected for stage in stages], pipeline, Rejected)
    failed = _flatten("AllFailed", [stage.failed for stage in stages], pipeline, Failed)
    (kept.kept, rejected, failed) | "Write" >> WriteOutputs(
        output, cfg.languages, cfg.output.num_shards
    )

    read_rows = (read.kept, read.rejected, read.failed) | "AllRead" >> beam.Flatten()
    sampled = (
        pairs
        | "SampledLanguage" >> beam.Map(lambda pair: pair.target_lang)
        | "CountSampled" >> beam.combiners.Count.PerElement()
        | "SampledToDict" >> beam.combiners.ToDict()
        | "SampledNamed" >> beam.Map(lambda counts: ("sampled", counts))
    )
    languages = pipeline | "Languages" >> beam.Create([("languages", list(cfg.languages))])
    (
        (
            _count("CountRead", "read", read_rows),
            _count("CountEligible", "eligible", tagged.kept),
            sampled,
            languages,
        )
        | "AllCounts" >> beam.Flatten()
        | "WriteCounts" >> WriteCounts(output)
    )
