"""The translation benchmark: the AWS provider against a local server with a fixed latency.

The bound: a worker holding ``max_concurrency`` requests in flight, each taking ``latency``
seconds, answers at most ``max_concurrency / latency`` requests a second (one request is one
caption into one language). Two measurements, each in its own process:

- ``provider``: the provider alone (``transforms.providers.make_provider``), one ``translate``
  call with every request;
- ``stage``: ``transforms.translate.TranslateCaptions`` alone on the in-process FnApiRunner, an
  empty memory and a fresh translation store, so every pair goes to the provider.

The served rate is the server's count of answers over the time from its first request's
arrival to its last answer, so neither process start-up nor pipeline construction counts.
Skipped, with the reason, when polycap has no AWS provider (``translation.provider: aws``).

    python -m benchmarks.translation {provider,stage} --corpus DIR --endpoint URL \
        --max-concurrency 16 --result FILE
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

LANGUAGES = ("de", "fr")


def missing_provider() -> Optional[str]:
    """Why polycap's AWS provider cannot be benchmarked here, or None when it can."""
    try:
        from polycap.transforms.providers import OnlineProvider
        from polycap.transforms.translate import TranslationConfig  # noqa: F401
    except ImportError as error:
        return f"the translation config cannot be imported: {error}"
    if "aws" not in {member.value for member in OnlineProvider}:
        return "OnlineProvider has no 'aws' (translation.provider: aws)"
    try:
        translation_config("http://127.0.0.1:1", 1)
    except Exception as error:  # pydantic's ValidationError, or a ConfigError
        return f"the config does not take translation.aws.endpoint_url / max_concurrency: {error}"
    try:
        from polycap.transforms.providers import make_provider  # noqa: F401
        from polycap.transforms.providers.base import Request  # noqa: F401
    except ImportError as error:
        return f"transforms.providers (make_provider, base.Request) cannot be imported: {error}"
    return None


def translation_config(endpoint: str, max_concurrency: int, batch_size: Optional[int] = None):
    from polycap.transforms.translate import TranslationConfig

    raw = {
        "provider": "aws",
        "aws": {"endpoint_url": endpoint, "max_concurrency": max_concurrency, "region": "us-east-1"},
    }
    if batch_size:
        raw["batch_size"] = batch_size
    return TranslationConfig.model_validate(raw)


def captions(corpus: Path, count: int) -> list[str]:
    from polycap.transforms.text import normalise

    lines = (corpus / "bench.en").read_text(encoding="utf-8").splitlines()[:count]
    return [normalise(line) for line in lines]


def run_provider(cfg, texts: list[str]) -> dict:
    from polycap.transforms.providers import make_provider
    from polycap.transforms.providers.base import Request

    requests = [Request("en", lang, text) for text in texts for lang in LANGUAGES]
    with make_provider(cfg, cfg.provider) as provider:
        started = time.perf_counter()
        outcomes = provider.translate(requests)
        seconds = time.perf_counter() - started
    translated = sum(outcome.translation is not None for outcome in outcomes)
    errors = sorted({outcome.error for outcome in outcomes if outcome.translation is None})[:3]
    return {"requests": len(requests), "translated": translated, "seconds": seconds, "errors": errors}


def run_stage(cfg, texts: list[str]) -> dict:
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from polycap.transforms.records import Caption, MemoryEntry, Pair
    from polycap.transforms.translate import TranslateCaptions

    pairs = [
        Pair.for_language(Caption(f"bench:{index}", "multi30k", None, None, "en", text), lang)
        for index, text in enumerate(texts, start=1)
        for lang in LANGUAGES
    ]
    parameters = inspect.signature(TranslateCaptions.__init__).parameters
    store = tempfile.mkdtemp(prefix="polycap-bench-store-")
    extra = {}
    if "store_root" in parameters:
        extra["store_root"] = store
    if "run_id" in parameters:
        extra["run_id"] = "bench"
    if "languages" in parameters:
        extra["languages"] = LANGUAGES

    def counted(name):
        counter = Metrics.counter("bench", name)

        def count(row):
            counter.inc()
            return row

        return count

    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    memory = pipeline | "NoMemory" >> beam.Create([]).with_output_types(MemoryEntry)
    out = (
        pipeline
        | "Pairs" >> beam.Create(pairs).with_output_types(Pair)
        | "Translate" >> TranslateCaptions(cfg, memory, **extra)
    )
    for name in ("kept", "rejected", "failed"):
        rows = getattr(out, name, None)
        if rows is not None:
            rows | f"Count {name}" >> beam.Map(counted(name))
    started = time.perf_counter()
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    counts = {
        counter.key.metric.name: counter.committed
        for counter in result.metrics().query(MetricsFilter().with_namespace("bench"))["counters"]
    }
    return {
        "requests": len(pairs),
        "translated": counts.get("kept", 0),
        "rejected": counts.get("rejected", 0),
        "failed": counts.get("failed", 0),
        "seconds": seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.translation")
    parser.add_argument("mode", choices=["provider", "stage"])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, help="translation.batch_size (default: polycap's)")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    reason = missing_provider()
    if reason:
        Path(args.result).write_text(json.dumps({"skipped": reason}), encoding="utf-8")
        return 0
    cfg = translation_config(args.endpoint, args.max_concurrency, args.batch_size)
    texts = captions(Path(args.corpus), args.captions)
    result = run_provider(cfg, texts) if args.mode == "provider" else run_stage(cfg, texts)
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
