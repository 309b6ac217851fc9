"""A local HTTP server that speaks AWS Translate's JSON 1.1 protocol (``TranslateText``), so the
real boto3 client, its signing and its retries run against it. It translates from a dictionary
(real human translations), can inject throttling, 5xx answers and latency, and counts the
characters it bills (those of answered requests, as AWS does)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET = "AWSShineFrontendService_20170701.TranslateText"


class FakeTranslate:
    def __init__(self, translations: dict[tuple[str, str], str], latency: float = 0.0):
        """``translations``: (target language, source text) -> translation; others get
        ``"<lang>: <text>"``."""
        self.translations = translations
        self.latency = latency
        self.throttle_first = 0  # answer this many requests with ThrottlingException first
        self.fail_every = 0  # answer every n-th request with a 500
        self.refuse = set()  # target languages answered with UnsupportedLanguagePairException
        self.billed_characters = 0
        self.answered = []  # (target language, text) of each billed request
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the server held at once
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeTranslate":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests += 1
            number = self.requests
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            return self._outcome(number, body)
        finally:
            with self._lock:
                self.in_flight -= 1

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
        translation = self.translations.get((target, text), f"{target}: {text}")
        return 200, {
            "TranslatedText": translation,
            "SourceLanguageCode": body["SourceLanguageCode"],
            "TargetLanguageCode": target,
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("X-Amz-Target") != TARGET:
                    status, answer = 400, {"__type": "UnknownOperationException", "message": ""}
                else:
                    status, answer = fake._answer(body)
                payload = json.dumps(answer).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler
