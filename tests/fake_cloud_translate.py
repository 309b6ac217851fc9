"""A local HTTP server on 127.0.0.1 that speaks Cloud Translation v3's REST protocol
(``POST /v3/projects/P/locations/L:translateText``), so Google's real client
(``google-cloud-translate``, REST transport), its request encoding and its error mapping run
against it.

It translates from a dictionary (real human translations), can inject throttling (429), server
errors (503), refusals (400) and echoed answers, and counts what it bills (the code points of
answered requests, as Google does), the requests, and the largest request it was sent.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/v3/projects/(?P<project>[^/]+)/locations/(?P<location>[^/:]+):translateText$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _error(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"error": {"code": status, "message": message, "status": code}}


class FakeCloudTranslate:
    def __init__(self, translations: dict[tuple[str, str], str]):
        """``translations``: (target language, source text) -> translation; others get
        ``"<lang>: <text>"``."""
        self.translations = translations
        self.throttle_first = 0  # answer this many requests with 429 RESOURCE_EXHAUSTED first
        self.fail_every = 0  # answer every n-th request with 503 UNAVAILABLE
        self.refuse = set()  # target languages answered with 400 INVALID_ARGUMENT
        self.echo = set()  # target languages answered with the source text itself
        self.requests = 0
        self.billed_characters = 0
        self.answered = []  # (target language, text) of each billed text
        self.bodies = []  # every request body and its path, as sent
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeCloudTranslate":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests += 1
            number = self.requests
            self.bodies.append((path, body))
        if not _PATH.match(path):
            return _error(404, "NOT_FOUND", f"no method at {path}")
        if number <= self.throttle_first:
            return _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'v3 requests'")
        if self.fail_every and number % self.fail_every == 0:
            return _error(503, "UNAVAILABLE", "injected")
        target, contents = body["targetLanguageCode"], body["contents"]
        if target in self.refuse:
            return _error(400, "INVALID_ARGUMENT", f"Target language is invalid: {target}")
        with self._lock:
            self.billed_characters += sum(len(text) for text in contents)
            self.answered += [(target, text) for text in contents]
        return 200, {"translations": [{"translatedText": self._translate(target, text)} for text in contents]}

    def _translate(self, target: str, text: str) -> str:
        if target in self.echo:
            return text
        return self.translations.get((target, text.strip()), f"{target}: {text}")

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = fake._answer(self.path.partition("?")[0], body)
                payload = json.dumps(answer).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler
