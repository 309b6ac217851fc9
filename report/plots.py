"""The audit's and the calibration's plots, drawn as inline SVG: each function returns one
``<svg class="plot" data-plot=NAME role="img">`` element, so a page that shows it needs no other
file, its text stays selectable and it scales without blurring.

The SVG is written by hand from a few primitives (a linear scale, axes, bars, lines, a legend,
text) rather than with a plotting library: importing matplotlib and rendering its figures cost
about 2 s at the end of every run. Every function takes numbers from an audit or a calibration
dict and computes none of its own.
"""

from __future__ import annotations

import html
import math
from typing import Callable, Optional, Sequence

ACCEPTED_COLOUR = "#2a9d8f"
REJECTED_COLOURS = ["#f4a261", "#e9c46a", "#e76f51", "#bc6c25", "#dda15e"]
FAILED_COLOURS = ["#c1121f", "#780000", "#9d0208", "#d00000"]
NEUTRAL_COLOUR = "#8d99ae"
LANGUAGE_COLOURS = ["#264653", "#2a9d8f", "#e76f51", "#8338ec", "#3a86ff", "#fb8500", "#6a994e"]
THRESHOLD_COLOUR = "#d62828"
TEXT_COLOUR = "#1d2a35"
# The PNGs' sizes (inches at 110 dpi), kept so the page's layout does not move.
WIDTH = 792
HALF_WIDTH = 616  # plots shown two side by side
HEIGHT = 374
FONT_SIZE, SMALL_FONT_SIZE = 13, 11
DASHES = {"dashed": "6 4", "dotted": "2 3", "solid": None}


def _text_width(text: str, size: float) -> float:
    """About how wide ``text`` is drawn: no font metrics here, so an average glyph width."""
    return len(text) * size * 0.58


def _number(value: float) -> str:
    """A coordinate, short: a pixel's tenth is below what a screen shows."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) from at or below ``low`` to
    at or above ``high``."""
    if not high > low:
        high = low + 1  # all-zero counts, or one value: still an axis to draw
    rough = (high - low) / most
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _labelled(ticks: list[float]) -> list[tuple[float, str]]:
    """Each tick with its label, as many decimals as the step between ticks needs."""
    step = ticks[1] - ticks[0]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [(value, f"{value:,.{decimals}f}") for value in ticks]


def _inches(height: float) -> int:
    """Pixels for a height the PNGs gave in inches (at 110 dpi)."""
    return round(height * 110)


class _Scale:
    """A linear map from data values (``low``..``high``) to pixels (``start``..``end``)."""

    def __init__(self, low: float, high: float, start: float, end: float):
        self.low, self.high, self.start, self.end = low, high, start, end

    def __call__(self, value: float) -> float:
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)


class _Chart:
    """One chart: marks are added in data coordinates and drawn when ``svg`` is called, once
    every mark's extent is known and the scales and margins can be chosen.

    With ``rows`` the y axis is categorical: row i spans y = i..i+1, the first row on top.
    ``legend`` is where the legend goes: "upper left", "upper right", "lower right" inside the
    plot area, or "right" outside it.
    """

    def __init__(self, title: str, x_label: str, y_label: str = "", width: int = WIDTH,
                 height: int = HEIGHT, rows: Sequence[str] = (), legend: str = "upper left"):
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.width, self.height, self.rows, self.legend_at = width, height, list(rows), legend
        self.xs: list[float] = []
        self.ys: list[float] = [0.0]  # counts and rates: the y axis starts at zero
        self.marks: list[Callable[[_Scale, _Scale], str]] = []
        self.keys: list[tuple[str, str]] = []  # the legend: (swatch drawing, label) per entry

    # ------------------------------------------------------------------ marks

    def bar(self, x0: float, x1: float, y0: float, y1: float, colour: str, opacity: float = 1):
        """A filled rectangle between two x and two y values."""
        self.xs += [x0, x1]
        self.ys += [y0, y1]
        fill = f' fill-opacity="{opacity:g}"' if opacity < 1 else ""

        def draw(x: _Scale, y: _Scale) -> str:
            left, right = sorted((x(x0), x(x1)))
            top, bottom = sorted((y(y0), y(y1)))
            # crispEdges: neighbouring bins meet without a faint anti-aliased seam.
            return (f'<rect x="{_number(left)}" y="{_number(top)}" width="{_number(right - left)}"'
                    f' height="{_number(bottom - top)}" fill="{colour}"{fill}'
                    ' shape-rendering="crispEdges"/>')

        self.marks.append(draw)

    def columns(self, edges: Sequence[float], heights: Sequence[float], colour: str,
                bottoms: Optional[Sequence[float]] = None, opacity: float = 1):
        """A histogram: one bar per bin between consecutive ``edges``, stacked on ``bottoms``."""
        bottoms = bottoms or [0] * len(heights)
        self.xs += [edges[0], edges[-1]]
        for left, right, height, bottom in zip(edges, edges[1:], heights, bottoms):
            if height:
                self.bar(left, right, bottom, bottom + height, colour, opacity)

    def line(self, xs: Sequence[float], ys: Sequence[float], colour: str, style: str = "solid",
             width: float = 1.5):
        """A polyline through the points (xs[i], ys[i])."""
        self.xs += list(xs)
        self.ys += list(ys)
        self.marks.append(lambda x, y: (
            f'<polyline fill="none" stroke="{colour}" stroke-width="{width:g}"'
            f'{_dash(style)} points="'
            + " ".join(f"{_number(x(a))},{_number(y(b))}" for a, b in zip(xs, ys)) + '"/>'
        ))

    def vertical(self, value: float, colour: str, style: str = "solid", width: float = 1.5):
        """A line across the whole plot area at x = ``value`` (a threshold, a median)."""
        self.xs.append(value)
        self.marks.append(lambda x, y: (
            f'<line x1="{_number(x(value))}" x2="{_number(x(value))}" y1="{_number(y.start)}"'
            f' y2="{_number(y.end)}" stroke="{colour}" stroke-width="{width:g}"{_dash(style)}/>'
        ))

    def include_x(self, value: float):
        """Widen the x axis to reach ``value`` (room for notes beside the bars)."""
        self.xs.append(value)

    def dot(self, x0: float, y0: float, colour: str):
        """A point marked at (x0, y0)."""
        self.xs.append(x0)
        self.ys.append(y0)
        self.marks.append(lambda x, y: (
            f'<circle cx="{_number(x(x0))}" cy="{_number(y(y0))}" r="4" fill="{colour}"/>'
        ))

    def note(self, x0: float, y0: float, text: str):
        """Small text starting just right of (x0, y0), centred on it vertically."""
        self.marks.append(lambda x, y: _text(x(x0) + 4, y(y0), text, SMALL_FONT_SIZE,
                                             anchor="start", baseline="middle"))

    def key(self, label: str, colour: str, kind: str = "box", style: str = "solid"):
        """A legend entry: a box (bars), a line (lines, in ``style``) or a dot (a point)."""
        swatch = {
            "box": f'<rect x="0" y="-5" width="14" height="10" fill="{colour}"/>',
            "line": f'<line x1="0" x2="14" y1="0" y2="0" stroke="{colour}" stroke-width="1.5"'
                    f'{_dash(style)}/>',
            "dot": f'<circle cx="7" cy="0" r="4" fill="{colour}"/>',
        }[kind]
        self.keys.append((swatch, label))

    # ------------------------------------------------------------------ layout

    def svg(self, alt: str, name: str) -> str:
        """The chart as one inline ``<svg>``, with ``alt`` as its accessible name."""
        x_ticks = _labelled(_ticks(min(self.xs, default=0), max(self.xs, default=1)))
        if self.rows:
            y_ticks = [(row + 0.5, label) for row, label in enumerate(self.rows)]
        else:
            y_ticks = _labelled(_ticks(min(self.ys), max(self.ys), most=5))
        key_width = 22 + max((_text_width(label, SMALL_FONT_SIZE) for _, label in self.keys),
                             default=0)
        left = 14 + max(_text_width(label, SMALL_FONT_SIZE) for _, label in y_ticks)
        left += 22 if self.y_label else 0
        # Room for half the last x tick's label, which is centred on the axis's end.
        right = 4 + _text_width(x_ticks[-1][1], SMALL_FONT_SIZE) / 2
        right += key_width + 10 if self.keys and self.legend_at == "right" else 0
        top, bottom = 34, 50
        x = _Scale(x_ticks[0][0], x_ticks[-1][0], left, self.width - right)
        if self.rows:
            y = _Scale(0, len(self.rows), top, self.height - bottom)
        else:
            y = _Scale(y_ticks[0][0], y_ticks[-1][0], self.height - bottom, top)
        parts = [f"<title>{html.escape(alt)}</title>"]
        # Grouped so that a reader (or a test) can tell the data from the legend's swatches.
        parts.append(f'<g class="marks">{"".join(draw(x, y) for draw in self.marks)}</g>')
        parts.append(self._axes(x, y, x_ticks, y_ticks))
        parts.append(self._legend(x, y, key_width))
        # white-space: pre keeps the two spaces between a funnel bar's count and its note.
        return (
            f'<svg class="plot" data-plot="{html.escape(name)}" role="img" '
            f'aria-label="{html.escape(alt)}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="system-ui, sans-serif" '
            f'font-size="{FONT_SIZE}" fill="{TEXT_COLOUR}" style="white-space: pre">'
            f'{"".join(parts)}</svg>'
        )

    def _axes(self, x: _Scale, y: _Scale, x_ticks: list[tuple[float, str]],
              y_ticks: list[tuple[float, str]]) -> str:
        """The left and bottom axes with their labelled ticks, the title and the axis titles."""
        axis = f'stroke="{TEXT_COLOUR}" stroke-width="1"'
        baseline, ceiling = max(y.start, y.end), min(y.start, y.end)
        parts = [
            f'<line x1="{_number(x.start)}" x2="{_number(x.end)}" y1="{_number(baseline)}" '
            f'y2="{_number(baseline)}" {axis}/>',
            f'<line x1="{_number(x.start)}" x2="{_number(x.start)}" y1="{_number(ceiling)}" '
            f'y2="{_number(baseline)}" {axis}/>',
        ]
        for value, label in x_ticks:
            at = _number(x(value))
            parts.append(f'<line x1="{at}" x2="{at}" y1="{_number(baseline)}" '
                         f'y2="{_number(baseline + 4)}" {axis}/>')
            parts.append(_text(x(value), baseline + 16, label, SMALL_FONT_SIZE))
        for value, label in y_ticks:
            at = _number(y(value))
            parts.append(f'<line x1="{_number(x.start - 4)}" x2="{_number(x.start)}" y1="{at}" '
                         f'y2="{at}" {axis}/>')
            parts.append(_text(x.start - 7, y(value), label, SMALL_FONT_SIZE, anchor="end",
                               baseline="middle"))
        middle = (x.start + x.end) / 2
        parts.append(_text(middle, self.height - 10, self.x_label, FONT_SIZE))
        parts.append(_text(middle, 20, self.title, FONT_SIZE + 1, weight="600"))
        if self.y_label:
            centre = (y.start + y.end) / 2
            parts.append(_text(14, centre, self.y_label, FONT_SIZE, baseline="middle",
                               rotate=-90))
        return "".join(parts)

    def _legend(self, x: _Scale, y: _Scale, key_width: float) -> str:
        """The legend, one entry a line, in its corner, without a frame."""
        if not self.keys:
            return ""
        line_height = 15
        plot_top, plot_bottom = min(y.start, y.end), max(y.start, y.end)
        left = {"upper left": x.start + 8, "right": x.end + 10}.get(
            self.legend_at, x.end - key_width - 8)
        first = plot_top + 14
        if self.legend_at == "lower right":
            first = plot_bottom - 8 - line_height * len(self.keys)
        return '<g class="legend">' + "".join(
            f'<g transform="translate({_number(left)},{_number(first + line_height * i)})">'
            f'{swatch}{_text(20, 0, label, SMALL_FONT_SIZE, anchor="start", baseline="middle")}</g>'
            for i, (swatch, label) in enumerate(self.keys)
        ) + "</g>"


def _dash(style: str) -> str:
    dash = DASHES[style]
    return f' stroke-dasharray="{dash}"' if dash else ""


def _text(x: float, y: float, text: str, size: int, anchor: str = "middle",
          baseline: str = "auto", weight: str = "normal", rotate: float = 0) -> str:
    """``text`` (escaped) at (x, y); ``rotate`` turns it about that point."""
    turn = f' transform="rotate({rotate:g} {_number(x)} {_number(y)})"' if rotate else ""
    extra = f' dominant-baseline="{baseline}"' if baseline != "auto" else ""
    extra += f' font-weight="{weight}"' if weight != "normal" else ""
    return (f'<text x="{_number(x)}" y="{_number(y)}" font-size="{size}" '
            f'text-anchor="{anchor}"{extra}{turn}>{html.escape(text)}</text>')


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
    chart = _Chart("The funnel: what is left after each step",
                   "captions (pre-sampling) / pairs (per language)",
                   height=_inches(0.9 + 0.34 * len(steps)), rows=[label for label, *_ in steps])
    for row, (_, value, note, colour) in enumerate(steps):
        chart.bar(0, value, row + 0.1, row + 0.9, colour)
        chart.note(value, row + 0.5, f"{value:,}  {note}")
    chart.include_x(max([value for _, value, *_ in steps] + [1]) * 1.55)
    return chart.svg("Funnel chart: captions left after each step", "funnel")


def outcomes(audit: dict) -> str:
    """Per language: sampled pairs split into accepted, rejected by reason, failed by reason."""
    languages = audit["languages"]
    names = list(languages)
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
    chart = _Chart("Outcome of the sampled pairs per language", "sampled pairs",
                   height=_inches(1.2 + 0.45 * len(names)), rows=names, legend="right")
    left = [0] * len(names)
    for label, colour, values in segments:
        for row, (start, value) in enumerate(zip(left, values)):
            if value:
                chart.bar(start, start + value, row + 0.1, row + 0.9, colour)
        chart.key(label, colour)
        left = [a + b for a, b in zip(left, values)]
    return chart.svg(
        "Stacked bars: accepted, rejected and failed pairs per language", "outcomes"
    )


def similarity(lang: str, numbers: dict, rule: dict) -> str:
    """Stacked histogram of accepted and rejected scores, with the run's threshold."""
    histogram = numbers["similarity_histogram"]
    margin = rule.get("score") == "margin"  # the audit's scores are the margins (audit.scored_by)
    chart = _Chart(f"{lang}: {'margin' if margin else 'similarity'} scores ({numbers['scored']:,} scored pairs)",
                   f"{'ratio margin' if margin else 'cosine similarity'} of source and translation",
                   "pairs", HALF_WIDTH)
    chart.columns(histogram["edges"], histogram["accepted"], ACCEPTED_COLOUR)
    chart.key("accepted", ACCEPTED_COLOUR)
    chart.columns(histogram["edges"], histogram["rejected"], REJECTED_COLOURS[0],
                  bottoms=histogram["accepted"])
    chart.key("rejected", REJECTED_COLOURS[0])
    threshold = numbers.get("threshold")
    if threshold is not None:
        label = (
            f"min_similarity {threshold:g}"
            if "min_similarity" in rule
            else f"top {rule.get('keep_top_fraction', 0):.0%} ended at {threshold:.3f}"
        )
        chart.vertical(threshold, THRESHOLD_COLOUR, "dashed")
        chart.key(label, THRESHOLD_COLOUR, "line", "dashed")
    return chart.svg(f"Histogram of similarity scores for {lang} with the threshold",
                     f"similarity-{lang}")


def length_ratio(lang: str, numbers: dict) -> str:
    """Characters of the translation per character of the source; 1.0 and the median marked."""
    histogram = numbers["length_ratio_histogram"]
    chart = _Chart(
        f"{lang}: length ratio of scored pairs",
        f"translation / source length in characters (last bar: ≥ {histogram['edges'][-2]:g})",
        "pairs", HALF_WIDTH, legend="upper right",
    )
    chart.columns(histogram["edges"], histogram["counts"], NEUTRAL_COLOUR)
    chart.vertical(1.0, LANGUAGE_COLOURS[0], "dotted", width=1)
    median = numbers["length_ratio_quantiles"].get("p50")
    if median is not None:
        chart.vertical(median, THRESHOLD_COLOUR, width=1)
        chart.key(f"median {median:.2f}", THRESHOLD_COLOUR, "line")
    return chart.svg(f"Histogram of translation/source length ratios for {lang}",
                     f"length-ratio-{lang}")


def propn(numbers: dict) -> str:
    """PROPN ratios of the removed and of the sampled captions, with the cut-off."""
    histogram, cut = numbers["histogram"], numbers["max_propn_ratio"]
    chart = _Chart("Proper-noun ratio", "share of proper nouns (PROPN) among the caption's words",
                   "captions", height=_inches(3.2), legend="upper right")
    chart.columns(histogram["edges"], histogram["sampled"], ACCEPTED_COLOUR)
    chart.key(f"kept, sampled ({numbers['sampled_captions']:,})", ACCEPTED_COLOUR)
    chart.columns(histogram["edges"], histogram["removed"], REJECTED_COLOURS[2],
                  bottoms=histogram["sampled"])
    chart.key(f"removed ({numbers['removed']:,})", REJECTED_COLOURS[2])
    if cut is not None:
        chart.vertical(cut, THRESHOLD_COLOUR, "dashed")
        chart.key(f"cut-off {cut:g}", THRESHOLD_COLOUR, "line", "dashed")
    return chart.svg("Histogram of PROPN ratios with the cut-off", "propn")


def datasets(audit: dict) -> str:
    """Accepted pairs per source dataset, one bar per language."""
    found = audit["datasets"]
    languages = list(audit["languages"])
    names = list(found)
    height = _inches(1.2 + 0.4 * max(1, len(names)) * max(1, len(languages)) ** 0.5)
    chart = _Chart("Accepted pairs per source dataset", "accepted pairs", height=height,
                   rows=names, legend="lower right")
    band = 0.8 / max(1, len(languages))
    for index, lang in enumerate(languages):
        colour = LANGUAGE_COLOURS[index % len(LANGUAGE_COLOURS)]
        for row, name in enumerate(names):
            top = row + 0.1 + index * band
            chart.bar(0, found[name]["accepted"][lang], top, top + band, colour)
        chart.key(lang, colour)
    return chart.svg("Bars: accepted pairs per source dataset and language", "datasets")


def calibration_scores(lang: str, result: dict) -> str:
    """Overlaid histograms of true and mismatched pairs, with the proposed threshold."""
    histogram, threshold = result["histogram"], result["threshold"]
    chart = _Chart(f"{lang}: true vs mismatched pairs",
                   "cosine similarity of caption and translation", "pairs", HALF_WIDTH)
    # Translucent, so where the two distributions overlap both stay visible.
    chart.columns(histogram["edges"], histogram["mismatched"], REJECTED_COLOURS[2], opacity=0.6)
    chart.key(f"mismatched pairs ({result['mismatched_pairs']:,})", REJECTED_COLOURS[2])
    chart.columns(histogram["edges"], histogram["true"], ACCEPTED_COLOUR, opacity=0.6)
    chart.key(f"true pairs ({result['true_pairs']:,})", ACCEPTED_COLOUR)
    chart.vertical(threshold["min_similarity"], THRESHOLD_COLOUR, "dashed")
    chart.key(f"{threshold['rule']}: {threshold['min_similarity']:.3f}", THRESHOLD_COLOUR,
              "line", "dashed")
    return chart.svg(f"Score distributions of true and mismatched pairs for {lang}",
                     f"calibration-{lang}")


def roc(lang: str, result: dict) -> str:
    """The ROC curve of true vs mismatched pairs, the proposed threshold marked."""
    chart = _Chart(f"{lang}: ROC curve", "false positive rate (mismatched pairs accepted)",
                   "true positive rate (true pairs accepted)", HALF_WIDTH, legend="lower right")
    chart.line(result["roc"]["fpr"], result["roc"]["tpr"], LANGUAGE_COLOURS[0])
    chart.key(f"AUC {result['auc']:.4f}", LANGUAGE_COLOURS[0], "line")
    chart.line([0, 1], [0, 1], NEUTRAL_COLOUR, "dotted")
    chart.key("chance", NEUTRAL_COLOUR, "line", "dotted")
    threshold = result["threshold"]
    chart.dot(threshold["false_positive_rate"], threshold["recall"], THRESHOLD_COLOUR)
    chart.key(f"threshold {threshold['min_similarity']:.3f}", THRESHOLD_COLOUR, "dot")
    return chart.svg(f"ROC curve for {lang}", f"roc-{lang}")
