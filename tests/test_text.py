"""The rules several stages share (``text.py``, ``files.py``): one definition each, so that the
readers of parallel text and the untranslated rule cannot disagree."""

import random
import re

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from polycap.report.parallel_sets import read_parallel
from polycap.transforms.files import count_lines, read_lines
from polycap.transforms.memory import MemoryConfig, ReadTranslationMemory, aligned_files
from polycap.transforms.errors import InputError
from polycap.transforms.text import is_shouting, is_untranslated, match_key, normalise, sent_text, text_for_mt
from tests.conftest import MULTI30K, SAMPLES, local_pipeline


@pytest.mark.parametrize(
    "source, translation, untranslated",
    [
        ("A man riding a horse.", "a man  riding a horse", True),
        ("Two dogs play in the snow", "TWO DOGS PLAY IN THE SNOW !", True),
        ("Two dogs play in the snow", None, True),
        ("Two dogs play in the snow", "Zwei Hunde spielen im Schnee", False),
        ("A man riding a horse.", "A man riding a horse cart.", False),
    ],
)
def test_is_untranslated(source, translation, untranslated):
    assert is_untranslated(source, translation) is untranslated


@pytest.mark.parametrize(
    "caption, sent",
    [
        # bundled COCO captions (annotation ids 464194, 150976: caps lock left on)
        ("LOTS OF BROKEN TOILETS SITTING OUT ON A LAWN", "Lots of broken toilets sitting out on a lawn"),
        ("tHERE ARE MANY DONUTS LAYED TO DRY ON A GRILL", "There are many donuts layed to dry on a grill"),
        ("  A CLOCK IN A DEPOT WITH THE TIME READING 4:21", "  A clock in a depot with the time reading 4:21"),
        # not shouting: sent as they are
        ("A man watches TV on a NYC bus.", "A man watches TV on a NYC bus."),
        ("BMX rider in mid air", "BMX rider in mid air"),
        ("A dog runs on the beach.", "A dog runs on the beach."),
    ],
)
def test_text_for_mt_recases_shouting_captions_only(caption, sent):
    assert text_for_mt(caption) == sent
    assert sent_text(caption) == (None if sent == caption else sent)  # the output's sent_text
    assert is_shouting(caption) is (sent != caption)
    # the same text for the memory and the store, the same characters billed
    assert match_key(text_for_mt(caption)) == match_key(caption) and len(sent) == len(caption)


# Real Multi30k validation captions; the second carries characters that str.splitlines and
# universal newlines treat as line ends (NEL, LINE SEPARATOR, a lone carriage return), as
# captions scraped from the web do.
ENGLISH = [
    "Two young guys with shaggy hair look at their hands while hanging out in the yard.",
    "Several men in hard hats\u2028are operating a giant pulley\u0085system.",
    "A little girl climbing into a wooden playhouse.\r",
    "A man in a blue shirt is standing on a ladder cleaning windows.",
]
GERMAN = [
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Mehrere Männer mit Schutzhelmen bedienen ein Antriebsradsystem.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt Fenster.",
]


@pytest.fixture
def parallel_files(tmp_path):
    (tmp_path / "val.en").write_bytes(("\n".join(ENGLISH) + "\n").encode("utf-8"))
    (tmp_path / "val.de").write_text("\n".join(GERMAN) + "\n", encoding="utf-8")
    return tmp_path


def test_a_line_ends_at_newline_only(parallel_files):
    path = str(parallel_files / "val.en")
    assert count_lines(path) == 4
    assert list(read_lines(path)) == [line.rstrip("\r") for line in ENGLISH]


def test_memory_and_parallel_sets_pair_the_same_lines(parallel_files):
    pattern = str(parallel_files / "*.en")
    (files,) = aligned_files(pattern, "key", "en", ["de"])  # counted aligned: 4 and 4
    expected = list(zip([line.rstrip("\r") for line in ENGLISH], GERMAN))
    parallel = read_parallel("--pairs", pattern, "en", "de")
    assert list(zip(parallel.sources, parallel.targets)) == expected
    memory = [MemoryConfig(format="parallel_text", path=pattern)]
    with local_pipeline() as pipeline:
        entries = (pipeline | ReadTranslationMemory(memory, "en", ["de"])).kept
        assert_that(
            entries | beam.Map(lambda e: (e.source_text, e.translated_text)), equal_to(expected)
        )


def test_a_line_that_is_not_utf8_names_its_file_and_line(tmp_path):
    (tmp_path / "val.en").write_bytes(b"a dog\n\xff\xfe broken\n")
    with pytest.raises(InputError, match=r"val.en: line 2 is not UTF-8"):
        count_lines(str(tmp_path / "val.en"))


# The definitions match_key and normalise's ASCII branch had as regular expressions, kept here
# as their specification: the faster code must give the same key to every text, or
# de-duplication, the memory's look-ups and the untranslated rule would change.
_SPEC_WHITESPACE = re.compile(r"\s+")
_SPEC_FINAL = re.compile(r"[\s.!?;:,]+$")
_SPEC_CONTROLS = {code: None for code in (*range(0x20), 0x7F) if not chr(code).isspace()}


def _spec_normalise(text):
    if text.isascii():
        return _SPEC_WHITESPACE.sub(" ", text.translate(_SPEC_CONTROLS)).strip()
    return normalise(text)  # the branch for other texts did not change: not on trial here


def _texts_to_compare():
    for path in sorted(MULTI30K.glob("*.??")):
        yield from path.read_text(encoding="utf-8").splitlines()
    for path in sorted(SAMPLES.glob("gcc/*.tsv")):
        yield from path.read_text(encoding="utf-8").splitlines()
    # Whitespace, controls, format characters, combining marks, final punctuation, case folding.
    alphabet = ["a", "Z", "9", " ", "  ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x00",
                "\x7f", "\x85", "\xa0", "\u2028", "\u3000", "\u200b", "\u00ad", "e\u0301", ".", "!",
                "?", ";", ":", ",", "...", "ß", "İ", "…", "ǅ", "Ω"]
    chooser = random.Random(2026)
    for _ in range(20_000):
        yield "".join(chooser.choice(alphabet) for _ in range(chooser.randint(0, 12)))


def test_normalise_and_match_key_are_their_regular_expression_definitions():
    texts = list(_texts_to_compare())
    assert len(texts) > 35_000  # 17,000 lines of real captions and translations, and the made-up ones
    for text in texts:
        assert normalise(text) == _spec_normalise(text), repr(text)
        assert match_key(text) == _SPEC_FINAL.sub("", _spec_normalise(text).casefold()), repr(text)
