"""A real, tiny machine-translation model for tests, built offline in seconds: a SentencePiece
model trained on the bundled Multi30k captions, a ``transformers.MarianMTModel`` with random
weights (one layer, d_model 16), converted to CTranslate2's format by CTranslate2's own
converter, with ``source.spm`` and ``target.spm`` beside it, as OPUS-MT ships them.

Its translations are noise (random weights): tests assert the mechanics around it (loading,
tokenising, batching, the store), never the words. Untrained, it rarely ends a sentence, so
its outputs run to ``max_decoding_length`` and repeat themselves, as small models do on short
inputs: the case the length bound and the repetition guards are for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import MULTI30K

VOCAB_SIZE = 400


def _train_sentencepiece(directory: Path) -> Path:
    import sentencepiece

    lines = []
    for lang in ("en", "de", "fr"):
        lines += (MULTI30K / f"val.{lang}").read_text(encoding="utf-8").splitlines()
    prefix = directory / "spm"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=VOCAB_SIZE,
        model_type="unigram", minloglevel=2,
    )
    return prefix.with_suffix(".model")


def build_model(directory: Path, seed: int) -> Path:
    """A converted model in ``directory / "ct2"``; ``seed`` picks the random weights, so two
    seeds give two models with the same vocabulary."""
    import ctranslate2
    import sentencepiece
    import torch
    import transformers

    hf = directory / "hf"
    hf.mkdir(parents=True)
    spm = _train_sentencepiece(hf)
    for name in ("source.spm", "target.spm"):
        shutil.copy(spm, hf / name)
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    # Marian's vocabulary: the SentencePiece pieces (<unk>, <s>, </s> first), then <pad>, which
    # the converter drops again (the decoder starts from a zero embedding).
    vocab = {pieces.id_to_piece(i): i for i in range(pieces.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    (hf / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = transformers.MarianTokenizer(
        source_spm=str(hf / "source.spm"), target_spm=str(hf / "target.spm"), vocab=str(hf / "vocab.json")
    )
    torch.manual_seed(seed)
    config = transformers.MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=512, pad_token_id=vocab["<pad>"],
        eos_token_id=pieces.piece_to_id("</s>"), decoder_start_token_id=vocab["<pad>"],
    )
    transformers.MarianMTModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    converted = directory / "ct2"
    ctranslate2.converters.TransformersConverter(
        str(hf), copy_files=["source.spm", "target.spm"]
    ).convert(str(converted))
    return converted
