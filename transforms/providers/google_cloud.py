"""Google Cloud Translation (Advanced, v3) through Google's official client,
``google-cloud-translate``: ``TranslationServiceClient.translate_text``.

Credentials are Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud
auth application-default login``, or the workers' service account); polycap never reads, stores
or logs them. Requests go to ``projects/<project>/locations/<location>``, the project being
``project`` or else the one ADC names.

Texts are sent in requests of one language pair within the documented limits of
``TranslateTextRequest.contents``: at most 1,024 strings, and a total under 30,000 code points
(Google's recommendation), as ``text/plain`` (the API's default, ``text/html``, would escape
``&`` and drop what looks like a tag). polycap retries 429 and 5xx answers and connection errors
itself with exponential back-off (the client's own retry is switched off, so ``max_attempts``
is the whole story); once they are exhausted the texts are ``provider_unavailable``, and any
other refusal (an unsupported language, a bad request) is ``provider_refused``.
"""

from __future__ import annotations

import enum
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

from pydantic import Field, model_validator

from polycap.transforms.errors import ConfigError
from polycap.transforms.providers.base import Answer, ErrorKind, Provider, Request
from polycap.transforms.section import Section
from polycap.transforms.text import is_untranslated

# TranslateTextRequest.contents: "The max length of this field is 1024"; "We recommend the
# total content be less than 30,000 codepoints".
MAX_SEGMENTS = 1024
MAX_CODE_POINTS = 30_000
_KEY = "translation.google_cloud"


class Credentials(str, enum.Enum):
    APPLICATION_DEFAULT = "application-default"
    # No credentials at all: only for a local stand-in of the API at api_endpoint.
    ANONYMOUS = "anonymous"


class Transport(str, enum.Enum):
    GRPC = "grpc"
    REST = "rest"


class GoogleCloudConfig(Section):
    """``translation.google_cloud``: Cloud Translation v3 through ``google-cloud-translate``."""

    project: Optional[str] = None
    location: str = "global"
    # A model of the location ("general/nmt", or a custom one's path); None: Google's default.
    model: Optional[str] = None
    api_endpoint: Optional[str] = None
    transport: Transport = Transport.GRPC
    credentials: Credentials = Credentials.APPLICATION_DEFAULT
    max_concurrency: int = Field(default=8, ge=1, le=256)
    segments_per_request: int = Field(default=128, ge=1, le=MAX_SEGMENTS)
    code_points_per_request: int = Field(default=MAX_CODE_POINTS, ge=1, le=MAX_CODE_POINTS)
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_seconds: float = Field(default=1.0, ge=0)
    timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _anonymous_only_for_a_stand_in(self) -> "GoogleCloudConfig":
        if self.credentials is Credentials.ANONYMOUS and not self.api_endpoint:
            raise ValueError("credentials: anonymous is for a local stand-in only; set api_endpoint")
        return self


def check_credentials(cfg: GoogleCloudConfig) -> None:
    """ConfigError when Application Default Credentials are missing, or name no project while
    ``project`` is not set."""
    if cfg.credentials is Credentials.ANONYMOUS:
        if cfg.project is None:
            raise ConfigError(f"{_KEY}.project: required with credentials: anonymous")
        return
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError as error:
        raise ConfigError(
            f"translation.provider: google-cloud needs Application Default Credentials "
            f"(GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, or a "
            f"service account on the workers): {str(error).splitlines()[0]}"
        ) from None
    if cfg.project is None and not project:
        raise ConfigError(f"{_KEY}.project: required; Application Default Credentials name no project")


def requests_within_limits(requests: Sequence[Request], segments: int, code_points: int):
    """Indices of ``requests``, cut into groups of one language pair with at most ``segments``
    texts of at most ``code_points`` together; a text longer than ``code_points`` alone is not
    in any group (the caller refuses it)."""
    by_pair: dict[tuple[str, str], list[int]] = {}
    for index, request in enumerate(requests):
        if len(request.text) <= code_points:
            by_pair.setdefault((request.source_lang, request.target_lang), []).append(index)
    for indices in by_pair.values():
        group, size = [], 0
        for index in indices:
            length = len(requests[index].text)
            if group and (len(group) == segments or size + length > code_points):
                yield group
                group, size = [], 0
            group.append(index)
            size += length
        if group:
            yield group


class GoogleCloudTranslate(Provider):
    name = "google-cloud"

    def __init__(self, cfg: GoogleCloudConfig):
        self._cfg = cfg
        self.max_concurrency = cfg.max_concurrency

    def __enter__(self) -> "GoogleCloudTranslate":
        from google.api_core.client_options import ClientOptions
        from google.cloud import translate_v3

        credentials, project = None, self._cfg.project
        if self._cfg.credentials is Credentials.ANONYMOUS:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        elif project is None:
            import google.auth

            _, project = google.auth.default()
        options = ClientOptions(api_endpoint=self._cfg.api_endpoint) if self._cfg.api_endpoint else None
        self._client = translate_v3.TranslationServiceClient(
            credentials=credentials, client_options=options, transport=self._cfg.transport.value
        )
        self._parent = f"projects/{project}/locations/{self._cfg.location}"
        self._model = f"{self._parent}/models/{self._cfg.model}" if self._cfg.model else None
        self._pool = ThreadPoolExecutor(self._cfg.max_concurrency, thread_name_prefix="google-cloud")
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True)
        self._client.transport.close()

    def translate(self, requests: Sequence[Request]) -> list[Answer]:
        too_long = Answer(error_kind=ErrorKind.REFUSED,
                          error=f"over {self._cfg.code_points_per_request:,} code points; never sent")
        answers = [too_long] * len(requests)
        groups = list(requests_within_limits(
            requests, self._cfg.segments_per_request, self._cfg.code_points_per_request
        ))
        for group, group_answers in zip(groups, self._pool.map(
            lambda group: self._translate_group([requests[index] for index in group]), groups
        )):
            for index, answer in zip(group, group_answers, strict=True):
                answers[index] = answer
        return answers

    def _translate_group(self, requests: list[Request]) -> list[Answer]:
        import requests as http
        from google.api_core import exceptions

        request = dict(
            parent=self._parent, contents=[r.text for r in requests], mime_type="text/plain",
            source_language_code=requests[0].source_lang, target_language_code=requests[0].target_lang,
        )
        if self._model:
            request["model"] = self._model
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.translate_text(
                    request=request, retry=None, timeout=self._cfg.timeout_seconds
                )
                break
            except exceptions.GoogleAPICallError as error:  # gRPC's errors too, mapped
                if not isinstance(error, (exceptions.TooManyRequests, exceptions.ServerError)):
                    return self._all(requests, ErrorKind.REFUSED, f"google-cloud: {error}")
                failure = error
            except http.RequestException as error:  # the REST transport's connection errors
                failure = error
            if attempt == self._cfg.max_attempts:
                return self._all(requests, ErrorKind.UNAVAILABLE,
                                 f"google-cloud after {attempt} attempts: {failure}")
            time.sleep(self._cfg.backoff_seconds * 2 ** (attempt - 1))
        translations = [t.translated_text for t in response.translations]
        if len(translations) != len(requests):
            return self._all(requests, ErrorKind.UNAVAILABLE,
                             f"google-cloud: {len(translations)} translations for {len(requests)} texts")
        return [Answer(translation=t, untranslated=is_untranslated(r.text, t))
                for r, t in zip(requests, translations)]

    @staticmethod
    def _all(requests: list[Request], kind: ErrorKind, error: str) -> list[Answer]:
        return [Answer(error_kind=kind, error=error)] * len(requests)
