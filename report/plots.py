"""The audit's and the calibration's plots: matplotlib figures rendered to PNG and returned as
inline ``<img>`` tags (base64 ``data:`` URIs), so a page that shows them needs no other file.

Figures are built with ``matplotlib.figure.Figure`` directly: no pyplot, no GUI backend, no
global state, safe in a worker or a test. Every function takes numbers from an audit or a
calibration dict and computes none of its own.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Sequence

from matplotlib.figure import Figure

ACCEPTED_COLOUR = "#2a9d8f"
REJECTED_COLOURS = ["#f4a261", "#e9c46a", "#e76f51", "#bc6c25", "#dda15e"]
FAILED_COLOURS = ["#c1121f", "#780000", "#9d0208", "#d00000"]
NEUTRAL_COLOUR = "#8d99ae"
LANGUAGE_COLOURS = ["#264653", "#2a9d8f", "#e76f51", "#8338ec", "#3a86ff", "#fb8500", "#6a994e"]
THRESHOLD_COLOUR = "#d62828"
WIDTH, DPI = 7.2, 110
HALF_WIDTH = 5.6  # plots shown two side by side


def _score_histogram(figure: Figure, axes, xlabel: str, title: str, alt: str, name: str) -> str:
    """A histogram of scores (pairs per bin), labelled, with its legend, as an inline <img>."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel("pairs")
    axes.set_title(title)
    axes.legend(fontsize=8, frameon=False, loc="upper left")
    return _png(figure, alt, name)


def _png(figure: Figure, alt: str, name: str) -> str:
    """``figure`` as an inline <img> (PNG, base64)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<img class="plot" data-plot="{html.escape(name)}" alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{data}">'
    )


def _figure(height: float = 3.2, width: float = WIDTH) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height))
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _bars(axes, edges: Sequence[float], counts: Sequence[int], bottom=None, **style):
    widths = [right - left for left, right in zip(edges, edges[1:])]
    axes.bar(edges[:-1], counts, width=widths, align="edge", bottom=bottom, **style)


def funnel(audit: dict) -> str:
    """Captions left after each step, one bar per step, the removals written beside."""
    source = audit["input"]
    valid = source["read"] - source["invalid"]
    unique = valid - source["duplicate"]
    removed_late = f"−{source['propn']:,} proper nouns, −{source['failed']:,} failed"
    steps = [
        ("read", source["read"], "", NEUTRAL_COLOUR),
        ("valid", valid, f"−{source['invalid']:,} invalid", NEUTRAL_COLOUR),
        ("unique", unique, f"−{source['duplicate']:,} duplicate", NEUTRAL_COLOUR),
        ("eligible", source["eligible"], removed_late, NEUTRAL_COLOUR),
    ]
    for index, (lang, n) in enumerate(audit["languages"].items()):
        colour = LANGUAGE_COLOURS[index % len(LANGUAGE_COLOURS)]
        lost = f"−{n['rejected']:,} rejected, −{n['failed']:,} failed"
        steps.append((f"{lang} sampled", n["sampled"], f"{n['not_sampled']:,} not sampled", colour))
        steps.append((f"{lang} accepted", n["accepted"], lost, colour))
    figure, axes = _figure(0.9 + 0.34 * len(steps))
    labels = [label for label, *_ in steps]
    values = [value for _, value, *_ in steps]
    axes.barh(labels, values, color=[colour for *_, colour in steps])
    axes.invert_yaxis()
    top = max(values + [1])
    for position, (_, value, note, _) in enumerate(steps):
        axes.text(value + top * 0.01, position, f"{value:,}  {note}", va="center", fontsize=8)
    axes.set_xlim(0, top * 1.55)
    axes.set_xlabel("captions (pre-sampling) / pairs (per language)")
    axes.set_title("The funnel: what is left after each step")
    return _png(figure, "Funnel chart: captions left after each step", "funnel")


def outcomes(audit: dict) -> str:
    """Per language: sampled pairs split into accepted, rejected by reason, failed by reason."""
    languages = audit["languages"]
    figure, axes = _figure(1.2 + 0.45 * len(languages))
    names = list(languages)
    left = [0] * len(names)
    segments = [("accepted", ACCEPTED_COLOUR, [languages[lang]["accepted"] for lang in names])]
    rejected = sorted({r for lang in names for r in languages[lang]["rejected_by_reason"]})
    failed = sorted({r for lang in names for r in languages[lang]["failed_by_reason"]})
    for index, reason in enumerate(rejected):
        segments.append(
            (
                f"rejected: {reason}",
                REJECTED_COLOURS[index % len(REJECTED_COLOURS)],
                [languages[lang]["rejected_by_reason"].get(reason, 0) for lang in names],
            )
        )
    for index, reason in enumerate(failed):
        segments.append(
            (
                f"failed: {reason}",
                FAILED_COLOURS[index % len(FAILED_COLOURS)],
                [languages[lang]["failed_by_reason"].get(reason, 0) for lang in names],
            )
        )
    for label, colour, values in segments:
        axes.barh(names, values, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, values)]
    axes.invert_yaxis()
    axes.set_xlabel("sampled pairs")
    axes.set_title("Outcome of the sampled pairs per language")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(
        figure, "Stacked bars: accepted, rejected and failed pairs per language", "outcomes"
    )


def similarity(lang: str, numbers: dict, rule: dict) -> str:
    """Stacked histogram of accepted and rejected scores, with the run's threshold."""
    histogram = numbers["similarity_histogram"]
    figure, axes = _figure(3.4, HALF_WIDTH)
    _bars(axes, histogram["edges"], histogram["accepted"], color=ACCEPTED_COLOUR, label="accepted")
    _bars(
        axes,
        histogram["edges"],
        histogram["rejected"],
        bottom=histogram["accepted"],
        color=REJECTED_COLOURS[0],
        label="rejected",
    )
    threshold = numbers.get("threshold")
    if threshold is not None:
        label = (
            f"min_similarity {threshold:g}"
            if "min_similarity" in rule
            else f"top {rule.get('keep_top_fraction', 0):.0%} ended at {threshold:.3f}"
        )
        axes.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5, label=label)
    margin = rule.get("score") == "margin"
    return _score_histogram(
        figure, axes,
        "ratio margin of source and translation" if margin else "cosine similarity of source and translation",
        f"{lang}: {'margin' if margin else 'similarity'} scores ({numbers['scored']:,} scored pairs)",
        f"Histogram of similarity scores for {lang} with the threshold", f"similarity-{lang}",
    )


def length_ratio(lang: str, numbers: dict) -> str:
    """Characters of the translation per character of the source; 1.0 and the median marked."""
    histogram = numbers["length_ratio_histogram"]
    figure, axes = _figure(3.4, HALF_WIDTH)
    _bars(axes, histogram["edges"], histogram["counts"], color=NEUTRAL_COLOUR)
    axes.axvline(1.0, color="#264653", linestyle=":", linewidth=1)
    median = numbers["length_ratio_quantiles"].get("p50")
    if median is not None:
        axes.axvline(median, color=THRESHOLD_COLOUR, linewidth=1, label=f"median {median:.2f}")
        axes.legend(fontsize=8, frameon=False)
    axes.set_xlabel(
        f"translation / source length in characters (last bar: ≥ {histogram['edges'][-2]:g})"
    )
    axes.set_ylabel("pairs")
    axes.set_title(f"{lang}: length ratio of scored pairs")
    return _png(
        figure, f"Histogram of translation/source length ratios for {lang}", f"length-ratio-{lang}"
    )


def propn(numbers: dict) -> str:
    """PROPN ratios of the removed and of the sampled captions, with the cut-off."""
    histogram, cut = numbers["histogram"], numbers["max_propn_ratio"]
    figure, axes = _figure()
    kept = f"kept, sampled ({numbers['sampled_captions']:,})"
    _bars(axes, histogram["edges"], histogram["sampled"], color=ACCEPTED_COLOUR, label=kept)
    _bars(axes, histogram["edges"], histogram["removed"], bottom=histogram["sampled"],
          color=REJECTED_COLOURS[2], label=f"removed ({numbers['removed']:,})")
    if cut is not None:
        axes.axvline(cut, color=THRESHOLD_COLOUR, linestyle="--", label=f"cut-off {cut:g}")
    axes.set_xlabel("share of proper nouns (PROPN) among the caption's words")
    axes.set_ylabel("captions")
    axes.set_title("Proper-noun ratio")
    axes.legend(fontsize=8, frameon=False)
    return _png(figure, "Histogram of PROPN ratios with the cut-off", "propn")


def datasets(audit: dict) -> str:
    """Accepted pairs per source dataset, one bar per language."""
    found = audit["datasets"]
    languages = list(audit["languages"])
    names = list(found)
    figure, axes = _figure(1.2 + 0.4 * max(1, len(names)) * max(1, len(languages)) ** 0.5)
    height = 0.8 / max(1, len(languages))
    for index, lang in enumerate(languages):
        positions = [row + index * height for row in range(len(names))]
        axes.barh(
            positions,
            [found[name]["accepted"][lang] for name in names],
            height=height,
            color=LANGUAGE_COLOURS[index % len(LANGUAGE_COLOURS)],
            label=lang,
        )
    axes.set_yticks([row + 0.4 - height / 2 for row in range(len(names))], names)
    axes.invert_yaxis()
    axes.set_xlabel("accepted pairs")
    axes.set_title("Accepted pairs per source dataset")
    axes.legend(fontsize=8, frameon=False, loc="lower right")
    return _png(figure, "Bars: accepted pairs per source dataset and language", "datasets")


def calibration_scores(lang: str, result: dict) -> str:
    """Overlaid histograms of true and mismatched pairs, with the proposed threshold."""
    histogram, threshold = result["histogram"], result["threshold"]
    figure, axes = _figure(3.4, HALF_WIDTH)
    edges = histogram["edges"]
    _bars(
        axes,
        edges,
        histogram["mismatched"],
        color=REJECTED_COLOURS[2],
        alpha=0.6,
        label=f"mismatched pairs ({result['mismatched_pairs']:,})",
    )
    _bars(
        axes,
        edges,
        histogram["true"],
        color=ACCEPTED_COLOUR,
        alpha=0.6,
        label=f"true pairs ({result['true_pairs']:,})",
    )
    axes.axvline(
        threshold["min_similarity"],
        color=THRESHOLD_COLOUR,
        linestyle="--",
        label=f"{threshold['rule']}: {threshold['min_similarity']:.3f}",
    )
    return _score_histogram(
        figure, axes, "cosine similarity of caption and translation",
        f"{lang}: true vs mismatched pairs",
        f"Score distributions of true and mismatched pairs for {lang}", f"calibration-{lang}",
    )


def roc(lang: str, result: dict) -> str:
    """The ROC curve of true vs mismatched pairs, the proposed threshold marked."""
    figure, axes = _figure(3.4, HALF_WIDTH)
    axes.plot(
        result["roc"]["fpr"],
        result["roc"]["tpr"],
        color=LANGUAGE_COLOURS[0],
        label=f"AUC {result['auc']:.4f}",
    )
    axes.plot([0, 1], [0, 1], color=NEUTRAL_COLOUR, linestyle=":", label="chance")
    threshold = result["threshold"]
    axes.plot(
        [threshold["false_positive_rate"]],
        [threshold["recall"]],
        "o",
        color=THRESHOLD_COLOUR,
        label=f"threshold {threshold['min_similarity']:.3f}",
    )
    axes.set_xlabel("false positive rate (mismatched pairs accepted)")
    axes.set_ylabel("true positive rate (true pairs accepted)")
    axes.set_title(f"{lang}: ROC curve")
    axes.legend(fontsize=8, frameon=False, loc="lower right")
    return _png(figure, f"ROC curve for {lang}", f"roc-{lang}")
