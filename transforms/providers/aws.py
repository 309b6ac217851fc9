"""AWS Translate (``TranslateText``) through boto3.

Credentials come only from boto3's default chain (environment, shared files, instance role);
polycap never reads, stores or logs them. botocore retries throttling
(``ThrottlingException``, ``TooManyRequestsException``) and 5xx in ``standard`` or ``adaptive``
mode; ``legacy`` mode (botocore's default) would not retry ``TooManyRequestsException``.
Requests run on a thread pool of ``max_concurrency`` per worker, under optional requests- and
characters-per-second limits.
"""

from __future__ import annotations

import enum
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

from pydantic import Field

from polycap.transforms.providers.base import Answer, ErrorKind, Provider, RateLimiter, Request
from polycap.transforms.section import Section

# TranslateText takes at most 10,000 bytes of text; the clean stage rejects longer captions.
MAX_REQUEST_BYTES = 10_000

# Our codes -> AWS's where they differ (AWS: "zh" is Simplified, "zh-TW" Traditional).
_AWS_CODES = {"zh-CN": "zh", "zh-Hans": "zh", "zh-Hant": "zh-TW", "pt-BR": "pt", "nb": "no"}

_UNAVAILABLE = {
    "ThrottlingException",
    "TooManyRequestsException",
    "ServiceUnavailableException",
    "InternalServerException",
    "LimitExceededException",
}


class RetryMode(str, enum.Enum):
    # botocore's default "legacy" mode does not retry TooManyRequestsException.
    STANDARD = "standard"
    ADAPTIVE = "adaptive"


class AwsConfig(Section):
    """``translation.aws``. Credentials come only from boto3's default chain."""

    region: str = "us-east-1"
    endpoint_url: Optional[str] = None
    max_concurrency: int = Field(default=8, ge=1, le=256)
    retry_mode: RetryMode = RetryMode.STANDARD
    max_attempts: int = Field(default=8, ge=1, le=50)
    requests_per_second: Optional[float] = Field(default=None, gt=0)
    characters_per_second: Optional[float] = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)


def aws_language(code: str) -> str:
    return _AWS_CODES.get(code, code)


class AwsTranslate(Provider):
    name = "aws"

    def __init__(self, cfg: AwsConfig):
        self._cfg = cfg
        self.max_concurrency = cfg.max_concurrency

    def __enter__(self) -> "AwsTranslate":
        import boto3
        from botocore.config import Config

        self._client = boto3.session.Session().client(
            "translate",
            region_name=self._cfg.region,
            endpoint_url=self._cfg.endpoint_url,
            config=Config(
                retries={"mode": self._cfg.retry_mode.value, "total_max_attempts": self._cfg.max_attempts},
                max_pool_connections=self._cfg.max_concurrency,
                connect_timeout=self._cfg.timeout_seconds,
                read_timeout=self._cfg.timeout_seconds,
            ),
        )
        self._pool = ThreadPoolExecutor(self._cfg.max_concurrency, thread_name_prefix="aws-translate")
        self._requests = RateLimiter(self._cfg.requests_per_second)
        self._characters = RateLimiter(self._cfg.characters_per_second)
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def translate(self, requests: Sequence[Request]) -> list[Answer]:
        return list(self._pool.map(self._translate_one, requests))

    def _translate_one(self, request: Request) -> Answer:
        from botocore.exceptions import BotoCoreError, ClientError

        if len(request.text.encode("utf-8")) > MAX_REQUEST_BYTES:
            return Answer(error_kind=ErrorKind.REFUSED, error="over 10,000 bytes; never sent")
        self._requests.acquire()
        self._characters.acquire(len(request.text))
        try:
            response = self._client.translate_text(
                Text=request.text,
                SourceLanguageCode=aws_language(request.source_lang),
                TargetLanguageCode=aws_language(request.target_lang),
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            kind = ErrorKind.UNAVAILABLE if code in _UNAVAILABLE or status >= 500 else ErrorKind.REFUSED
            return Answer(error_kind=kind, error=f"aws {code or status}: {error}")
        except BotoCoreError as error:  # connection errors, timeouts, after botocore's retries
            return Answer(error_kind=ErrorKind.UNAVAILABLE, error=f"aws: {error}")
        return Answer(translation=response["TranslatedText"])
