"""Lay out an audit (``pipeline/audit.py``) or a calibration (``pipeline/calibrate.py``) as one
self-contained HTML page.

Every number on a page comes from the dict written beside it as JSON; this module only lays it
out, and ``report/plots.py`` draws the figures as inline SVG. No script, no stylesheet link,
no font or image from the network: the page opens offline, from a CI artifact or an e-mail.
"""

from __future__ import annotations

import html
import json
import re
from typing import Iterable, Optional, Sequence

from polycap.report import plots

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2a35;
       background: #fafafa; line-height: 1.45; }
main { max-width: 1120px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { margin-bottom: .2rem; } h3 { margin-top: 2rem; }
h2 { border-bottom: 2px solid #264653; padding-bottom: .2rem; margin-top: 2.5rem; }
nav a { margin-right: 1rem; } code { background: #f0f0f0; padding: 0 .25rem; border-radius: 3px; }
.summary { background: #eef6f5; border-left: 4px solid #2a9d8f; padding: .6rem 1rem; }
.warning { background: #fdecea; border-left: 4px solid #d62828; padding: .6rem 1rem;
           font-weight: 600; }
.muted { color: #5c6b77; font-size: .92rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .92rem; }
th, td { border: 1px solid #d5dbe0; padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: #eef1f4; } tbody tr:nth-child(even) { background: #f8f9fa; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.examples { table-layout: fixed; width: 100%; } table.examples td { word-wrap: break-word; }
table.examples col.score { width: 5rem; } table.examples col.outcome { width: 9rem; }
table.examples col.id { width: 9rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plots .plot { width: calc(50% - .75rem); min-width: 420px; box-sizing: border-box; }
.plot { max-width: 100%; height: auto; border: 1px solid #e3e7ea; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
pre { background: #f5f7f8; padding: .6rem; overflow-x: auto; font-size: .85rem; }
"""
_SECTIONS = (
    ("funnel", "Funnel"),
    ("languages", "Languages"),
    ("pair-checks", "Pair checks"),
    ("propn", "Proper nouns"),
    ("datasets", "Datasets"),
    ("translation", "Translation"),
    ("run", "Run facts"),
    ("checks", "Checks"),
)
_COUNTED_BY = {
    "pipeline": "Counted by the translate stage: one look-up per distinct text, so a text shared "
    "by several captions is one hit or one call.",
    "output rows (estimate)": "Estimated from the output rows (this run's counts have no "
    "look-ups): one call per pair, and store hits cannot be told from calls.",
}
_CALIBRATION_NOTE = (
    "True pairs are each caption with its human translation; mismatched pairs are each caption "
    "with the translation of another caption (a seeded derangement). ROC AUC is the chance that a "
    "true pair scores above a mismatched one (0.5: chance). Precision is measured on an even mix "
    "of the two, and an unrelated caption is easier to catch than a poor translation of the right "
    "one: treat the threshold as a floor."
)


# ---------------------------------------------------------------------------------- helpers


def _n(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _spread(quantiles: dict) -> str:
    """p10 / p50 / p90 of a quantiles dict, three decimals."""
    return " / ".join(
        "–" if quantiles.get(q) is None else f"{quantiles[q]:.3f}" for q in ("p10", "p50", "p90")
    )


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def _usd(cost: Optional[float]) -> str:
    return "unknown" if cost is None else f"${cost:,.2f}"


# Text that reads as a number ("0.452", "$0.00", "12.5 %", "30 / 28") aligns like one.
_NUMERIC = re.compile(r"[$−-]?[\d.,]+( %| s)?( / [\d.,]+)*")


def _cell(value) -> str:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="n">{html.escape(_n(value))}</td>'
    text = str(value)
    klass = ' class="n"' if _NUMERIC.fullmatch(text) else ""
    return f"<td{klass}>{html.escape(text)}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in headers)
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(pairs: Iterable[tuple[str, object]]) -> str:
    items = "".join(
        f"<dt>{html.escape(name)}</dt><dd>{html.escape(_n(value))}</dd>" for name, value in pairs
    )
    return f'<dl class="facts">{items}</dl>'


def _reasons(by_reason: dict) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in by_reason.items()) or "–"


def _muted(text: str) -> str:
    return f'<p class="muted">{text}</p>'


def _warning(text: str) -> str:
    return f'<p class="warning">{html.escape(text)}</p>'


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</main></body></html>\n"
    )


# ---------------------------------------------------------------------------------- the audit


def _summary(audit: dict) -> str:
    source, totals = audit["input"], audit["translation"]["totals"]
    removed = source["invalid"] + source["duplicate"] + source["propn"] + source["failed"]
    parts = [
        f"Read <b>{source['read']:,}</b> captions; {removed:,} removed before sampling "
        f"(invalid {source['invalid']:,}, duplicate {source['duplicate']:,}, proper nouns "
        f"{source['propn']:,}, failed {source['failed']:,}); "
        f"<b>{source['eligible']:,}</b> eligible."
    ]
    for lang, n in audit["languages"].items():
        parts.append(
            f"<b>{html.escape(lang)}</b>: {n['sampled']:,} sampled → <b>{n['accepted']:,}</b> "
            f"accepted ({_pct(n['accepted'], n['sampled'])})."
        )
    if audit.get("mode") == "pairs":
        parts.append("Translations came with the set: polycap translated and paid nothing.")
    else:
        hits = totals["memory_hits"] + (totals["store_hits"] or 0)
        parts.append(
            f"Translation: {hits:,} memory/store hits, {totals['provider_calls']:,} provider "
            f"calls, {totals['characters_billed']:,} characters billed, estimated cost "
            f"{_usd(totals['estimated_cost_usd'])}."
        )
    broken = sum(not holds for holds in audit["checks"].values())
    if not audit["checks"]:
        parts.append("No checks: nothing was counted independently of these rows.")
    else:
        parts.append(
            f"<b>{broken} check(s) broken</b>: see Checks." if broken else "All checks hold."
        )
    return '<p class="summary">' + " ".join(parts) + "</p>"


def _eligible_why(source: dict) -> str:
    if not source["untagged"]:
        return "left for sampling"
    return (
        f"left for sampling; {source['untagged']:,} of them never POS-tagged, as sampling "
        "could not choose them (sample.preselect_margin)"
    )


def _funnel_section(audit: dict) -> str:
    source = audit["input"]
    steps = [
        ("read", "read", "every caption in the inputs"),
        ("invalid", "invalid", _reasons(source["invalid_by_reason"])),
        ("duplicate", "duplicate", "same normalised text as a kept caption"),
        ("proper nouns", "propn", "PROPN share at or over the cut-off"),
        ("failed", "failed", _reasons(source["failed_by_reason"])),
        ("eligible", "eligible", _eligible_why(source)),
    ]
    before = _table(
        ["step", "captions", "share of read", "why"],
        [[name, source[key], _pct(source[key], source["read"]), why] for name, key, why in steps],
    )
    per_language = _table(
        ["language", "sampled", "not sampled", "accepted", "acceptance rate", "distinct images",
         "rejected", "why rejected", "failed", "why failed",
         f"{_score_name(audit['keep_rule'])} p10 / p50 / p90"],
        [
            [lang, n["sampled"], n["not_sampled"], n["accepted"], _pct(n["accepted"], n["sampled"]),
             n.get("distinct_images"), n["rejected"], _reasons(n["rejected_by_reason"]), n["failed"],
             _reasons(n["failed_by_reason"]), _spread(n["similarity_quantiles"])]
            for lang, n in audit["languages"].items()
        ],
    )
    return (
        '<section id="funnel"><h2>Funnel: from captions read to pairs accepted</h2>'
        f"{plots.funnel(audit)}<h3>Captions read and removed before sampling</h3>{before}"
        f"<h3>Per target language</h3>{plots.outcomes(audit)}{per_language}"
        f"{_fill_table(audit.get('fill'))}</section>"
    )


def _fill_table(fill) -> str:
    """Quota fill (sample.fill): per language the target, what was accepted and drawn, in how
    many rounds, and why a language fell short."""
    if not fill:
        return ""
    rows = [
        [lang, n["target"], n["accepted"], n["drawn"], n["rounds"], n["short_by"], n["why_short"] or ""]
        for lang, n in fill.items()
    ]
    return (
        "<h3>Quota fill</h3>"
        + _muted("Each language walks down its rank order in rounds until it has its target of "
                 "accepted pairs; accepted pairs beyond it are rejected <code>beyond_quota</code>.")
        + _table(["language", "target", "accepted", "drawn", "rounds", "short by", "why short"], rows)
    )


def _budget_table(budget) -> str:
    if not budget:
        return ""
    spent = "unknown" if budget["spent"] is None else f"{budget['spent']:,}"
    left = "unknown" if budget["left"] is None else f"{budget['left']:,}"
    rows = [
        [lang, n["funded_characters"], n["over_budget_pairs"], n["over_budget_characters"]]
        for lang, n in budget["languages"].items()
    ]
    return (
        f"<h3>Spending cap</h3><p>Cap {budget['max_characters']:,} characters; billed {spent}; "
        f"left {left}.</p>"
        + _table(["language", "characters funded", "pairs left out (over_budget)",
                  "characters left out"], rows)
    )


def _examples_table(rows: list[dict]) -> str:
    if not rows:
        return _muted("none")
    body = "".join(
        f'<tr><td class="n">{row["similarity"]:.3f}</td>{_cell(row["outcome"])}'
        f'{_cell(row["source_text"])}{_cell(row["translated_text"])}{_cell(row["caption_id"])}</tr>'
        for row in rows
    )
    return (
        '<table class="examples"><colgroup><col class="score"><col class="outcome"><col><col>'
        '<col class="id"></colgroup><thead><tr><th>score</th><th>outcome</th><th>source</th>'
        f"<th>translation</th><th>caption id</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _threshold_text(threshold: Optional[float], rule: dict, source="config") -> str:
    if threshold is None:
        return "none known (no run facts, or no threshold given)"
    if "min_similarity" in rule and isinstance(source, dict):
        humans = f"{source['share']:.0%} of the memory's {source['memory']:,} human translations"
        if threshold > rule["min_similarity"]:
            return f"min_similarity {threshold:.3f}: keeps {humans} (floor {rule['min_similarity']:g})"
        return f"min_similarity {threshold:g}, the configured floor (keeping {humans} needs no more)"
    if "min_similarity" in rule:
        return f"min_similarity {threshold:g} (from the run's config){_on_margin(rule)}"
    fraction = rule["keep_top_fraction"]
    return f"keep_top_fraction {fraction:g}: the lowest accepted score is {threshold:.3f}{_on_margin(rule)}"


def _on_margin(rule: dict) -> str:
    return ", on the ratio margin (score.margin)" if rule.get("score") == "margin" else ""


def _score_name(rule: dict) -> str:
    """What the language's scores are: the keep rule's score (``audit.scored_by``)."""
    return "ratio margin" if rule.get("score") == "margin" else "similarity"


def _language_section(lang: str, n: dict, rule: dict, uncovered: Sequence[str]) -> str:
    facts = _facts(
        [
            ("sampled", n["sampled"]),
            ("accepted", f"{n['accepted']:,} ({_pct(n['accepted'], n['sampled'])} of sampled)"),
            ("threshold", _threshold_text(n["threshold"], rule, n.get("threshold_from", "config"))),
            ("untranslated", f"{n['untranslated']:,} (translation equals the source)"),
            (f"{_score_name(rule)} p10 / p50 / p90", _spread(n["similarity_quantiles"])),
            ("length ratio p10 / p50 / p90", _spread(n["length_ratio_quantiles"])),
        ]
    )
    warning = ""
    if lang in uncovered:
        warning = _warning(
            f"The scorer does not cover {lang}: these scores say nothing about translation quality."
        )
    if n["scored"]:
        figures = plots.similarity(lang, n, rule) + plots.length_ratio(lang, n)
        figures = f'<div class="plots">{figures}</div>'
    else:
        figures = _muted("No scored pairs in this language, nothing to plot.")
    examples = n["examples"]
    return (
        f'<section id="lang-{html.escape(lang)}"><h3>{html.escape(lang)}</h3>{warning}'
        f"{facts}{figures}"
        f'<h4>Best pairs</h4>{_examples_table(examples["best"])}'
        "<h4>Borderline pairs (nearest the threshold)</h4>"
        f'{_examples_table(examples["borderline"])}'
        f'<h4>Worst pairs</h4>{_examples_table(examples["worst"])}</section>'
    )


def _pair_checks_section(audit: dict) -> str:
    """Per pair check: the pairs it rejected in each language, and a few of them side by side."""
    by_check = audit.get("pair_checks", {})
    languages = list(audit["languages"])
    counts = _table(
        ["check (reason)"] + languages,
        [[reason] + [by_language[lang] for lang in languages]
         for reason, by_language in by_check.items()],
    )
    shown = "".join(
        f"<h4>{html.escape(reason)}: {html.escape(lang)}</h4>{_examples_table(rows)}"
        for lang, numbers in audit["languages"].items()
        for reason, rows in numbers.get("check_examples", {}).items()
    )
    return (
        '<section id="pair-checks"><h2>Pair checks: what the score lets through</h2>'
        "<p>Keep rejects a translated pair, whatever its score and whoever translated it, when a "
        "pair check fails (the first that fails is its reason): the numbers differ, a name is "
        "missing, the translation is in another language, mostly copied from the source, loops, "
        "or its length is far from the source's.</p>"
        f"{counts}{shown or _muted('No pair was rejected by a check.')}</section>"
    )


def _propn_section(propn: dict, mode: str, untagged: int) -> str:
    head = '<section id="propn"><h2>Proper nouns</h2>'
    if mode == "pairs":
        return head + _muted("A scored parallel set has no PROPN filter.") + "</section>"
    rows = [
        [row["propn_ratio"], row["text"], row["dataset"], row["caption_id"]]
        for row in propn["removed_examples"]
    ]
    removed = (
        _table(["PROPN ratio", "caption", "dataset", "caption id"], rows)
        if rows
        else _muted("none: the filter removed no caption in this run.")
    )
    cut = "the cut-off" if propn["max_propn_ratio"] is None else f"{propn['max_propn_ratio']:g}"
    untagged_note = (
        f" Only the captions sampling could choose were tagged: {untagged:,} eligible captions "
        "never were (sample.preselect_margin), so the count covers the tagged ones."
        if untagged else ""
    )
    return (
        f"{head}<p>{propn['removed']:,} captions were removed because proper nouns make up at "
        f"least {cut} of their words (clip-italian's rule). The green bars are the captions "
        f"sampled for translation, a uniform sample of the ones the filter kept.{untagged_note}</p>"
        f"{plots.propn(propn)}"
        f"<h3>Captions the filter removed (nearest the cut-off, and most proper nouns)</h3>"
        f"{removed}</section>"
    )


def _datasets_section(audit: dict) -> str:
    languages = list(audit["languages"])
    headers = ["dataset", "invalid", "duplicate", "proper nouns", "failed"]
    headers += [f"{lang} sampled / accepted" for lang in languages] + ["accepted, all languages"]
    rows = [
        [name, d["invalid"], d["duplicate"], d["propn"], d["failed"]]
        + [f"{d['sampled'][lang]:,} / {d['accepted'][lang]:,}" for lang in languages]
        + [d["accepted_total"]]
        for name, d in audit["datasets"].items()
    ]
    figure = plots.datasets(audit) if audit["datasets"] else ""
    return (
        '<section id="datasets"><h2>Per source dataset</h2><p>How many rows of each dataset '
        f"reached the output, and what was removed before sampling.</p>{figure}"
        f"{_table(headers, rows)}</section>"
    )


def _price(usd_per_million) -> str:
    return "unknown" if usd_per_million is None else f"${usd_per_million:g} per million characters"


def _translation_section(translation: dict, mode: str) -> str:
    if mode == "pairs":
        return ('<section id="translation"><h2>Translation and cost</h2>'
                + _muted("The translations came with the set; polycap called no provider.")
                + "</section>")
    columns = ("memory_hits", "store_hits", "provider_calls", "characters_billed")
    rows = [
        [lang, n["provider"], *(n[key] for key in columns), _usd(n["estimated_cost_usd"])]
        for lang, n in translation["languages"].items()
    ]
    totals = translation["totals"]
    rows.append(["all", "", *(totals[key] for key in columns), _usd(totals["estimated_cost_usd"])])
    table = _table(["language", "provider", "memory hits", "store hits", "provider calls",
                    "characters billed", "estimated cost"], rows)
    bills = _table(
        ["provider", "price", "languages", "characters billed", "estimated cost"],
        [[name, _price(bill["usd_per_million_characters"]), ", ".join(bill["languages"]),
          bill["characters_billed"], _usd(bill["estimated_cost_usd"])]
         for name, bill in translation["by_provider"].items()],
    )
    by_provider = _table(
        ["provider", "language", "pairs translated", "source characters"],
        [[name, lang, n["pairs"], n["characters"]]
         for name, languages in translation["pairs_by_provider"].items()
         for lang, n in languages.items()],
    )
    counters = translation["reported_by_runner"]
    reported = _muted(
        "The runner's own translate counters: " + html.escape(_reasons(counters))
    ) if counters else ""
    return (
        '<section id="translation"><h2>Translation and cost</h2>'
        f"<p>{_COUNTED_BY.get(translation['counted_by'], '')}</p>{table}"
        "<h3>Bill by provider</h3>"
        + _muted("A local model (ctranslate2) bills no characters: it costs worker hours.")
        + f"{bills}"
        f"{_budget_table(translation.get('budget'))}"
        f"<h3>Pairs in the output by provider</h3>{by_provider}"
        "<p>Pairs no provider could translate (failed <code>no_translation</code>): "
        f"{html.escape(_reasons(translation['no_translation']))}.</p>{reported}</section>"
    )


def _run_section(run: dict, pipeline_facts: dict) -> str:
    head = '<section id="run"><h2>Run facts</h2>'
    if not run:
        return (
            head + _muted("This output has no <code>audit/run.json</code>: the run's config, "
                          "versions and times are unknown.") + "</section>"
        )
    wall = run.get("wall_seconds")
    facts = [
        ("polycap", run.get("polycap")),
        ("Apache Beam", run.get("beam")),
        ("Python", run.get("python")),
        ("runner", run.get("runner")),
        ("started", run.get("started")),
        ("wall time", None if wall is None else f"{wall:,.1f} s"),
        ("run id", pipeline_facts.get("run_id")),
        ("translation store", pipeline_facts.get("store")),
    ]
    for role, model in run.get("models", {}).items():
        described = ", ".join(f"{key} {value}" for key, value in model.items() if value)
        facts.append((f"model ({role})", described))
    metrics = run.get("metrics", {})
    seconds = sorted(
        ((stage, value) for stage, value in metrics.get("stage_seconds", {}).items() if value > 0),
        key=lambda item: -item[1],
    )
    stages = (
        _table(["stage (top-level step)", "seconds in its transforms (all workers)"], seconds)
        if seconds
        else _muted("The runner reported no time per stage.")
    )
    counters = [
        [namespace, name, value]
        for namespace, named in metrics.get("counters", {}).items()
        for name, value in named.items()
    ]
    config = html.escape(json.dumps(run.get("config", {}), indent=2, ensure_ascii=False))
    options = html.escape(json.dumps(run.get("beam_options", {}), indent=2, ensure_ascii=False))
    return (
        f"{head}{_facts(facts)}<h3>Time per stage</h3>{stages}"
        f"<h3>The runner's counters</h3>{_table(['namespace', 'counter', 'value'], counters)}"
        f"<h3>Config (secrets redacted)</h3><pre>{config}</pre>"
        f"<h3>Beam options (secrets redacted)</h3><pre>{options}</pre></section>"
    )


def _checks_section(audit: dict) -> str:
    if not audit["checks"]:
        text = (
            "<p>None. A parallel set scored by <code>polycap audit --pairs</code> has no counts "
            "of its own to check its rows against; a check built from the rows themselves "
            "would hold whatever they say.</p>"
        )
        return f'<section id="checks"><h2>Conservation checks</h2>{text}</section>'
    rows = [[name, "yes" if holds else "NO"] for name, holds in audit["checks"].items()]
    table = _table(["check", "holds"], rows)
    note = (
        "" if any("counter" in name for name in audit["checks"]) else
        "<p>The runner reported no counters: the rows in the files were not checked against the "
        "stages' own counts.</p>"
    )
    return f'<section id="checks"><h2>Conservation checks</h2>{table}{note}</section>'


def render(audit: dict) -> str:
    """The audit as one self-contained HTML page."""
    run = audit.get("run", {})
    rule = audit["keep_rule"]
    uncovered = list(run.get("uncovered_languages", []))
    languages = "".join(
        _language_section(lang, numbers, rule, uncovered)
        for lang, numbers in audit["languages"].items()
    )
    nav = " ".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in _SECTIONS)
    warning = ""
    if uncovered:
        warning = _warning(
            f"The scorer does not cover {', '.join(uncovered)}: "
            "scores in those languages are meaningless."
        )
    pairs = audit.get("mode") == "pairs"
    body = "\n".join(
        [
            f'<p class="muted">Output: <code>{html.escape(audit["output"])}</code></p>',
            f"<nav>{nav}</nav>",
            warning + _summary(audit),
            _funnel_section(audit),
            '<section id="languages"><h2>Per language: scores, lengths and examples</h2>'
            f"{languages}</section>",
            _pair_checks_section(audit),
            _propn_section(audit["propn"], audit.get("mode", "run"), audit["input"].get("untagged", 0)),
            _datasets_section(audit),
            _translation_section(audit["translation"], audit.get("mode", "run")),
            _run_section(run, audit.get("pipeline_facts", {})),
            _checks_section(audit),
        ]
    )
    return _page("polycap audit of a parallel set" if pairs else "polycap audit", body)


# ---------------------------------------------------------------------------------- calibration


def _negatives_table(negatives: dict) -> str:
    """Random, hard and perturbed negatives side by side: the cosine alone, the checks alone,
    and the full decision (the checks, then the threshold)."""
    perturbed = negatives["perturbed"]
    kinds = [("random mismatches", negatives["random"]), ("hard negatives", negatives["hard"]),
             ("perturbed, all kinds", perturbed)]
    kinds += [(f"perturbed: {kind.replace('_', ' ')}", numbers)
              for kind, numbers in perturbed["kinds"].items()]
    rows = []
    for name, numbers in kinds:
        if not numbers["pairs"]:
            rows.append([name, 0, "–", "–", "–", "–", "–"])
            continue
        decision = numbers["decision"]
        rows.append([name, numbers["pairs"], f"{numbers['cosine_auc']:.4f}",
                     f"{numbers['margin_auc']:.4f}",
                     _pct(round(numbers["caught_by_checks"] * numbers["pairs"]), numbers["pairs"]),
                     f"{decision['precision']:.4f}", f"{decision['recall']:.4f}"])
    note = _muted(
        f"{negatives['true_pairs_passing_checks']:.2%} of the true pairs pass the pair checks. "
        "Precision and recall: the true pairs against as many of these negatives as there are, "
        "accepted when they pass the checks and reach the threshold. The ratio margin (Artetxe "
        f"& Schwenk 2019, k = {negatives['margin']['k']}, neighbours among "
        f"{negatives['margin']['reference_pairs']:,} reference pairs, a pair never its own) is "
        "what the pipeline scores with score.margin: true."
    )
    return _table(["negatives", "pairs", "cosine ROC AUC", "margin ROC AUC", "caught by the checks",
                   "decision precision", "decision recall"], rows) + note


def render_calibration(calibration: dict) -> str:
    """A calibration (``pipeline/calibrate.py``) as one self-contained HTML page."""
    scorer, run = calibration["scorer"], calibration["run"]
    rows, sections = [], []
    for lang, result in calibration["languages"].items():
        threshold = result["threshold"]
        rows.append(
            [lang, "yes" if result["covered"] else "NO", result["true_pairs"],
             result["mismatched_pairs"], f"{result['auc']:.4f}", result["true_quantiles"]["p50"],
             result["mismatched_quantiles"]["p50"], threshold["rule"],
             f"{threshold['min_similarity']:.3f}", threshold["precision"], threshold["recall"],
             threshold["false_positive_rate"]]
        )
        warning = ""
        if not result["covered"]:
            warning = _warning(
                f"{scorer['backend']} does not cover {lang}: these numbers only show that it "
                "cannot judge translations into it. Do not filter with this threshold."
            )
        figures = plots.calibration_scores(lang, result) + plots.roc(lang, result)
        sections.append(
            f'<section id="lang-{html.escape(lang)}"><h2>{html.escape(lang)}</h2>{warning}'
            f'<div class="plots">{figures}</div>{_negatives_table(result["negatives"])}</section>'
        )
    table = _table(
        ["language", "covered by the scorer", "true pairs", "mismatched pairs", "ROC AUC",
         "true p50", "mismatched p50", "rule", "min_similarity", "precision", "recall",
         "false positive rate"],
        rows,
    )
    uncovered = calibration["uncovered_languages"]
    warning = ""
    if uncovered:
        warning = _warning(
            f"The scorer does not cover {', '.join(uncovered)}: no threshold is proposed for it."
        )
    keep = calibration["keep"]
    proposal = (
        "<p>No config fragment: no calibrated language is covered by the scorer.</p>"
        if keep is None
        else "<p>Config fragment (<code>keep.yaml</code>): "
        f"<code>keep: {{min_similarity: {keep['min_similarity']:.3f}}}</code></p>"
    )
    provenance = (
        f"References <code>{html.escape(calibration['references'])}</code>; scorer "
        f"{html.escape(scorer['backend'])} ({html.escape(str(scorer['model']))}, "
        f"{html.escape(str(scorer['package']))} {html.escape(str(scorer['version']))}); seed "
        f"{calibration['seed']}; polycap {html.escape(str(run['polycap']))}, computed "
        f"{html.escape(run['started'])} in {run['wall_seconds']:.1f} s."
    )
    body = (
        f"{_muted(provenance)}{warning}<p class=\"summary\">{_CALIBRATION_NOTE}</p>"
        f"{table}{proposal}{''.join(sections)}"
    )
    return _page("polycap calibration", body)
