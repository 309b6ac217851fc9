"""Assemble polycap's pipeline from its config: read -> clean -> deduplicate -> PROPN filter
(of the captions sampling can still choose) -> sample -> translate -> score -> keep -> write;
with ``sample.fill``, sample -> translate -> score -> keep once per round, then the fill's cut.
Every stage returns a ``StageOutput``; its rejected and failed rows flow to the output and its
counts to ``audit/counts.json``, so each caption read ends in exactly one of accepted, rejected
or failed, and the audit can check that it did."""

from __future__ import annotations

import functools
import logging
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from polycap.pipeline import filesystems
from polycap.pipeline.config import Config
from polycap.transforms import claims, encoders, pos_tagger, store
from polycap.transforms.clean import CleanCaptions
from polycap.transforms.deduplicate import DropDuplicateCaptions
from polycap.transforms.errors import ConfigError
from polycap.transforms.keep import KeepPairs
from polycap.transforms.memory import ReadTranslationMemory, check_memories
from polycap.transforms.fill import FillQuota, Rounds
from polycap.transforms.outputs import Constant, StageOutput
from polycap.transforms.propn import DropProperNounCaptions
from polycap.transforms.providers import OnlineProvider, ctranslate2, google_cloud
from polycap.transforms.read import ReadCaptions, check_inputs
from polycap.transforms.records import Failed, Pair, Rejected
from polycap.transforms.key_filter import key_filter
from polycap.transforms.sample import RankedSample, SampleCaptions, languages_of, pair_rank
from polycap.transforms.score import ScorePairs
from polycap.transforms.translate import TranslateCaptions, needed_memory, pair_key
from polycap.transforms.write import COUNTS_FILE, DRY_RUN_FILE, WriteCounts, WriteOutputs


log = logging.getLogger(__name__)


def check_before_running(cfg: Config, workers_here: bool = True) -> None:
    """Fail fast, naming the key, on what validation of the YAML alone cannot see: inputs
    that match no file or whose caption ids would collide, a translation memory that covers no
    configured language (and, as a warning, languages no memory covers), a spaCy model that is
    not installed, languages the scorer does not cover, a provider's missing credentials or
    models. ``workers_here``: the workers run on this machine, so its files and devices are
    theirs."""
    check_inputs(cfg.inputs)
    covered = check_memories(cfg.translation.memory, cfg.source_lang, cfg.languages)
    translation = cfg.translation
    uncovered = [lang for lang in cfg.languages if covered is not None and lang not in covered]
    if uncovered:
        log.warning(
            "no translation memory covers %s: every pair of them goes to its language's provider "
            "(none: it fails no_translation)",
            ", ".join(f"{lang} ({translation.provider_for(lang).value})" for lang in uncovered),
        )
    pos_tagger.check_model(cfg.propn.model)
    encoders.check_languages(cfg.score, cfg.source_lang, cfg.languages)
    encoders.check_device(cfg.score)
    online = translation.languages_by_provider(cfg.languages)
    if OnlineProvider.AWS in online:
        _check_aws_credentials()
    if OnlineProvider.GOOGLE_CLOUD in online:
        google_cloud.check_credentials(translation.google_cloud)
    if OnlineProvider.CTRANSLATE2 in online:
        if translation.ctranslate2 is None:
            raise ConfigError(
                "translation.ctranslate2: required where a language's provider is ctranslate2 "
                "(models: {lang: DIR}, or model: DIR with target_prefix)"
            )
        ctranslate2.check_config(translation.ctranslate2, online[OnlineProvider.CTRANSLATE2], workers_here)


def _check_aws_credentials() -> None:
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise ConfigError(
            "translation.provider: aws needs credentials from boto3's default chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, or an instance role); none found"
        )


def _early_stages(pipeline, cfg: Config, threads: int) -> tuple:
    """Read, clean, deduplicate, PROPN filter: the StageOutputs up to the eligible captions."""
    read = pipeline | "Read" >> ReadCaptions(cfg.inputs, cfg.source_lang)
    cleaned = read.kept | "Clean" >> CleanCaptions(cfg.clean)
    unique = cleaned.kept | "Deduplicate" >> DropDuplicateCaptions()
    eligible = unique.kept | "DropProperNouns" >> DropProperNounCaptions(
        cfg.propn, cfg.sample, cfg.languages, threads=threads
    )
    return read, cleaned, unique, eligible


def _run_facts(pipeline, cfg: Config, store_root: str, run_id: str):
    providers = {lang: cfg.translation.provider_for(lang) for lang in cfg.languages}
    return pipeline | "RunFacts" >> Constant(
        [
            ("languages", list(cfg.languages)),
            ("run_id", run_id),
            ("store", store_root),
            # Each language's provider and its price: the dry run's and the audit's bill.
            ("providers", {
                lang: {"provider": provider.value, "price_per_million_chars": cfg.translation.price_of(provider)}
                for lang, provider in providers.items()
            }),
            ("max_characters", cfg.translation.max_characters),
        ]
    )


def model_threads(options: PipelineOptions) -> int:
    """Batches a worker process runs a model on at once (tagging, scoring; ``batch_threads.py``):
    where the workers run on this machine, its cores shared out among the bundles the local
    runner runs at once (one in memory, ``direct_num_workers`` threads or processes otherwise),
    so a core no bundle uses does not idle; 1 on a cluster, whose runners already give each core
    its own worker process (Dataflow, Flink and Spark's portable workers). The results do not
    depend on it: only the time does."""
    if not filesystems.workers_run_here(options):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    direct = options.view_as(DirectOptions)
    bundles = 1 if direct.direct_running_mode == "in_memory" else direct.direct_num_workers or cores
    return max(1, cores // bundles)


class _Stages:
    """Makes the translate, score and keep stages of a run; quota fill makes one of each per
    round, labelled with the round."""

    def __init__(self, cfg: Config, memory, store_root: str, run_id: str, dry_run: bool,
                 threads: int = 1):
        self._cfg = cfg
        self._threads = threads
        self._memory = memory
        self._store_root = store_root
        self._run_id = run_id
        self._dry_run = dry_run
        self._margin_reference = None
        # The translate stages' filter of the keys their pairs can have (key_filter.py), and the
        # memory's entries that pass it, keyed once for them all (share_key_filter); None: each
        # stage builds its own from its pairs.
        self._pair_keys = None
        self._keyed_memory = None

    def share_key_filter(self, pair_keys) -> None:
        """Every later translate stage looks up its pairs through ``pair_keys``, which covers
        them all; the memory's entries that pass it are keyed once, here, for them all."""
        self._pair_keys = pair_keys
        self._keyed_memory = needed_memory(self._memory, pair_keys, "Translate[memory]")

    def translate(self, pairs, label: str = "", spent_before=None) -> tuple[StageOutput, object]:
        """(StageOutput, the singleton of characters funded so far, or None without a cap)."""
        cfg = self._cfg
        stage = TranslateCaptions(
            cfg.translation, self._memory if self._keyed_memory is None else None, self._store_root,
            self._run_id, cfg.languages, dry_run=self._dry_run,
            rank_of=functools.partial(pair_rank, cfg.sample), spent_before=spent_before,
            pairs_expected=cfg.sample.per_language * len(cfg.languages),
            pair_keys=self._pair_keys, keyed_memory=self._keyed_memory,
        )
        return pairs | f"Translate{label}" >> stage, stage.spent

    def score_and_keep(self, translated: StageOutput, label: str = "") -> tuple[StageOutput, StageOutput]:
        # Scoring groups the pairs into buckets by source text, which also spreads the provider
        # step's output (from at most PROVIDER_BUCKETS groups) and keeps network-bound calls and
        # CPU/GPU-bound scoring in separate stages. The buckets are sized from the config alone.
        # With score.margin, quota fill's rounds score against round 1's reference.
        cfg = self._cfg
        pairs_expected = cfg.sample.per_language * len(cfg.languages)
        score = ScorePairs(cfg.score, pairs_expected=pairs_expected, reference=self._margin_reference,
                           threads=max(1, self._threads // cfg.score.threads))
        scored = translated.kept | f"Score{label}" >> score
        self._margin_reference = score.reference
        return scored, scored.kept | f"Keep{label}" >> KeepPairs(cfg.keep, cfg.score.margin)


def _sample_to_keep(eligible, cfg: Config, stages: _Stages) -> tuple:
    """Sample, translate, score, keep: their StageOutputs, the last one's kept accepted."""
    sampled = eligible | "Sample" >> SampleCaptions(cfg.sample, cfg.languages)
    translated, _ = stages.translate(sampled.kept)
    return (sampled, translated, *stages.score_and_keep(translated))


def _fill_rounds(eligible, cfg: Config, stages: _Stages) -> tuple:
    """Quota fill (fill.py): the rounds' StageOutputs and the fill's, whose kept is accepted.
    Each round counts its translation look-ups under the same names; ``WriteCounts`` adds them
    up."""
    ranked = eligible | "RankCandidates" >> RankedSample(cfg.sample, cfg.languages, cfg.sample.drawn_at_most)
    rounds = Rounds(cfg.sample, cfg.languages, ranked)

    def candidate_keys(keyed_sample):
        key, ranked_captions = keyed_sample
        for lang in languages_of(key, cfg.languages):
            for _, caption in ranked_captions:
                yield pair_key(Pair.for_language(caption, lang))

    # One filter for every round, from every caption the fill may draw: a round's own pairs
    # depend on the rounds before. So the memory's entries that pass it are the same for every
    # round, and are keyed once.
    stages.share_key_filter(key_filter(
        # Declared: Beam would otherwise infer str from the function's bytecode (20 ms a build).
        ranked | "CandidateKeys" >> beam.FlatMap(candidate_keys).with_output_types(str),
        cfg.sample.drawn_at_most * len(cfg.languages), "CandidateKeyFilter",
    ))
    outputs, accepted, spent = [], [], None
    for number in range(1, cfg.sample.fill_rounds + 1):
        label = f"[{number}]"
        pairs, windows = rounds.draw(number)
        translated, spent = stages.translate(pairs, label, spent)
        scored, kept = stages.score_and_keep(translated, label)
        rounds.record(number, windows, kept.kept, translated.failed)
        outputs += [translated, scored, kept]
        accepted.append(kept.kept)
    filled = accepted | "AllAccepted" >> beam.Flatten() | "FillQuota" >> FillQuota(
        cfg.sample, cfg.languages, rounds
    )
    return (*outputs, filled)


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
    if cfg.translation.languages_by_provider(cfg.languages):
        claims.check_store(store_root)
    threads = model_threads(pipeline.options)
    early = _early_stages(pipeline, cfg, threads)
    eligible = early[-1].kept
    memory = pipeline | "ReadMemory" >> ReadTranslationMemory(
        cfg.translation.memory, cfg.source_lang, cfg.languages
    )
    stages = _Stages(cfg, memory.kept, store_root, run_id, dry_run, threads)
    facts = _run_facts(pipeline, cfg, store_root, run_id)
    if dry_run:
        # With quota fill, the estimate is that of its first round: per_language per language.
        sampled = eligible | "Sample" >> SampleCaptions(cfg.sample, cfg.languages)
        translated, _ = stages.translate(sampled.kept)
        every = (*early, sampled, translated)
        counts = (*[stage.counts for stage in every if stage.counts], facts) | "AllCounts" >> beam.Flatten()
        counts | "WriteEstimate" >> WriteCounts(output, DRY_RUN_FILE)
        return
    later = _fill_rounds(eligible, cfg, stages) if cfg.sample.fill else _sample_to_keep(eligible, cfg, stages)
    every = (*early, *later)
    rejected = _flatten("AllRejected", [stage.rejected for stage in every], pipeline, Rejected)
    failed = _flatten("AllFailed", [stage.failed for stage in every], pipeline, Failed)
    (later[-1].kept, rejected, failed) | "Write" >> WriteOutputs(
        output, cfg.languages, cfg.output.num_shards
    )
    counts = (*[stage.counts for stage in every if stage.counts], facts) | "AllCounts" >> beam.Flatten()
    counts | "WriteCounts" >> WriteCounts(output, COUNTS_FILE)
