"""The SVG charts on input a run can produce but the demo does not: all-zero counts, a single
bin, a threshold outside the scores' range, a language name that is markup. Pure functions on
small dicts; the charts of a real run are checked on its page in test_audit and test_calibrate."""

from xml.etree import ElementTree

from polycap.report import plots

SVG = "{http://www.w3.org/2000/svg}"
ODD = "<&>"  # a language name that would break the page if written unescaped


def _parse(svg: str) -> ElementTree.Element:
    """The chart as XML: it parses only if every text and attribute was escaped."""
    return ElementTree.fromstring(svg)


def _texts(root: ElementTree.Element) -> list[str]:
    return [element.text for element in root.iter(f"{SVG}text")]


def _marks(root: ElementTree.Element, kind: str, colour: str) -> list[ElementTree.Element]:
    """The chart's ``kind`` elements (rect, line) drawn in ``colour``, the legend's left out."""
    (marks,) = [group for group in root.iter(f"{SVG}g") if group.get("class") == "marks"]
    return [e for e in marks.iter(f"{SVG}{kind}") if colour in (e.get("fill"), e.get("stroke"))]


def _bars(root: ElementTree.Element, colour: str) -> list[ElementTree.Element]:
    return _marks(root, "rect", colour)


def _scores(edges, accepted, rejected, threshold=0.5, scored=0) -> dict:
    return {
        "scored": scored,
        "threshold": threshold,
        "similarity_histogram": {"edges": edges, "accepted": accepted, "rejected": rejected},
    }


def _audit(n: int) -> dict:
    """An audit of one language named ``ODD`` with every count ``n``."""
    return {
        "input": {"read": n, "invalid": n, "duplicate": n, "propn": n, "failed": n, "eligible": n},
        "languages": {
            ODD: {"sampled": n, "not_sampled": n, "accepted": n, "rejected": n, "failed": n,
                  "rejected_by_reason": {"low_similarity": n}, "failed_by_reason": {}}
        },
        "datasets": {"coco": {"accepted": {ODD: n}}},
    }


def test_ticks_are_round_and_cover_the_range():
    assert plots._ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert plots._ticks(0, 0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]  # all zero: still an axis
    ticks = plots._ticks(0.13, 1287)
    assert ticks[0] <= 0.13 and ticks[-1] >= 1287 and len(ticks) <= 8


def test_all_zero_counts_draw_axes_and_no_bars():
    edges = [i / 10 for i in range(11)]
    scores = _scores(edges, [0] * 10, [0] * 10)
    root = _parse(plots.similarity("de", scores, {"min_similarity": 0.5}))
    assert not _bars(root, plots.ACCEPTED_COLOUR) and not _bars(root, plots.REJECTED_COLOURS[0])
    assert {"0.0", "1.0", "pairs", "min_similarity 0.5"} <= set(_texts(root))
    for n in (0, 3):
        for chart in (plots.funnel, plots.outcomes, plots.datasets):
            _parse(chart(_audit(n)))


def test_a_single_bin_is_one_bar_across_the_plot():
    scores = _scores([0.4, 0.6], [5], [0], scored=5)
    root = _parse(plots.similarity("de", scores, {"min_similarity": 0.5}))
    (bar,) = _bars(root, plots.ACCEPTED_COLOUR)
    assert float(bar.get("width")) > 100 and float(bar.get("height")) > 100


def test_a_threshold_outside_the_scores_is_still_drawn_inside_the_chart():
    edges = [i / 10 for i in range(11)]
    scores = _scores(edges, [1] * 10, [0] * 10, threshold=1.3)
    root = _parse(plots.similarity("de", scores, {"min_similarity": 1.3}))
    (threshold,) = _marks(root, "line", plots.THRESHOLD_COLOUR)
    bars = _bars(root, plots.ACCEPTED_COLOUR)
    rightmost_bar = max(float(bar.get("x")) + float(bar.get("width")) for bar in bars)
    assert rightmost_bar < float(threshold.get("x1")) < float(root.get("width"))


def test_markup_in_a_language_name_is_text():
    edges = [0.0, 0.5, 1.0]
    charts = [
        plots.funnel(_audit(2)),
        plots.outcomes(_audit(2)),
        plots.datasets(_audit(2)),
        plots.similarity(ODD, _scores(edges, [1, 2], [2, 1], scored=6), {"keep_top_fraction": 0.5}),
        plots.length_ratio(ODD, {"length_ratio_histogram": {"edges": edges, "counts": [1, 1]},
                                 "length_ratio_quantiles": {"p50": 0.7}}),
        plots.roc(ODD, {"roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1]}, "auc": 0.9, "threshold":
                        {"min_similarity": 0.4, "false_positive_rate": 0.5, "recall": 0.9}}),
    ]
    for svg in charts:
        root = _parse(svg)
        assert "<&>" not in svg and "&lt;&amp;&gt;" in svg
        words = " ".join(_texts(root) + [root.get("aria-label")])
        assert ODD in words, words
