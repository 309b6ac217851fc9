"""polycap's one typed, validated, read-only configuration, loaded from YAML.

Each section is defined beside the stage that reads it (``CleanConfig`` in
``polycap.transforms.clean``, ``ScoreConfig`` in ``polycap.transforms.encoders``, ...); this
module composes them and reads YAML. An unknown key, a wrong type or a bad value raises a
``ConfigError`` whose one-line message names the key, before any stage runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import pydantic
import yaml
from pydantic import Field, field_validator, model_validator

from polycap.transforms.clean import CleanConfig
from polycap.transforms.encoders import ScoreConfig
from polycap.transforms.errors import ConfigError
from polycap.transforms.keep import MAX_MARGIN, KeepConfig
from polycap.transforms.languages import is_language_code
from polycap.transforms.propn import PropnConfig
from polycap.transforms.read import InputConfig, ReadConfig
from polycap.transforms.sample import SampleConfig
from polycap.transforms.section import Section
from polycap.transforms.translate import TranslationConfig
from polycap.transforms.write import OutputConfig


class Config(Section):
    source_lang: str = "en"
    languages: tuple[str, ...] = Field(min_length=1)
    inputs: tuple[InputConfig, ...] = Field(min_length=1)
    read: ReadConfig = ReadConfig()
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

    @model_validator(mode="after")
    def _providers_of_configured_languages(self) -> "Config":
        stray = [lang for lang in self.translation.providers if lang not in self.languages]
        if stray:
            # A provider for a language the run does not translate is a typo or a stale line.
            raise ValueError(
                f"translation.providers.{stray[0]}: not one of languages ({', '.join(self.languages)})"
            )
        return self

    @model_validator(mode="after")
    def _threshold_in_its_scores_range(self) -> "Config":
        threshold = self.keep.min_similarity
        if threshold is None:
            return self
        if self.score.margin and not 0.0 < threshold <= MAX_MARGIN:
            raise ValueError(
                f"keep.min_similarity: {threshold} with score.margin: true is a ratio-margin "
                f"threshold, in (0, {MAX_MARGIN:g}] (1.0: as good as its neighbours; ~1.0 and up)"
            )
        if not self.score.margin and threshold > 1.0:
            raise ValueError(
                f"keep.min_similarity: {threshold} is a cosine threshold, in [-1, 1]; a margin "
                "threshold needs score.margin: true"
            )
        return self

    @model_validator(mode="after")
    def _margin_reference_within_the_sample(self) -> "Config":
        if self.score.margin and self.sample.per_language < self.score.margin_reference_pairs:
            raise ValueError(
                f"score.margin_reference_pairs: {self.score.margin_reference_pairs} is more than "
                f"sample.per_language ({self.sample.per_language}): a reference drawn from fewer "
                "pairs than calibrated raises every margin; set it to at most per_language and "
                "calibrate with --margin-reference-pairs"
            )
        return self

    @model_validator(mode="after")
    def _fill_needs_a_fixed_threshold(self) -> "Config":
        if self.sample.fill and (self.keep.keep_top_fraction is not None or self.keep.memory_share is not None):
            raise ValueError(
                "sample.fill: needs a fixed keep.min_similarity; with keep_top_fraction or "
                "memory_share what a pair needs to be accepted changes with every round"
            )
        return self


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
                    "ctranslate2": translation.ctranslate2 and _absolute_model_paths(translation.ctranslate2),
                }
            ),
        }
    )


def _absolute_model_paths(section):
    """A ``translation.ctranslate2`` section with its model directories absolute."""
    return section.model_copy(
        update={
            "models": {lang: absolute_path(path) for lang, path in section.models.items()},
            "model": section.model and absolute_path(section.model),
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
