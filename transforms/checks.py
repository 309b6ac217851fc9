"""Pair checks: what a cosine score lets through. Each check answers "pass" or "fail, because
REASON" for one translated pair, from its texts alone, whatever translated it (the memory, the
store or a provider); the keep stage and ``polycap audit --pairs`` apply them the same way.

- ``repetition``: the translation loops (an n-gram of up to 4 words repeated ``max_repeats``
  times or more in a row, "der der der") where the source does not;
- ``partial_echo``: most of the translation's words are the source's words copied ("UN POLICE
  OFFICER È SITTIGN DOWN TALKING"); a few copied names and loanwords ("computer") are not enough;
- ``wrong_language``: lingua is confident (``min_language_confidence``) that the translation is
  in another language than the target; short captions fool identifiers, so a doubt never rejects;
- ``number_mismatch``: the numbers (digits and number words) of the source and the translation
  differ ("two dogs" -> "drei Hunde"); "one" is left out, since "a"/"ein"/"un" are its words too;
- ``name_missing``: a name of the source (a run of capitalised words inside a sentence or
  quotation of a caption that is not shouting, less the words translators translate: days,
  months, holidays, points of the compass, peoples, short acronyms) has no word in the
  translation (its hyphen and apostrophe parts counted too), not even folded (case,
  diacritics), or, for a name of four letters or more, sharing its first four letters ("Paris"
  / "Parigi") or spelled close with the same initial, C and K alike ("Dali" / "Dalaï",
  "Canada" / "Kanada"); a shorter name must be there as it is;
- ``length_ratio``: characters of translation per character of source outside
  [``min_length_ratio``, ``max_length_ratio``] (sources shorter than
  ``length_ratio_min_source_chars`` are too short for the ratio to mean anything).

A pair is judged by the checks in that order; the first that fails is its reason. The rates at
which each check rejects human translations are measured by ``benchmarks/pair_checks.py``
(docs/design-notes.md).
"""

from __future__ import annotations

import difflib
import functools
import enum
import re
import unicodedata
from collections import defaultdict
from typing import NamedTuple, Optional, Sequence

from pydantic import Field, field_validator, model_validator

from polycap.transforms.languages import base_language, is_language_code
from polycap.transforms.section import Section
from polycap.transforms.text import is_shouting


class CheckReason(str, enum.Enum):
    REPETITION = "repetition"
    PARTIAL_ECHO = "partial_echo"
    WRONG_LANGUAGE = "wrong_language"
    NUMBER_MISMATCH = "number_mismatch"
    NAME_MISSING = "name_missing"
    LENGTH_RATIO = "length_ratio"


class ChecksConfig(Section):
    """Which pair checks run (all by default) and their thresholds."""

    repetition: bool = True
    partial_echo: bool = True
    target_language: bool = True
    numbers: bool = True
    names: bool = True
    length_ratio: bool = True
    max_repeats: int = Field(default=3, ge=2)
    echo_min_words: int = Field(default=3, ge=1)
    echo_max_share: float = Field(default=0.5, gt=0.0, le=1.0)
    min_language_confidence: float = Field(default=0.7, gt=0.0, le=1.0)
    # Languages lingua weighs besides the source and the target: the usual wrong answers.
    other_languages: tuple[str, ...] = ("en", "de", "fr", "es", "it", "pt", "nl")
    min_length_ratio: float = Field(default=0.3, gt=0.0)
    max_length_ratio: float = Field(default=3.0, gt=0.0)
    length_ratio_min_source_chars: int = Field(default=20, ge=1)

    @field_validator("other_languages")
    @classmethod
    def _known_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [code for code in codes if not is_language_code(code)]
        if unknown:
            raise ValueError(f"unknown language code {unknown[0]!r}")
        return codes

    @model_validator(mode="after")
    def _ordered_band(self) -> "ChecksConfig":
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        return self


_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_DIGITS = re.compile(r"\d+")
_SENTENCE_END = re.compile(r"[.!?]\s")

# Number words 2 to 20, the tens and a hundred; 1 is left out in every language ("a man" is
# "ein Mann", "un homme": the article and the number are one word). Languages without a table
# compare digits only.
_NUMBER_WORDS: dict[str, dict[str, int]] = {
    "en": {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
           "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
           "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
           "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100},
    "de": {"zwei": 2, "zweier": 2, "drei": 3, "dreier": 3, "vier": 4, "fünf": 5, "sechs": 6,
           "sieben": 7, "acht": 8, "neun": 9, "zehn": 10, "elf": 11, "zwölf": 12,
           "dreizehn": 13, "vierzehn": 14, "fünfzehn": 15, "sechzehn": 16, "siebzehn": 17,
           "achtzehn": 18, "neunzehn": 19, "zwanzig": 20, "dreißig": 30, "vierzig": 40,
           "fünfzig": 50, "hundert": 100},
    "fr": {"deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6, "sept": 7, "huit": 8,
           "neuf": 9, "dix": 10, "onze": 11, "douze": 12, "treize": 13, "quatorze": 14,
           "quinze": 15, "seize": 16, "dix-sept": 17, "dix-huit": 18, "dix-neuf": 19,
           "vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50, "cent": 100},
    "it": {"due": 2, "tre": 3, "quattro": 4, "cinque": 5, "sei": 6, "sette": 7, "otto": 8,
           "nove": 9, "dieci": 10, "undici": 11, "dodici": 12, "tredici": 13,
           "quattordici": 14, "quindici": 15, "sedici": 16, "diciassette": 17, "diciotto": 18,
           "diciannove": 19, "venti": 20, "trenta": 30, "quaranta": 40, "cinquanta": 50,
           "cento": 100},
    "es": {"dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8,
           "nueve": 9, "diez": 10, "once": 11, "doce": 12, "trece": 13, "catorce": 14,
           "quince": 15, "dieciséis": 16, "diecisiete": 17, "dieciocho": 18, "diecinueve": 19,
           "veinte": 20, "treinta": 30, "cuarenta": 40, "cincuenta": 50, "cien": 100,
           "ciento": 100},
}
# Words that may state a number without having to ("a pair of women" is "zwei Frauen", "both
# hands" is "deux mains", "two cars" may be "die beiden Autos"): they excuse a number the other
# side states, and are never required.
_LOOSE_NUMBER_WORDS: dict[str, dict[str, int]] = {
    "en": {"pair": 2, "couple": 2, "both": 2, "double": 2, "twin": 2, "twins": 2, "duo": 2, "trio": 3,
           "dozen": 12},
    "de": {"beide": 2, "beiden": 2, "beider": 2, "beides": 2, "paar": 2, "pärchen": 2,
           "doppel": 2, "doppelt": 2, "doppelte": 2, "doppelter": 2, "zwillinge": 2, "dutzend": 12},
    "fr": {"couple": 2, "paire": 2, "double": 2, "jumeaux": 2, "jumelles": 2, "duo": 2,
           "douzaine": 12},
    "it": {"entrambi": 2, "entrambe": 2, "coppia": 2, "paio": 2, "doppio": 2, "doppia": 2,
           "gemelli": 2, "dozzina": 12},
    "es": {"ambos": 2, "ambas": 2, "pareja": 2, "par": 2, "doble": 2, "gemelos": 2,
           "docena": 12},
}
# Languages that write numbers into compounds ("vierköpfige Familie", "Doppeldeckerbus"): a word
# that starts with a number word of four letters or more, followed by four letters or more, may
# state that number ("Achterbahn", a roller coaster, may too: such a word never requires one).
_COMPOUNDING = frozenset({"de", "nl"})
_COMPOUND_MIN_PART = 4


def number_words(lang: str) -> dict[str, int]:
    """``lang``'s number words and their values ({} for a language without a table)."""
    return _NUMBER_WORDS.get(base_language(lang), {})


def words(text: str) -> list[str]:
    """The words of ``text`` (letters, joined by apostrophes or hyphens), as written."""
    return _WORD.findall(text)


def fold(word: str) -> str:
    """Casefolded, without diacritics: "Zürich" and "zurich" fold alike."""
    if word.isascii():  # nothing to decompose: most words of most captions
        return word.casefold()
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def numbers(text: str, lang: str) -> tuple[set, set]:
    """(stated, loose): the numbers other than 1 that ``text`` states in digits or in ``lang``'s
    number words, and those it may state (``_LOOSE_NUMBER_WORDS``, compounds)."""
    lang = base_language(lang)
    table, loose_table = number_words(lang), _LOOSE_NUMBER_WORDS.get(lang, {})
    stated = {int(digits) for digits in _DIGITS.findall(text)}
    loose = set()
    for word in words(text):
        word = word.casefold()
        # "two-story" states 2, as its first part does; "dix-sept" is in the table whole
        part = word if word in table or "-" not in word else word.split("-")[0]
        if part in table:
            stated.add(table[part])
        elif part in loose_table:
            loose.add(loose_table[part])
        elif lang in _COMPOUNDING and part.startswith(_compound_heads(lang)):
            loose.update(
                value for name, value in (*table.items(), *loose_table.items())
                if len(name) >= _COMPOUND_MIN_PART and part.startswith(name)
                and len(part) - len(name) >= _COMPOUND_MIN_PART
            )
    return stated - {1}, loose - {1}


@functools.lru_cache(maxsize=None)
def _compound_heads(lang: str) -> tuple[str, ...]:
    """The number words that may start a compound of ``lang``: one C-level ``startswith`` rules
    out most words before the loop over them."""
    names = (*number_words(lang), *_LOOSE_NUMBER_WORDS.get(lang, {}))
    return tuple(name for name in names if len(name) >= _COMPOUND_MIN_PART)


def numbers_agree(source: str, source_lang: str, translation: str, target_lang: str) -> bool:
    """Every number one side states, the other states or may state (see ``numbers``). How often
    is not compared: "two men, two dogs" may well say "zwei" once."""
    source_stated, source_loose = numbers(source, source_lang)
    target_stated, target_loose = numbers(translation, target_lang)
    return (source_stated <= target_stated | target_loose
            and target_stated <= source_stated | source_loose)


# Capitalised English words that translators translate, so their absence says nothing: days,
# months, holidays, points of the compass ("an Eastern nation": "östlichen", "de l'Est"), words
# for peoples and their languages ("African", "Japanese", "Swiss"), and short acronyms ("TV",
# "GI", "USA": "Fernseher", "Soldat", "américaine").
_TRANSLATED_CAPITALS = frozenset(
    """monday tuesday wednesday thursday friday saturday sunday january february march april may
    june july august september october november december christmas easter halloween
    thanksgiving swiss greek thai dutch french north south east west northern southern eastern
    western""".split()
)
_PEOPLES = re.compile(r"(?:an|ans|ese|ish|ic|ics|ist|ists)$")
_SHORT_ACRONYM = 3
_NEAR_RATIO = 0.65
_NEAR_MIN = 4  # letters a name needs before a near spelling counts (``_near``)
_JOINS = re.compile(r"[-'’]")
_QUOTED = re.compile(r"[\"“„«‘']\s*$")  # an opening quotation mark right before a word
_POSSESSIVE = re.compile(r"['’]s$")


def name_runs(text: str) -> list[list[str]]:
    """The names of ``text``: runs of capitalised words that do not start a sentence, nor a
    quotation ("Red Sox", "Paris"; not "Come" in 'a sign that says "Come on now"'), less the
    words translators translate (``_TRANSLATED_CAPITALS``). None in a shouting text: every word
    is capitalised there."""
    if is_shouting(text):
        return []
    runs: list[list[str]] = []
    for sentence in _SENTENCE_END.split(text):
        previous = None
        for position, found in enumerate(_WORD.finditer(sentence)):
            word, part = found.group(), found.group().split("-")[0]
            is_name = (
                position > 0 and word[0].isupper() and word != "I"
                and not _QUOTED.search(sentence, 0, found.start())
                and fold(part) not in _TRANSLATED_CAPITALS and not _PEOPLES.search(part)
                and not (part.isupper() and len(part) <= _SHORT_ACRONYM)
            )
            if is_name and previous == position - 1:
                runs[-1].append(word)
            elif is_name:
                runs.append([word])
            previous = position if is_name else previous
    return runs


def _initial(word: str) -> str:
    """The first letter, C and K alike ("Canada" / "Kanada", "Cairo" / "Kairo")."""
    return "k" if word[:1] == "c" else word[:1]


def _near(name: str, folded_words: list[str]) -> bool:
    """``name`` is one of ``folded_words``, folded; or, for a name of ``_NEAR_MIN`` letters or
    more, within one or nearly so: a shared first four letters ("Paris" / "Parigi"), or a close
    spelling with the same initial ("Dali" / "Dalai", "Brazil" / "Brasil"). A shorter name must
    be there as it is: "De", "All" or "Sin" would otherwise be found inside any word ("der",
    "base-ball", "ein") and a swapped name pass."""
    folded = fold(_POSSESSIVE.sub("", name))  # "Fez's": "des fez"
    if len(folded) < _NEAR_MIN:
        return folded in folded_words
    return any(
        word == folded or folded in word or word.startswith(folded[:_NEAR_MIN])
        or (len(word) >= _NEAR_MIN - 1 and _initial(word) == _initial(folded)
            and difflib.SequenceMatcher(None, folded, word).ratio() >= _NEAR_RATIO)
        for word in folded_words
    )


def missing_names(source: str, translation: str) -> list[list[str]]:
    """The names of ``source`` (``name_runs``) of which no word is in the translation (a run
    may be half translated: "Eiffel Tower" -> "Eiffelturm", "Dali Lama" -> "Dalaï Lama"); a
    word of the translation joined by hyphens or apostrophes counts whole and by its parts
    ("Kanada-Stoff", "l'Antarctique")."""
    folded = [fold(part) for word in words(translation)
              for part in dict.fromkeys([word, *_JOINS.split(word)])]
    return [run for run in name_runs(source) if not any(_near(name, folded) for name in run)]


def echo(source: str, translation: str) -> tuple[int, int]:
    """(copied, content): of the translation's words of three letters or more, how many are
    words of the source (folded), and how many there are."""
    source_words = {fold(word) for word in words(source)}
    content = [fold(word) for word in words(translation) if len(word) >= 3]
    return sum(word in source_words for word in content), len(content)


def longest_loop(text: str, max_n: int = 4) -> int:
    """The most times an n-gram of words (n <= ``max_n``) repeats back to back in ``text``."""
    tokens = [fold(word) for word in words(text)] + _DIGITS.findall(text)
    longest = 1
    for n in range(1, max_n + 1):
        for start in range(len(tokens) - n):
            repeats = 1
            while tokens[start : start + n] == tokens[start + repeats * n : start + (repeats + 1) * n]:
                repeats += 1
            longest = max(longest, repeats)
    return longest


class Judged(NamedTuple):
    """One pair as the checks see it."""

    source: str
    source_lang: str
    translation: str
    target_lang: str


class PairChecks:
    """The configured checks; ``reasons(batch)`` judges pairs, ``reason(...)`` one. Lingua's
    detectors are built on first use, one per (source, target) language pair, and kept: build
    one per worker (in a DoFn's ``setup``), never per pair."""

    def __init__(self, cfg: ChecksConfig):
        self._cfg = cfg
        self._detectors: dict = {}

    def _detector(self, source_lang: str, target_lang: str):
        """(lingua detector, the target's lingua Language), or None where lingua does not know
        the target language."""
        key = (base_language(source_lang), base_language(target_lang))
        if key not in self._detectors:
            from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

            try:
                target = Language.from_iso_code_639_1(IsoCode639_1.from_str(key[1]))
            except ValueError:
                self._detectors[key] = None
            else:
                codes = []
                for code in (*key, *self._cfg.other_languages):
                    try:
                        codes.append(IsoCode639_1.from_str(base_language(code)))
                    except ValueError:
                        continue  # a language lingua lacks cannot be the wrong answer either
                detector = LanguageDetectorBuilder.from_iso_codes_639_1(*set(codes)).build()
                self._detectors[key] = (detector, target)
        return self._detectors[key]

    def wrong_languages(self, pairs: Sequence[Judged]) -> list[bool]:
        """Per pair: lingua is at least ``min_language_confidence`` sure its translation is in
        another language than its target. One parallel lingua call per language pair."""
        wrong = [False] * len(pairs)
        by_languages: dict = defaultdict(list)
        for index, pair in enumerate(pairs):
            by_languages[(pair.source_lang, pair.target_lang)].append(index)
        for languages, indices in by_languages.items():
            found = self._detector(*languages)
            if found is None:
                continue
            detector, target = found
            texts = [pairs[index].translation for index in indices]
            for index, values in zip(
                indices, detector.compute_language_confidence_values_in_parallel(texts)
            ):
                wrong[index] = bool(values) and values[0].language != target and (
                    values[0].value >= self._cfg.min_language_confidence
                )
        return wrong

    def reasons(self, pairs: Sequence[Judged]) -> list[Optional[CheckReason]]:
        """Per pair, the first check it fails (in ``CheckReason``'s order), or None. A batch at
        a time: the language check runs on all its translations at once."""
        cfg = self._cfg
        wrong = self.wrong_languages(pairs) if cfg.target_language else [False] * len(pairs)
        return [self._reason(pair, wrong_language) for pair, wrong_language in zip(pairs, wrong)]

    def reason(self, source: str, source_lang: str, translation: str,
               target_lang: str) -> Optional[CheckReason]:
        """The first check one pair fails, or None (``reasons`` of a batch of one)."""
        return self.reasons([Judged(source, source_lang, translation, target_lang)])[0]

    def _reason(self, pair: Judged, wrong_language: bool) -> Optional[CheckReason]:
        cfg = self._cfg
        source, translation = pair.source, pair.translation
        if cfg.repetition and longest_loop(translation) >= cfg.max_repeats > longest_loop(source):
            return CheckReason.REPETITION
        if cfg.partial_echo:
            copied, content = echo(source, translation)
            if copied >= cfg.echo_min_words and copied >= cfg.echo_max_share * content:
                return CheckReason.PARTIAL_ECHO
        if wrong_language:
            return CheckReason.WRONG_LANGUAGE
        if cfg.numbers and not numbers_agree(source, pair.source_lang, translation, pair.target_lang):
            return CheckReason.NUMBER_MISMATCH
        if cfg.names and missing_names(source, translation):
            return CheckReason.NAME_MISSING
        if cfg.length_ratio and len(source) >= cfg.length_ratio_min_source_chars:
            ratio = len(translation) / len(source)
            if not cfg.min_length_ratio <= ratio <= cfg.max_length_ratio:
                return CheckReason.LENGTH_RATIO
        return None
