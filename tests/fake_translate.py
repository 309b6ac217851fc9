"""A local HTTP server on 127.0.0.1 that speaks AWS Translate's JSON 1.1 protocol
(``TranslateText``), so the real boto3 client, its signing and its retries run against it.
moto has no Translate service.

It translates from a dictionary (real human translations), can inject throttling, 5xx answers,
refusals and a fixed latency, counts the characters it bills (those of answered requests, as AWS
does) and the requests it holds at once. The tests run it in process (``FakeTranslate``); the
translation benchmark runs it as a process and reads its counts over HTTP:

    python -m tests.fake_translate --latency 0.05 --corpus DIR   # prints "PORT <n>"
    GET /stats  -> {"count", "first_arrival", "last_answer", "max_in_flight"};  GET /reset
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen() backlog: many clients connect at once


class FakeTranslate:
    def __init__(self, translations: dict[tuple[str, str], str], latency: float = 0.0, port: int = 0):
        """``translations``: (target language, source text) -> translation; others get
        ``"<lang>: <text>"``. ``latency``: seconds from a request's arrival to its answer."""
        self.translations = translations
        self.latency = latency
        self.throttle_first = 0  # answer this many requests with ThrottlingException first
        self.fail_every = 0  # answer every n-th request with a 500
        self.refuse = set()  # target languages answered with UnsupportedLanguagePairException
        self.billed_characters = 0
        self.answered = []  # (target language, text) of each billed request
        self._lock = threading.Lock()
        self.reset_counts()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.in_flight = 0
            self.max_in_flight = 0  # the most requests the server held at once
            self.first_arrival = None  # time.monotonic() of the first request
            self.last_answer = None  # time.monotonic() of the last answer

    def stats(self) -> dict:
        with self._lock:
            return {"count": self.requests, "first_arrival": self.first_arrival,
                    "last_answer": self.last_answer, "max_in_flight": self.max_in_flight}

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FakeTranslate":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, body: dict) -> tuple[int, dict]:
        arrived = time.monotonic()
        with self._lock:
            self.requests += 1
            number = self.requests
            self.first_arrival = self.first_arrival or arrived
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(max(0.0, self.latency - (time.monotonic() - arrived)))
            return self._outcome(number, body)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.last_answer = time.monotonic()

    def _outcome(self, number: int, body: dict) -> tuple[int, dict]:
        if number <= self.throttle_first:
            return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        if self.fail_every and number % self.fail_every == 0:
            return 500, {"__type": "InternalServerException", "message": "injected"}
        target, text = body["TargetLanguageCode"], body["Text"]
        if target in self.refuse:
            return 400, {"__type": "UnsupportedLanguagePairException", "message": f"en-{target}"}
        with self._lock:
            self.billed_characters += len(text)
            self.answered.append((target, text))
        translation = self.translations.get((target, text.strip()), f"{target}: {text}")
        return 200, {
            "TranslatedText": translation,
            "SourceLanguageCode": body["SourceLanguageCode"],
            "TargetLanguageCode": target,
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its pooled connections
            # Headers and body go out as two writes; with Nagle on, the body waits for the ACK
            # of the headers, which the client delays by ~40 ms: every request would take 40 ms more.
            disable_nagle_algorithm = True

            def _send(self, status: int, answer: dict, content_type: str) -> None:
                payload = json.dumps(answer).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("X-Amz-Target") != TARGET:
                    status, answer = 400, {"__type": "UnknownOperationException", "message": ""}
                else:
                    status, answer = fake._answer(body)
                self._send(status, answer, "application/x-amz-json-1.1")

            def do_GET(self):
                path = self.path.rstrip("/")
                if path == "/reset":
                    fake.reset_counts()
                    return self._send(200, {}, "application/json")
                if path == "/stats":
                    return self._send(200, fake.stats(), "application/json")
                return self._send(404, {"message": "not found"}, "application/json")

            def log_message(self, *args):
                pass

        return Handler


def corpus_translations(corpus: Path) -> dict[tuple[str, str], str]:
    """(target language, English text) -> translation, from a benchmark corpus's ``bench.en``
    and ``bench.<lang>`` files (``benchmarks/corpus.py``)."""
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
    parser = argparse.ArgumentParser(prog="python -m tests.fake_translate")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--corpus", help="benchmark corpus directory (bench.en, bench.<lang>)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    translations = corpus_translations(Path(args.corpus)) if args.corpus else {}
    with FakeTranslate(translations, args.latency, args.port) as fake:
        print(f"PORT {fake.port}", flush=True)
        fake._thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
