import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms.errors import ConfigError, InputError
from polycap.transforms.memory import MemoryConfig, ReadTranslationMemory, aligned_files
from polycap.transforms.records import MemoryEntry
from polycap.transforms.key_filter import key_filter
from polycap.transforms.translate import TranslateCaptions, TranslationConfig, needed_memory, pair_key
from tests.conftest import MULTI30K, local_pipeline, pair

KEY = "translation.memory[0].path"


def _parallel(pattern):
    return MemoryConfig(format="parallel_text", path=str(pattern))


def test_aligned_files_pair_each_source_with_the_targets_beside_it():
    found = aligned_files(str(MULTI30K / "*.en"), "key", "en", ["de", "cs"])
    names = sorted((f.source_path.rsplit("/", 1)[1], f.target_path.rsplit("/", 1)[1]) for f in found)
    # test_2017_* splits have no Czech side.
    assert ("test_2017_mscoco.en", "test_2017_mscoco.de") in names
    assert ("val.en", "val.cs") in names
    assert ("test_2017_mscoco.en", "test_2017_mscoco.cs") not in names


def test_misaligned_parallel_files_are_a_clear_error(tmp_path, multi30k_val):
    (tmp_path / "val.en").write_text("\n".join(multi30k_val["en"][:10]) + "\n", encoding="utf-8")
    (tmp_path / "val.de").write_text("\n".join(multi30k_val["de"][:9]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"val.en has 10 lines but .*val.de has 9"):
        aligned_files(str(tmp_path / "*.en"), KEY, "en", ["de"])


def test_a_memory_that_matches_nothing_names_its_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^translation.memory\[0\].path: no file matches"):
        aligned_files(str(tmp_path / "*.en"), KEY, "en", ["de"])


def test_memory_reads_parallel_text_and_parquet(tmp_path, multi30k_val):
    table = pa.table(
        {
            "source_lang": ["en", "en"],
            "target_lang": ["it", "ja"],
            "source_text": ["A dog runs on the beach.", "A dog runs on the beach."],
            "translated_text": ["Un cane corre sulla spiaggia.", "犬が浜辺を走る。"],
        }
    )
    pq.write_table(table, tmp_path / "memory.parquet")
    memories = [
        _parallel(MULTI30K / "val.en"),
        MemoryConfig(format="parquet", path=str(tmp_path / "*.parquet")),
    ]
    with local_pipeline() as pipeline:
        entries = (pipeline | ReadTranslationMemory(memories, "en", ["de", "it"])).kept
        assert_that(
            entries | beam.Map(lambda e: e.target_lang) | beam.combiners.Count.PerElement(),
            equal_to([("de", len(multi30k_val["en"])), ("it", 1)]),
        )


def test_memory_hits_are_translated_and_misses_fail_with_no_translation(multi30k_val):
    memory = [MemoryEntry("en", "de", multi30k_val["en"][n], multi30k_val["de"][n]) for n in range(3)]
    pairs = [
        # case, spacing and a final period do not stop a match
        pair("multi30k:val:1", multi30k_val["en"][0].lower() + ".", "de"),
        pair("multi30k:val:2", multi30k_val["en"][1], "de"),
        pair("multi30k:val:2", multi30k_val["en"][1], "fr"),  # memory has no French
        pair("coco:38", "A black Honda motorcycle parked in front of a garage.", "de"),
    ]
    cfg = TranslationConfig(memory=[_parallel("unused.en")])
    with local_pipeline() as pipeline:
        out = pipeline | "Pairs" >> beam.Create(pairs) | TranslateCaptions(
            cfg, pipeline | "Memory" >> beam.Create(memory), store_root="unused", run_id="test",
            languages=("de", "fr"),
        )
        assert_that(
            out.kept | "Translated" >> beam.Map(lambda p: (p.caption_id, p.target_lang, p.translated_text, p.provider)),
            equal_to(
                [
                    ("multi30k:val:1", "de", multi30k_val["de"][0], "memory"),
                    ("multi30k:val:2", "de", multi30k_val["de"][1], "memory"),
                ]
            ),
            label="Hits",
        )
        assert_that(
            out.failed | "Failures" >> beam.Map(lambda f: (f.caption_id, f.target_lang, f.stage, f.reason)),
            equal_to(
                [
                    ("multi30k:val:2", "fr", "translate", "no_translation"),
                    ("coco:38", "de", "translate", "no_translation"),
                ]
            ),
            label="Misses",
        )


def test_stages_sharing_one_keyed_memory_each_find_their_own_hits(multi30k_val):
    # Quota fill's rounds: one key filter of every candidate, the memory keyed once for all.
    memory = [MemoryEntry("en", "de", multi30k_val["en"][n], multi30k_val["de"][n]) for n in range(4)]
    rounds = [
        [pair("multi30k:val:1", multi30k_val["en"][0], "de"), pair("coco:38", "A black Honda motorcycle.", "de")],
        [pair("multi30k:val:3", multi30k_val["en"][2], "de")],
    ]
    cfg = TranslationConfig(memory=[_parallel("unused.en")])
    with local_pipeline() as pipeline:
        candidates = pipeline | "Candidates" >> beam.Create([pair_key(p) for pairs in rounds for p in pairs])
        pair_keys = key_filter(candidates, 8)
        keyed = needed_memory(pipeline | "Memory" >> beam.Create(memory), pair_keys)
        for number, pairs in enumerate(rounds, 1):
            out = pipeline | f"Pairs[{number}]" >> beam.Create(pairs) | f"Translate[{number}]" >> TranslateCaptions(
                cfg, None, store_root="unused", run_id="test", languages=("de",),
                pair_keys=pair_keys, keyed_memory=keyed,
            )
            assert_that(
                out.kept | f"Hits[{number}]" >> beam.Map(lambda p: (p.caption_id, p.translated_text)),
                equal_to([(p.caption_id, multi30k_val["de"][int(p.caption_id[-1]) - 1])
                          for p in pairs if p.caption_id.startswith("multi30k")]),
                label=f"Round{number}Hits",
            )
            assert_that(
                out.failed | f"Misses[{number}]" >> beam.Map(lambda f: f.caption_id),
                equal_to([p.caption_id for p in pairs if p.caption_id.startswith("coco")]),
                label=f"Round{number}Misses",
            )


def test_a_stage_takes_its_memory_one_way():
    cfg = TranslationConfig(memory=[_parallel("unused.en")])
    with pytest.raises(ValueError, match="memory, or keyed_memory"):
        TranslateCaptions(cfg, None, store_root="unused", run_id="test", languages=("de",))
    with pytest.raises(ValueError, match="memory, or keyed_memory"):
        TranslateCaptions(cfg, None, store_root="unused", run_id="test", languages=("de",), keyed_memory=object())
