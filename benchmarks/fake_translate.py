"""A local stand-in for AWS Translate's ``TranslateText`` with a fixed latency, on 127.0.0.1.

    python -m benchmarks.fake_translate --latency 0.05 --corpus DIR

It speaks the AWS JSON 1.1 protocol that boto3's ``translate`` client uses (``POST /`` with
``X-Amz-Target: AWSShineFrontendService_20170701.TranslateText``), answers every request after
``latency`` seconds, one thread per connection, and translates from the benchmark corpus's human
translations (``bench.<lang>`` beside ``bench.en``), so an answer is a real translation in the
right language. It prints ``PORT <n>`` once listening. ``GET /stats`` returns the number of
requests answered and the times of the first request's arrival and the last answer, so a client
can compute the served throughput without its own start-up. moto has no Translate service.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TARGET = "AWSShineFrontendService_20170701.TranslateText"


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.first_arrival = None
        self.last_answer = None
        self.in_flight = 0
        self.max_in_flight = 0


def _handler(latency: float, translations: dict, stats: _Stats):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its pooled connections
        # Headers and body go out as two writes; with Nagle on, the body waits for the ACK of
        # the headers, which the client delays by ~40 ms: every request would take 40 ms more.
        disable_nagle_algorithm = True

        def log_message(self, *args):  # quiet
            pass

        def _answer(self, status: int, body: dict, content_type="application/x-amz-json-1.1"):
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", "bench")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/stats":
                with stats.lock:
                    body = {
                        "count": stats.count,
                        "first_arrival": stats.first_arrival,
                        "last_answer": stats.last_answer,
                        "max_in_flight": stats.max_in_flight,
                    }
                return self._answer(200, body, "application/json")
            if self.path.rstrip("/") == "/reset":
                with stats.lock:
                    stats.count, stats.first_arrival, stats.last_answer = 0, None, None
                    stats.max_in_flight = 0
                return self._answer(200, {}, "application/json")
            return self._answer(404, {"message": "not found"}, "application/json")

        def do_POST(self):
            arrived = time.monotonic()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with stats.lock:
                if stats.first_arrival is None:
                    stats.first_arrival = arrived
                stats.in_flight += 1
                stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                if self.headers.get("X-Amz-Target") != TARGET:
                    return self._answer(
                        400, {"__type": "UnknownOperationException", "message": "TranslateText only"}
                    )
                time.sleep(max(0.0, latency - (time.monotonic() - arrived)))
                text = body.get("Text", "")
                target = body.get("TargetLanguageCode", "")
                translated = translations.get((target, text.strip()), f"{text} [{target}]")
                self._answer(
                    200,
                    {
                        "TranslatedText": translated,
                        "SourceLanguageCode": body.get("SourceLanguageCode", ""),
                        "TargetLanguageCode": target,
                    },
                )
            finally:
                with stats.lock:
                    stats.in_flight -= 1
                    stats.count += 1
                    stats.last_answer = time.monotonic()

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen() backlog: many clients connect at once


def load_translations(corpus: Path) -> dict:
    """(target lang, English text) -> translation, from ``bench.en`` and ``bench.<lang>``."""
    english = (corpus / "bench.en").read_text(encoding="utf-8").splitlines()
    translations = {}
    for path in sorted(corpus.glob("bench.*")):
        lang = path.suffix[1:]
        if lang in ("en", "yaml"):
            continue
        for text, translated in zip(english, path.read_text(encoding="utf-8").splitlines()):
            translations[(lang, text.strip())] = translated
    return translations


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_translate")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--corpus", help="benchmark corpus directory (bench.en, bench.<lang>)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    translations = load_translations(Path(args.corpus)) if args.corpus else {}
    server = _Server(("127.0.0.1", args.port), _handler(args.latency, translations, _Stats()))
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
