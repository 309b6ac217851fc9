"""How often each pair check (``transforms/checks.py``) rejects human translations, and whether it
catches the half-untranslated machine translations of shouting captions.

    .venv/bin/python -m benchmarks.pair_checks [--data data/samples] [--examples 5]

Sets (real data, no edits):
- Multi30k (``parallel/multi30k``: every split with ``.de`` / ``.fr`` beside its ``.en``):
  professional human translations of Flickr30k and COCO captions;
- MSCOCO-it validated (``parallel/mscoco-it/*_validated``): machine translations that people
  checked and corrected, joined by annotation id with ``coco/captions_val2017.json``;
- MSCOCO-it unvalidated (Bing, not checked): only its shouting captions, the ones MT copies.

Each check is measured alone (every other check off), then all together as the keep stage runs
them (the first failing check is the reason). Then how many wrong-language translations the
language check catches alone (Multi30k's English, French or German offered as the translation),
and how many perturbed human translations all checks catch (a number word changed to the next,
a name swapped for another pair's name). Prints a table and a few rejected examples per
check; the figures are in docs/design-notes.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

from polycap.report import perturbations
from polycap.transforms.checks import ChecksConfig, Judged, PairChecks
from polycap.transforms.text import is_shouting

CHECKS = ("repetition", "partial_echo", "target_language", "numbers", "names", "length_ratio")


def multi30k(root: Path, lang: str) -> list[tuple[str, str]]:
    pairs = []
    for source in sorted((root / "parallel/multi30k").glob("*.en")):
        target = source.with_suffix(f".{lang}")
        if target.exists():
            lines = zip(source.read_text("utf-8").split("\n"), target.read_text("utf-8").split("\n"))
            pairs += [(en, tr) for en, tr in lines if en.strip() and tr.strip()]
    return pairs


def mscoco_it(root: Path, validated: bool) -> list[tuple[str, str]]:
    with gzip.open(root / "parallel/mscoco-it/captions_val2017.json.gz", "rt", encoding="utf-8") as stream:
        coco = json.load(stream)
    english = {int(note["id"]): note["caption"] for note in coco["annotations"]}
    pattern = "*_validated.json.gz" if validated else "*_unvalidated.json.gz"
    pairs = []
    for path in sorted((root / "parallel/mscoco-it").glob(f"captions_ita_{pattern}")):
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            notes = json.load(stream)["annotations"]
        pairs += [(english[int(n["id"])], n["caption"]) for n in notes if int(n["id"]) in english]
    return pairs


def number_changed(pairs: list[tuple[str, str]], lang: str) -> list[tuple[str, str]]:
    changed = [(source, perturbations.number_changed(target, lang)) for source, target in pairs]
    return [(source, target) for source, target in changed if target is not None]


def name_swapped(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    swapped = zip(sources, perturbations.name_swaps(sources, targets))
    return [(source, target) for source, target in swapped if target is not None]


def only(check: str) -> ChecksConfig:
    return ChecksConfig(**{name: name == check for name in CHECKS})


def judge(pairs: list[tuple[str, str]], lang: str, cfg: ChecksConfig) -> list:
    reasons = PairChecks(cfg).reasons([Judged(source, "en", target, lang) for source, target in pairs])
    return [(source, target, reason) for (source, target), reason in zip(pairs, reasons)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The bundled samples (data/samples/README.md says where each file comes from).
    parser.add_argument("--data", default=str(Path(__file__).parents[1] / "data" / "samples"))
    parser.add_argument("--examples", type=int, default=5)
    args = parser.parse_args(argv)
    root = Path(args.data)
    human = {
        "multi30k de": (multi30k(root, "de"), "de"),
        "multi30k fr": (multi30k(root, "fr"), "fr"),
        "mscoco-it validated": (mscoco_it(root, True), "it"),
    }
    print(f"{'set':<22}{'pairs':>7}" + "".join(f"{name:>17}" for name in CHECKS) + f"{'all':>10}")
    examples: dict = {}
    for name, (pairs, lang) in human.items():
        cells = []
        for check in CHECKS:
            rejected = [row for row in judge(pairs, lang, only(check)) if row[2]]
            examples.setdefault(check, []).extend((name, *row) for row in rejected[: args.examples])
            cells.append(f"{len(rejected):>6} ({100 * len(rejected) / len(pairs):4.2f} %)")
        together = Counter(reason.value for *_, reason in judge(pairs, lang, ChecksConfig()) if reason)
        total = sum(together.values())
        print(f"{name:<22}{len(pairs):>7}" + "".join(f"{cell:>17}" for cell in cells)
              + f"{100 * total / len(pairs):>8.2f} %")
    de, fr = human["multi30k de"][0], human["multi30k fr"][0]
    wrong = {"English source as de": [(s, s + " ") for s, _ in de],
             "French as de": [(s, f) for (s, _), (_, f) in zip(de, fr)],
             "German as fr": [(s, d) for (s, d), _ in zip(de, fr)]}
    print("\nWrong-language translations caught by target_language alone:")
    for name, pairs in wrong.items():
        target = "fr" if name.endswith("fr") else "de"
        caught = sum(bool(reason) for *_, reason in judge(pairs, target, only("target_language")))
        print(f"  {name:<24} {caught:>5} of {len(pairs)} ({100 * caught / len(pairs):.1f} %)")
    print("\nPerturbed human translations caught (all checks):")
    for name in ("multi30k de", "multi30k fr"):
        pairs, lang = human[name]
        for kind, perturbed in (("number changed", number_changed(pairs, lang)),
                                ("name swapped", name_swapped(pairs))):
            caught = sum(bool(reason) for *_, reason in judge(perturbed, lang, ChecksConfig()))
            print(f"  {name:<14} {kind:<16} {caught:>5} of {len(perturbed)}"
                  f" ({100 * caught / max(1, len(perturbed)):.1f} %)")
    shouting = [(s, t) for s, t in mscoco_it(root, False) if is_shouting(s)]
    print(f"\nMSCOCO-it unvalidated (Bing), shouting sources: {len(shouting)}")
    for source, target, reason in judge(shouting, "it", ChecksConfig()):
        print(f"  {reason.value if reason else 'passes':<16} {source.strip()} -> {target.strip()}")
    print("\nHuman translations each check rejects (first examples per set):")
    for check, rows in examples.items():
        print(f"- {check}")
        for name, source, target, _ in rows:
            print(f"    [{name}] {source.strip()} -> {target.strip()}")


if __name__ == "__main__":
    main()
