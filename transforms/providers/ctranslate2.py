"""Local machine translation with CTranslate2 on the workers: no API, no bill, worker hours only.

Two shapes of model, both converted to CTranslate2's format beforehand (``ct2-opus-mt-converter``,
``ct2-transformers-converter``):

- ``models: {lang: DIR}``: one model per target language, as OPUS-MT ships (Marian, en->de,
  en->fr, ...), each translating from the run's ``source_lang``;
- ``model: DIR`` with ``target_prefix: {lang: token}``: one multilingual model whose output
  starts with a target-language token (NLLB ``deu_Latn``, M2M-100 ``__de__``); ``source_prefix``
  is the source-language token its input starts with (``eng_Latn``, ``__en__``).

Each model directory holds the converted model and its SentencePiece models: ``source_spm`` and
``target_spm`` (``source.spm`` and ``target.spm``, as OPUS-MT ships them; NLLB and M2M-100 ship
one, ``sentencepiece.bpe.model``, for both).

The models load once per worker process and are shared by its threads and DoFn instances
(Beam's ``Shared`` handle, as RunInference does), each on first use by a target language.
``translate_batch`` sorts a call's inputs by length and cuts them into ``max_batch_size``
chunks, so padding stays small. The store keys this provider's translations per target
language by a digest of that language's model files and of the options that change an output
(``store_names``), so a new model or new decoding options never reuse an old model's
translations, and a new model for one language translates no other again. Nothing is billed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Literal, Optional, Sequence

from pydantic import Field, model_validator

from polycap.transforms.errors import ConfigError
from polycap.transforms.providers.base import Answer, ErrorKind, Provider, Request
from polycap.transforms.section import Section
from polycap.transforms.text import is_untranslated

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_KEY = "translation.ctranslate2"
ComputeType = Literal[
    "default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32",
]


class Ctranslate2Config(Section):
    """``translation.ctranslate2``: either ``models`` or ``model`` with ``target_prefix``."""

    models: dict[str, str] = {}
    model: Optional[str] = None
    target_prefix: dict[str, str] = {}
    source_prefix: Optional[str] = None
    source_spm: str = "source.spm"
    target_spm: str = "target.spm"
    device: str = "auto"
    # None: int8 on the CPU, float16 on a GPU.
    compute_type: Optional[ComputeType] = None
    beam_size: int = Field(default=4, ge=1, le=64)
    # In target tokens: also the bound on a looping output.
    max_decoding_length: int = Field(default=256, ge=1, le=4096)
    repetition_penalty: float = Field(default=1.0, ge=1.0)
    # 0: off; n: no n-gram twice in one output (short inputs make small models loop).
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    # Batches decoded in parallel (CTranslate2 workers), and threads per batch on the CPU
    # (0: CTranslate2's default).
    inter_threads: int = Field(default=1, ge=1, le=64)
    intra_threads: int = Field(default=0, ge=0, le=256)

    @model_validator(mode="after")
    def _one_shape(self) -> "Ctranslate2Config":
        if bool(self.models) == bool(self.model):
            raise ValueError("set either models ({lang: DIR}) or model (one multilingual DIR)")
        if self.model and not self.target_prefix:
            raise ValueError("model needs target_prefix ({lang: target-language token})")
        if self.models and (self.target_prefix or self.source_prefix):
            raise ValueError("target_prefix and source_prefix go with model, not with models")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device: {self.device!r} is not one of auto, cpu, cuda, cuda:<index>")
        return self

    def directories(self) -> dict[str, str]:
        """Target language -> the model directory that translates into it."""
        if self.models:
            return dict(self.models)
        return {lang: self.model for lang in self.target_prefix}


def check_config(cfg: Ctranslate2Config, languages: Sequence[str], workers_here: bool) -> None:
    """ConfigError, naming the key, for a language without a model; where the workers run on
    this machine (``workers_here``), also for a model directory without its model or
    SentencePiece files and for a requested GPU this machine does not have. Remote workers
    check both themselves when they load the models (``_LoadedModels``): their image, not the
    launcher, holds the models and the GPU."""
    directories = cfg.directories()
    key = f"{_KEY}.models" if cfg.models else f"{_KEY}.target_prefix"
    missing = [lang for lang in languages if lang not in directories]
    if missing:
        raise ConfigError(f"{key}: no model for {', '.join(missing)}")
    if workers_here:
        check_model_files(cfg)
        resolve_device(cfg.device)


def check_model_files(cfg: Ctranslate2Config) -> None:
    for lang, directory in sorted(cfg.directories().items()):
        where = f"{_KEY}.models.{lang}" if cfg.models else f"{_KEY}.model"
        for name in ("model.bin", "config.json", cfg.source_spm, cfg.target_spm):
            if not (Path(directory) / name).is_file():
                raise ConfigError(f"{where}: {directory} has no {name} (a converted CTranslate2 "
                                  "model with its SentencePiece models)")


def resolve_device(requested: str) -> tuple[str, int]:
    """(CTranslate2 device, index): ``auto`` -> the first GPU if there is one, else the CPU. A
    requested GPU that is missing raises ConfigError: never a silent CPU fall-back."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if requested == "auto":
        return ("cuda", 0) if gpus else ("cpu", 0)
    if requested == "cpu":
        return "cpu", 0
    index = int(requested.partition(":")[2] or 0)
    if index >= gpus:
        raise ConfigError(
            f"{_KEY}.device: {requested} but this machine has {gpus} CUDA device(s) that "
            "CTranslate2 can use; use auto or cpu"
        )
    return "cuda", index


def model_digests(cfg: Ctranslate2Config) -> dict[str, str]:
    """Target language -> a short digest of the files of the model that translates into it and
    of the options that change its output: the store's key for that language's translations, so
    a new model for one language translates that language again and no other."""
    options = {
        "source_prefix": cfg.source_prefix, "beam_size": cfg.beam_size,
        "max_decoding_length": cfg.max_decoding_length,
        "repetition_penalty": cfg.repetition_penalty,
        "no_repeat_ngram_size": cfg.no_repeat_ngram_size,
    }
    file_digests: dict[str, str] = {}  # one multilingual model serves every language: read once
    digests = {}
    for lang, directory in sorted(cfg.directories().items()):
        if directory not in file_digests:
            file_digests[directory] = _directory_digest(Path(directory))
        language = {**options, "target_lang": lang, "target_prefix": cfg.target_prefix.get(lang)}
        digest = hashlib.sha256(json.dumps(language, sort_keys=True).encode("utf-8"))
        digest.update(f"\n{file_digests[directory]}".encode("utf-8"))
        digests[lang] = digest.hexdigest()[:12]
    return digests


def _directory_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with open(path, "rb") as stream:
            content = hashlib.file_digest(stream, "sha256").hexdigest()
        digest.update(f"{path.relative_to(directory).as_posix()}\t{content}\n".encode("utf-8"))
    return digest.hexdigest()


class _Model:
    """One loaded model directory: the translator and its SentencePiece models."""

    def __init__(self, directory: str, cfg: Ctranslate2Config, device: str, index: int,
                 compute_type: str):
        import ctranslate2
        import sentencepiece

        self.translator = ctranslate2.Translator(
            directory, device=device, device_index=index, compute_type=compute_type,
            inter_threads=cfg.inter_threads, intra_threads=cfg.intra_threads,
        )
        self.source = sentencepiece.SentencePieceProcessor(model_file=os.path.join(directory, cfg.source_spm))
        self.target = sentencepiece.SentencePieceProcessor(model_file=os.path.join(directory, cfg.target_spm))
        config = json.loads(Path(directory, "config.json").read_text(encoding="utf-8"))
        # Converted Marian, NLLB and M2M-100 models expect the source to end with </s>, which
        # CTranslate2 adds itself only where the model's config says so.
        self.source_suffix = [] if config.get("add_source_eos") else [config.get("eos_token", "</s>")]


class _LoadedModels:
    """The models of one configuration in one worker process, shared by its threads through
    Beam's ``Shared`` handle (hence a class: the handle keeps a weak reference). A model loads on
    the first text for its language; CTranslate2's translators may be called from several
    threads at once."""

    def __init__(self, cfg: Ctranslate2Config):
        self._cfg = cfg
        check_model_files(cfg)
        self.device, self.index = resolve_device(cfg.device)
        self.compute_type = cfg.compute_type or ("int8" if self.device == "cpu" else "float16")
        self.digests = model_digests(cfg)
        self._directories = cfg.directories()
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}

    def for_language(self, lang: str) -> Optional[_Model]:
        directory = self._directories.get(lang)
        if directory is None:
            return None
        with self._lock:
            if directory not in self._models:
                self._models[directory] = _Model(directory, self._cfg, self.device, self.index,
                                                 self.compute_type)
        return self._models[directory]


class Ctranslate2Translate(Provider):
    """Its store folders (``store_names``) name the models: ``ctranslate2-<digest>`` per target
    language (``model_digests``)."""

    name = "ctranslate2"

    def __init__(self, cfg: Ctranslate2Config):
        from apache_beam.utils.shared import Shared

        self._cfg = cfg
        # One more batch than CTranslate2 decodes at once: its store write overlaps the next.
        self.max_concurrency = cfg.inter_threads + 1
        self._shared = Shared()
        self._models: Optional[_LoadedModels] = None

    def store_names(self, target_langs: Sequence[str]) -> dict[str, str]:
        # Opened, the loaded models know their digests; else the model files are read.
        digests = self._models.digests if self._models is not None else model_digests(self._cfg)
        return {lang: f"ctranslate2-{digests[lang]}" for lang in target_langs}

    def __enter__(self) -> "Ctranslate2Translate":
        self._models = self._shared.acquire(lambda: _LoadedModels(self._cfg))
        return self

    def __exit__(self, *exc_info) -> None:
        self._models = None  # the process keeps the models while another DoFn holds them

    def translate(self, requests: Sequence[Request]) -> list[Answer]:
        by_language: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_language.setdefault(request.target_lang, []).append(index)
        answers: list[Optional[Answer]] = [None] * len(requests)
        for lang, indices in by_language.items():
            texts = [requests[index].text for index in indices]
            for index, answer in zip(indices, self._translate_language(lang, texts), strict=True):
                answers[index] = answer
        return answers

    def _translate_language(self, lang: str, texts: list[str]) -> list[Answer]:
        # A model that cannot load raises: a broken image is no text's fault, and failing every
        # text of the language one by one would hide it in a finished run.
        model = self._models.for_language(lang)
        if model is None:
            return [Answer(error_kind=ErrorKind.REFUSED, error=f"ctranslate2: no model for {lang}")] * len(texts)
        prefix = [self._cfg.source_prefix] if self._cfg.source_prefix else []
        source = [prefix + model.source.encode(text, out_type=str) + model.source_suffix for text in texts]
        target_prefix = self._cfg.target_prefix.get(lang)
        try:
            results = model.translator.translate_batch(
                source,
                target_prefix=[[target_prefix]] * len(texts) if target_prefix else None,
                max_batch_size=self._cfg.max_batch_size,
                beam_size=self._cfg.beam_size,
                max_decoding_length=self._cfg.max_decoding_length,
                repetition_penalty=self._cfg.repetition_penalty,
                no_repeat_ngram_size=self._cfg.no_repeat_ngram_size,
            )
        except RuntimeError as error:  # out of device memory, ...: a rerun may succeed
            return [Answer(error_kind=ErrorKind.UNAVAILABLE, error=f"ctranslate2: {error}")] * len(texts)
        answers = []
        for text, result in zip(texts, results, strict=True):
            tokens = result.hypotheses[0][1 if target_prefix else 0:]
            translation = model.target.decode(tokens)
            answers.append(Answer(translation=translation, untranslated=is_untranslated(text, translation)))
        return answers
