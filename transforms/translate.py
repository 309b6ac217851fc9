"""Translate sampled captions: the translation memory first, then (later) an online provider.

Pairs and memory entries meet on ``(source_lang, target_lang, match_key(text))`` in one
CoGroupByKey, so each distinct text is looked up once however many captions share it, and the
memory never has to fit one worker. Where the memory holds several translations of one text the
smallest string wins, so the choice is deterministic. A pair no configured provider can translate
ends in ``failed`` with reason ``no_translation``.
"""

from __future__ import annotations

import enum
from typing import Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.config import TranslationConfig
from transforms.clean import match_key
from transforms.outputs import FAILED, StageOutput
from transforms.records import Pair, Stage, fail

MEMORY_PROVIDER = "memory"


class Reason(str, enum.Enum):
    NO_TRANSLATION = "no_translation"


def lookup_key(source_lang: str, target_lang: str, text: str) -> str:
    return f"{source_lang}\t{target_lang}\t{match_key(text)}"


class _LookUpFn(beam.DoFn):
    def __init__(self, provider_names: str):
        self._provider_names = provider_names
        self._hits = Metrics.counter(Stage.TRANSLATE.value, "memory_hits")
        self._misses = Metrics.counter(Stage.TRANSLATE.value, Reason.NO_TRANSLATION.value)

    def process(self, joined):
        _, grouped = joined
        pairs = grouped["pairs"]
        if not pairs:
            return
        translations = grouped["memory"]
        if translations:
            translation = min(translations)
            for pair in pairs:
                self._hits.inc()
                yield pair._replace(translated_text=translation, provider=MEMORY_PROVIDER)
            return
        for pair in pairs:
            self._misses.inc()
            yield beam.pvalue.TaggedOutput(
                FAILED,
                fail(
                    pair,
                    Stage.TRANSLATE,
                    Reason.NO_TRANSLATION,
                    f"no translation into {pair.target_lang} from: {self._provider_names}",
                ),
            )


class TranslateCaptions(beam.PTransform):
    """PCollection[Pair] (untranslated) -> StageOutput(kept=Pair with ``translated_text`` and
    ``provider``, failed=Failed with stage ``translate``, reason ``no_translation``).

    ``memory`` is the PCollection[MemoryEntry] of ``ReadTranslationMemory``."""

    def __init__(self, cfg: TranslationConfig, memory: beam.PCollection):
        super().__init__()
        self._cfg = cfg
        self._memory = memory

    def expand(self, pairs):
        keyed_pairs = pairs | "KeyPairs" >> beam.Map(
            lambda pair: (lookup_key(pair.source_lang, pair.target_lang, pair.source_text), pair)
        ).with_output_types(Tuple[str, Pair])
        keyed_memory = self._memory | "KeyMemory" >> beam.Map(
            lambda entry: (
                lookup_key(entry.source_lang, entry.target_lang, entry.source_text),
                entry.translated_text,
            )
        ).with_output_types(Tuple[str, str])
        providers = ", ".join([MEMORY_PROVIDER] if self._cfg.memory else []) or "no provider"
        results = (
            {"pairs": keyed_pairs, "memory": keyed_memory}
            | "JoinMemory" >> beam.CoGroupByKey()
            | "LookUp" >> beam.ParDo(_LookUpFn(providers)).with_outputs(FAILED, main="kept")
        )
        return StageOutput(kept=results.kept, failed=results[FAILED])
