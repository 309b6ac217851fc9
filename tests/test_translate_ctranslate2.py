"""The CTranslate2 provider with a real model (tests/tiny_translation_model.py: tiny, random,
built here, nothing downloaded): loading, tokenising, batching and the store run for real. A
random model's words are noise, so these tests assert the mechanics, never the words."""

import json
import pickle
import re

import pytest

from polycap.pipeline import cli
from polycap.transforms.errors import ConfigError
from polycap.transforms.providers.base import ErrorKind, Request
from polycap.transforms.providers.ctranslate2 import (
    Ctranslate2Config, Ctranslate2Translate, check_config, model_digests,
)
from polycap.transforms.store import read_store_rows
from tests.conftest import MULTI30K, ROOT, SAMPLES

DEMO = str(ROOT / "configs" / "demo.yaml")
INPUTS = json.dumps(
    [
        {"format": "multi30k", "path": str(MULTI30K / "val.en")},
        {"format": "gcc", "path": str(SAMPLES / "gcc" / "*.tsv")},
    ]
)


def _config(model, **settings):
    return Ctranslate2Config(models={"de": str(model)}, device="cpu", **settings)


def _english(count: int) -> list[str]:
    return (MULTI30K / "val.en").read_text(encoding="utf-8").splitlines()[:count]


def _digest(cfg, lang="de"):
    return model_digests(cfg)[lang]


def test_the_store_key_names_the_model_files_and_the_decoding_options(model, other_model):
    with Ctranslate2Translate(_config(model)) as provider:
        (name,) = provider.store_names(["de"]).values()
    assert re.fullmatch(r"ctranslate2-[0-9a-f]{12}", name)
    assert name == f"ctranslate2-{_digest(_config(model))}"
    assert Ctranslate2Translate(_config(model)).store_names(["de"]) == {"de": name}  # unopened
    assert _digest(_config(other_model)) != _digest(_config(model))
    assert _digest(_config(model, beam_size=1)) != _digest(_config(model))
    # Where it runs is no part of what it outputs: the same key on another device.
    assert _digest(_config(model, compute_type="float32")) == _digest(_config(model))


def test_each_language_has_its_own_store_key_and_a_new_model_changes_only_its_own(model, other_model):
    both = Ctranslate2Config(models={"de": str(model), "fr": str(model)})
    new_german = Ctranslate2Config(models={"de": str(other_model), "fr": str(model)})
    assert _digest(both, "de") != _digest(both, "fr")  # the same files, two languages
    assert _digest(new_german, "de") != _digest(both, "de")
    assert _digest(new_german, "fr") == _digest(both, "fr")


def test_one_answer_per_text_in_order_and_a_language_without_a_model_is_refused(model):
    texts = _english(5)
    requests = [Request("en", "de", texts[0]), Request("en", "fr", texts[1]),
                *(Request("en", "de", text) for text in texts[2:])]
    with Ctranslate2Translate(_config(model, max_decoding_length=16)) as provider:
        answers = provider.translate(requests)
    assert len(answers) == 5
    refused = answers[1]
    assert refused.translation is None and refused.error_kind is ErrorKind.REFUSED
    assert "no model for fr" in refused.error
    for answer in answers[:1] + answers[2:]:
        assert answer.error_kind is None and answer.translation and not answer.untranslated


def _longest_words(model, count: int) -> list[str]:
    """The ``count`` longest word pieces of the model's target vocabulary."""
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=str(model / "target.spm"))
    words = [pieces.id_to_piece(i) for i in range(pieces.get_piece_size())]
    return sorted((word for word in words if word.startswith("▁")), key=len)[-count:]


def test_one_multilingual_model_serves_each_language_through_its_target_token(model):
    # Words of the model's vocabulary stand in for NLLB's deu_Latn and fra_Latn.
    german_token, french_token, other_token = _longest_words(model, 3)
    cfg = Ctranslate2Config(model=str(model), target_prefix={"de": german_token, "fr": french_token},
                            device="cpu", max_decoding_length=16)
    text = _english(1)[0]
    with Ctranslate2Translate(cfg) as provider:
        german, french, czech = provider.translate(
            [Request("en", "de", text), Request("en", "fr", text), Request("en", "cs", text)]
        )
    # CTranslate2 starts each output with its token (too small a model to be steered by it);
    # the token is no part of the translation.
    assert german.translation and not german.translation.startswith(german_token[1:])
    assert french.translation and not french.translation.startswith(french_token[1:])
    assert czech.error_kind is ErrorKind.REFUSED
    other_tokens = cfg.model_copy(update={"target_prefix": {"de": other_token, "fr": french_token}})
    assert _digest(other_tokens) != _digest(cfg)
    assert _digest(other_tokens, "fr") == _digest(cfg, "fr")


def _consecutive_repeats(text: str) -> int:
    words = text.split()
    return sum(first == second for first, second in zip(words, words[1:]))


def test_the_length_bound_and_the_repetition_guard_bound_a_looping_model(model):
    requests = [Request("en", "de", text) for text in _english(20)]
    with Ctranslate2Translate(_config(model, max_decoding_length=128, beam_size=1)) as provider:
        looping = [answer.translation for answer in provider.translate(requests)]
    with Ctranslate2Translate(_config(model, max_decoding_length=8, beam_size=1)) as provider:
        bounded = [answer.translation for answer in provider.translate(requests)]
    with Ctranslate2Translate(_config(model, max_decoding_length=128, beam_size=1,
                                      no_repeat_ngram_size=1)) as provider:
        guarded = [answer.translation for answer in provider.translate(requests)]
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=str(model / "target.spm"))
    longest_piece = max(len(pieces.id_to_piece(i)) for i in range(pieces.get_piece_size()))
    # At most 8 pieces each: never longer than 8 of the longest piece.
    assert all(len(text) <= 8 * longest_piece for text in bounded)
    assert sum(map(len, looping)) > 4 * sum(map(len, bounded))
    # The untrained model repeats itself; with no 1-gram twice, no word follows itself.
    assert sum(map(_consecutive_repeats, looping)) > 20
    assert sum(map(_consecutive_repeats, guarded)) == 0


def test_the_model_loads_once_per_process_and_its_copies_share_it(model):
    provider = Ctranslate2Translate(_config(model))
    first, second = (pickle.loads(pickle.dumps(provider)) for _ in range(2))
    with first, second:
        assert first._models is second._models
        assert first.max_concurrency == 2


def test_config_errors_name_the_key(model, tmp_path):
    with pytest.raises(ValueError, match="either models"):
        Ctranslate2Config(models={"de": str(model)}, model=str(model), target_prefix={"de": "x"})
    with pytest.raises(ValueError, match="model needs target_prefix"):
        Ctranslate2Config(model=str(model))
    with pytest.raises(ValueError, match="device: 'gpu'"):
        Ctranslate2Config(models={"de": str(model)}, device="gpu")
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2.models: no model for fr$"):
        check_config(_config(model), ["de", "fr"], workers_here=True)
    (tmp_path / "empty").mkdir()
    empty = Ctranslate2Config(models={"de": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2.models.de: .* has no model.bin"):
        check_config(empty, ["de"], workers_here=True)
    missing_gpu = Ctranslate2Config(models={"de": str(model)}, device="cuda:99")
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2.device: cuda:99 but this machine has \d+ CUDA"):
        check_config(missing_gpu, ["de"], workers_here=True)
    # Workers elsewhere: their image holds the models and the GPU, and they check both.
    check_config(missing_gpu, ["de"], workers_here=False)
    check_config(empty, ["de"], workers_here=False)
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2.models.de: .* has no model.bin"):
        Ctranslate2Translate(empty).__enter__()


def test_a_local_run_without_its_models_stops_before_running(tmp_path):
    base = ["--config", DEMO, "--output", str(tmp_path), "--set", "translation.provider=ctranslate2"]
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2: required where a language's provider is ctranslate2"):
        cli.run(base)
    (tmp_path / "empty").mkdir()
    models = json.dumps({"models": {"de": str(tmp_path / "empty"), "fr": str(tmp_path / "empty")}})
    with pytest.raises(ConfigError, match=r"^translation.ctranslate2.models.de: .* has no model.bin"):
        cli.run([*base, "--set", f"translation.ctranslate2={models}"])
    assert not (tmp_path / "audit").exists()


def _run(output, model, *extra):
    models = json.dumps({"models": {"de": str(model), "fr": str(model)},
                         "max_decoding_length": 24, "no_repeat_ngram_size": 2, "device": "cpu"})
    return cli.run(
        [
            "--config", DEMO, "--output", str(output),
            "--set", f"inputs={INPUTS}",
            "--set", "translation.memory=[]",
            "--set", "translation.provider=ctranslate2",
            "--set", f"translation.ctranslate2={models}",
            "--set", "translation.batch_size=16",
            "--set", "sample.per_language=40", "--set", "sample.fill=false",
            *extra,
        ]
    )


def _stored(output, model) -> list[dict]:
    cfg = Ctranslate2Config(models={"de": str(model), "fr": str(model)},
                            max_decoding_length=24, no_repeat_ngram_size=2)
    return [row for digest in sorted(model_digests(cfg).values())
            for row in read_store_rows(str(output / "translations"), f"ctranslate2-{digest}")]


def test_a_run_keeps_every_row_stores_once_and_a_new_model_translates_again(tmp_path, model, other_model):
    first = _run(tmp_path, model, "--direct_runner_bundle_repeat=1")
    assert first["ok"], first["checks"]
    for lang in ("de", "fr"):
        numbers = first["languages"][lang]
        assert numbers["sampled"] == 40 == numbers["accepted"] + numbers["rejected"] + numbers["failed"]
        assert numbers["failed"] == 0
    stored = _stored(tmp_path, model)
    # Each text once, replayed bundles included: a second translation would be a second row.
    assert len(stored) == 80 == len({(row["target_lang"], row["source_text"]) for row in stored})
    assert first["translation"]["totals"]["characters_billed"] == 0  # a local model bills nothing

    again = _run(tmp_path, model)
    assert again["ok"], again["checks"]
    assert _stored(tmp_path, model) == stored  # the rerun translated nothing: no new row
    assert again["languages"]["de"]["sampled"] == 40
    # The workers found the model's store folder by its digest: every text a store hit.
    assert again["translation"]["totals"]["store_hits"] == 80
    assert again["translation"]["totals"]["provider_calls"] == 0

    other = _run(tmp_path, other_model)
    assert other["ok"], other["checks"]
    assert len(_stored(tmp_path, other_model)) == 80  # another model: translated again
    assert _stored(tmp_path, model) == stored
