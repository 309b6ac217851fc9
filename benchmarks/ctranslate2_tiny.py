"""Throughput of ``translation.provider: ctranslate2`` on this machine's CPU, with the tiny random
model the tests build (tests/tiny_translation_model.py: one layer, d_model 16). It measures
polycap's side of local translation (SentencePiece in and out, batching, CTranslate2's decoding
loop) with almost no model compute: an upper bound for this CPU, far above what an OPUS-MT-sized
model reaches here. docs/running-at-scale.md puts it beside CTranslate2's published rates.

The untrained model rarely ends a sentence, so its outputs run to about ``max_decoding_length``
target tokens, many more than a real translation of a caption: target tokens per second (the
outputs' SentencePiece pieces, counted again from the text) is the unit to compare with
published rates.

    python -m benchmarks.ctranslate2_tiny [--captions 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.conftest import MULTI30K
from tests.tiny_translation_model import build_model


def measure(captions: int, threads: int, max_decoding_length: int) -> dict:
    from polycap.transforms.providers.base import Request
    from polycap.transforms.providers.ctranslate2 import Ctranslate2Config, Ctranslate2Translate

    texts = []
    for path in sorted(MULTI30K.glob("test_*.en")):
        texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = texts[:captions]
    with tempfile.TemporaryDirectory() as directory:
        model = build_model(Path(directory), seed=0)
        cfg = Ctranslate2Config(
            models={"de": str(model)}, device="cpu", compute_type="int8", beam_size=4,
            max_decoding_length=max_decoding_length, intra_threads=threads,
        )
        with Ctranslate2Translate(cfg) as provider:
            provider.translate([Request("en", "de", texts[0])])  # the model loads here
            started = time.perf_counter()
            answers = provider.translate([Request("en", "de", text) for text in texts])
            seconds = time.perf_counter() - started
        import sentencepiece

        pieces = sentencepiece.SentencePieceProcessor(model_file=str(model / "target.spm"))
        translated = [answer.translation for answer in answers if answer.translation is not None]
        target_tokens = sum(len(pieces.encode(text)) for text in translated)
    return {
        "captions": len(texts),
        "translated": len(translated),
        "threads": threads,
        "compute_type": "int8",
        "beam_size": 4,
        "seconds": round(seconds, 2),
        "target_tokens_per_caption": round(target_tokens / len(translated), 1),
        "captions_per_second": round(len(texts) / seconds, 1),
        "source_characters_per_second": round(sum(map(len, texts)) / seconds),
        "target_tokens_per_second": round(target_tokens / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ctranslate2_tiny")
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-decoding-length", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(measure(args.captions, args.threads, args.max_decoding_length), indent=1))


if __name__ == "__main__":
    main()
