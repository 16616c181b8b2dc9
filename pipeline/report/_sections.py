"""The parts of ``report.html`` below the summary: one section per job and the run's endpoints.

Also the formatting and ranking helpers the whole report shares. Every value comes from loosely
typed JSON (``results.json``), so it is read with :func:`pipeline.report._svg.num` and friends and
anything missing shows as a dash rather than failing the report.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from html import escape
from typing import Any

import orjson

from pipeline.report import _svg as svg
from pipeline.report._svg import num, rows, text

DETAILED_JOBS = 50
OPEN_JOBS = 3
CELL_CHARS = 600
_STATUS_CLASS = {"finished": "ok", "budget_exhausted": "warn", "interrupted": "warn"}

Job = dict[str, Any]


# --- formatting ----------------------------------------------------------------------------


def usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value == 0 or value >= 0.1:
        return f"${value:,.2f}"
    return f"${value:.3f}" if value >= 0.01 else f"${value:.4f}"


def integer(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def score(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min {seconds % 60:.0f} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def badge(status: str) -> str:
    return f'<span class="badge {_STATUS_CLASS.get(status, "bad")}">{escape(status)}</span>'


# --- ranking and deltas --------------------------------------------------------------------


def delta(job: Job, split: str) -> float | None:
    initial, best = num(job, f"initial_{split}_score"), num(job, f"best_{split}_score")
    return None if initial is None or best is None else best - initial


def improvement(job: Job) -> float | None:
    """Test-score gain where the test split was scored, else the dev-score gain."""
    test = delta(job, "test")
    return test if test is not None else delta(job, "dev")


def rank_key(job: Job) -> tuple[bool, bool, float, str]:
    gain = improvement(job)
    failed = text(job, "status") == "failed"
    return failed, gain is None, -(gain or 0.0), text(job, "name")


def trend(gain: float | None, failed: bool = False) -> str:
    """``up``, ``down`` or ``flat`` (also for no change at all and for failed jobs)."""
    if gain is None or failed or abs(gain) < svg.UNCHANGED:
        return "flat"
    return "up" if gain > 0 else "down"


def pair(job: Job, split: str) -> str:
    initial, best = num(job, f"initial_{split}_score"), num(job, f"best_{split}_score")
    return f"{score(initial)} → <b>{score(best)}</b>"


# --- one section per job -------------------------------------------------------------------


def job_sections(ranked: Sequence[Job]) -> str:
    shown = ranked[:DETAILED_JOBS]
    note = ""
    if len(ranked) > len(shown):
        note = (
            f'<p class="note">Details for the first {len(shown)} of {len(ranked):,} jobs in the '
            f"order above; the other {len(ranked) - len(shown):,} are in results.json.</p>"
        )
    sections = "".join(_job_section(i, job) for i, job in enumerate(shown))
    return f'<h2 id="details">Jobs in detail</h2>{note}{sections}'


def _job_section(index: int, job: Job) -> str:
    gain = improvement(job)
    direction = trend(gain, text(job, "status") == "failed")
    split = "test" if delta(job, "test") is not None else "dev"
    change = "" if gain is None else f"Δ {split} {gain:+.1f}"
    name = escape(text(job, "name", f"job {index + 1}"))
    summary = (
        f"<summary><b>{name}</b> {badge(text(job, 'status', 'unknown'))} "
        f'<span class="{direction}">{change}</span> · dev {pair(job, "dev")} · '
        f"test {pair(job, 'test')} · {usd(num(job, 'cost_usd'))}</summary>"
    )
    error = text(job, "error")
    parts = [f'<pre class="err">{escape(error)}</pre>' if error else "", _reading(job)]
    parts.append(_job_charts(job))
    parts += [_prompts(job), _steps_table(job)]
    is_open = " open" if index < OPEN_JOBS else ""
    return f'<details id="job-{index}" class="job"{is_open}>{summary}{"".join(parts)}</details>'


def _job_charts(job: Job) -> str:
    scores, edits = svg.score_chart(job), svg.edit_chart(job)
    figures = (
        [f"<figure><figcaption>Dev score by step</figcaption>{scores}</figure>"] if scores else []
    )
    if edits:
        caption = f"Words changed vs word budget · {_over_budget(job)}"
        figures.append(f"<figure><figcaption>{caption}</figcaption>{edits}</figure>")
    return f'<div class="charts">{"".join(figures)}</div>' if figures else ""


def _over_budget(job: Job) -> str:
    candidates = [c for r in rows(job, "step_records") for c in rows(r, "candidates")]
    over = sum(c.get("over_budget") is True for c in candidates)
    rejected = sum(num(r, "rejected_over_budget") or 0 for r in rows(job, "step_records"))
    share = over / len(candidates) if candidates else 0.0
    return f"{over} of {len(candidates)} over budget ({share:.0%}), {rejected:.0f} rejected"


_DROPPED = (
    ("parse_failures", "without tags"),
    ("rejected_unchanged", "returning the current prompt"),
    ("rejected_exemplar_copy", "copying the meta-prompt"),
)


def _reading(job: Job) -> str:
    """Outputs with no answer the metric could read; optimizer replies that gave no candidate."""
    judged, missing = num(job, "outputs_judged"), num(job, "unextractable")
    if not judged or missing is None:
        return ""
    note = (
        f"No answer read in {missing:,.0f} of {judged:,.0f} task outputs ({missing / judged:.1%})"
    )
    replies = job.get("optimizer_replies")
    counts = [(num(replies, key) or 0, label) for key, label in _DROPPED]
    dropped = ", ".join(f"{n:,.0f} {label}" for n, label in counts if n)
    if dropped:
        note += f"; optimizer replies dropped: {dropped}"
    return f'<p class="note">{escape(note)}.</p>'


def _rejected(record: dict[str, Any]) -> str:
    unchanged = num(record, "rejected_unchanged") or 0
    copies = num(record, "rejected_exemplar_copy") or 0
    title = f"{unchanged:.0f} unchanged, {copies:.0f} copying the meta-prompt"
    return f'<span title="{title}">{unchanged + copies:,.0f}</span>'


def _words(prompt: str) -> list[str]:
    return re.findall(r"\n|[^\s]+", prompt)


def word_diff(before: str, after: str) -> str:
    """``after`` as HTML with words not in ``before`` in ``<ins>`` and removed ones in ``<del>``."""
    old, new = _words(before), _words(after)
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<del>{_join(old[i1:i2])}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{_join(new[j1:j2])}</ins>")
        if op == "equal":
            out.append(_join(new[j1:j2]))
    return " ".join(out).replace(" <br> ", "<br>")


def _join(words: Sequence[str]) -> str:
    return " ".join("<br>" if w == "\n" else escape(w) for w in words)


def _prompts(job: Job) -> str:
    initial, best = text(job, "initial_prompt"), text(job, "best_prompt")
    scores = (
        '<table class="scores"><tr><th></th><th>dev</th><th>test</th></tr>'
        f"<tr><th class='l'>initial</th>{_score_cells(job, 'initial')}</tr>"
        f"<tr><th class='l'>best</th>{_score_cells(job, 'best')}</tr></table>"
    )
    changes = (
        "<h4>Changes from the initial prompt <small>(<ins>added</ins> <del>removed</del>)</small>"
        f'</h4><div class="prompt diff">{word_diff(initial, best)}</div>'
    )
    if initial == best:
        changes = '<p class="note">The best prompt is the initial prompt.</p>'
    return (
        f'<div class="prompts">{scores}<div><h4>Best prompt</h4><div class="prompt">'
        f"{escape(best)}</div>{changes}</div></div>"
    )


def _score_cells(job: Job, which: str) -> str:
    return "".join(f"<td>{score(num(job, f'{which}_{s}_score'))}</td>" for s in ("dev", "test"))


def _steps_table(job: Job) -> str:
    records = {num(r, "step"): r for r in rows(job, "step_records")}
    entries = rows(job, "trajectory") or [{"step": s} for s in records]
    pairs = [(e, records.get(num(e, "step"), {})) for e in entries]
    values = [_selected_score(e, r) for e, r in pairs]
    known = [v for v in values if v is not None]
    top = values.index(max(known)) if known else -1
    lines, running = [], None
    for i, ((entry, record), value) in enumerate(zip(pairs, values, strict=True)):
        if value is not None:
            running = value if running is None else max(running, value)
        lines.append(_step_row(entry, record, (value, running), i == top))
    head = (
        "<tr><th>step</th><th>dev score</th><th>best so far</th><th>word budget</th>"
        "<th>candidates (new)</th><th>over budget</th><th>parse failures</th><th>rejected</th>"
        "<th>re-asks</th>"
        '<th class="l">selected prompt (★ best on dev)</th></tr>'
    )
    table = f'<table class="steps">{head}{"".join(lines)}</table>'
    return f"<h4>Trajectory</h4>{table}" if lines else ""


def _raced(candidates: list[dict[str, Any]]) -> str:
    """``, N raced out`` when racing stopped some candidates early, else nothing."""
    raced = sum(c.get("raced_out") is True for c in candidates)
    return f", {raced} raced out" if raced else ""


def _clip(prompt: str) -> str:
    """A prompt for a table cell: escaped, and cut after ``CELL_CHARS`` characters."""
    if len(prompt) <= CELL_CHARS:
        return escape(prompt)
    rest = f"… (+{len(prompt) - CELL_CHARS:,} characters)"
    return f'{escape(prompt[:CELL_CHARS])}<span class="note">{rest}</span>'


def _selected_score(entry: dict[str, Any], record: dict[str, Any]) -> float | None:
    value = num(entry, "score")
    return num(record, "selected_score") if value is None else value


def _step_row(
    entry: dict[str, Any],
    record: dict[str, Any],
    scores: tuple[float | None, float | None],
    top: bool,
) -> str:
    candidates = rows(record, "candidates")
    new = sum(c.get("new") is True for c in candidates)
    over = sum(c.get("over_budget") is True for c in candidates)
    prompt = _clip(text(entry, "prompt") or text(record, "selected"))
    cells = (
        integer(num(entry, "step")),
        score(scores[0]),
        score(scores[1]),
        integer(num(record, "word_budget")) if record else "",
        f"{len(candidates)} ({new}{_raced(candidates)})" if record else "",
        str(over) if record else "",
        integer(num(record, "parse_failures")) if record else "",
        _rejected(record) if record else "",
        integer(num(record, "reasks")) if record else "",
    )
    tds = "".join(f"<td>{c}</td>" for c in cells)
    mark = ("", "") if not top else (' class="best"', "★ ")
    return f'<tr{mark[0]}>{tds}<td class="l prompt-cell">{mark[1]}{prompt}</td></tr>'


# --- the run: endpoints over time ------------------------------------------------------------


def endpoint_items(endpoints: object) -> list[dict[str, Any]]:
    return (
        [v for v in endpoints.values() if isinstance(v, dict)]
        if isinstance(endpoints, dict)
        else []
    )


def run_section(results: dict[str, Any], samples: Sequence[svg.Sample]) -> str:
    charts = [
        ("Spend (cumulative)", svg.endpoint_chart(samples, "cost_usd", "USD spent", "$")),
        ("Requests (cumulative)", svg.endpoint_chart(samples, "requests", "requests")),
        (
            "429 rate-limit responses (cumulative)",
            svg.endpoint_chart(samples, "rate_limited", "429s"),
        ),
    ]
    figures = "".join(f"<figure><figcaption>{c}</figcaption>{s}</figure>" for c, s in charts if s)
    if not figures:
        figures = '<p class="note">No stats samples in journal.jsonl.</p>'
    return (
        f'<h2 id="endpoints">Endpoints</h2><div class="charts">{figures}</div>'
        f"{_endpoint_table(results)}{_strategy(results)}"
    )


def _endpoint_table(results: dict[str, Any]) -> str:
    head = (
        '<tr><th class="l">endpoint</th><th>requests</th><th>retries</th><th>429s</th>'
        "<th>failures</th><th>cache hits</th><th>tokens in</th><th>tokens out</th><th>cost</th>"
        "<th>latency p50</th><th>p95</th><th>p99</th></tr>"
    )
    endpoints = results.get("endpoints")
    items = sorted(endpoints.items()) if isinstance(endpoints, dict) else []
    body = "".join(_endpoint_row(str(n), ep) for n, ep in items if isinstance(ep, dict))
    table = f'<table class="endpoints">{head}{body}{_totals_row(results.get("totals"))}</table>'
    return table + _prices(results.get("prices"))


def _prices(prices: object) -> str:
    """Which price each endpoint was charged at, and where that price came from."""
    if not isinstance(prices, dict) or not prices:
        return ""
    rows = "".join(
        f'<tr><td class="l">{escape(str(name))}</td><td class="l">{_price_text(price)}</td></tr>'
        for name, price in sorted(prices.items())
    )
    head = '<tr><th class="l">endpoint</th><th class="l">price</th></tr>'
    return f'<table class="prices">{head}{rows}</table>'


def _price_text(price: object) -> str:
    if not isinstance(price, dict):
        return 'unknown: costs not counted (set <code>price = {...}</code> or <code>"free"</code>)'
    source = escape(str(price.get("source", "")))
    when = f", as of {escape(str(price['as_of']))}" if price.get("as_of") else ""
    rate_in = num(price, "input_per_mtok") or 0.0
    rate_out = num(price, "output_per_mtok") or 0.0
    if not rate_in and not rate_out:
        return f"free ({source})"
    return f"${rate_in:g} / ${rate_out:g} per M tokens in / out ({source}{when})"


def _retries(value: object) -> str:
    if isinstance(value, dict):
        total = sum(v for v in value.values() if isinstance(v, int | float))
        reasons = ", ".join(f"{escape(str(k))} {v}" for k, v in sorted(value.items()))
        return f'<span title="{reasons}">{total:,}</span>' if reasons else "0"
    return integer(value) if isinstance(value, int | float) else "—"


def _latency(ep: dict[str, Any], key: str) -> str:
    value = num(ep, key)
    return "—" if value is None else f"{value * 1000:,.0f} ms" if value < 10 else f"{value:.1f} s"


def _endpoint_row(name: str, ep: dict[str, Any]) -> str:
    cells = (
        integer(num(ep, "requests")),
        _retries(ep.get("retries")),
        integer(num(ep, "rate_limited")),
        integer(num(ep, "failures")),
        integer(num(ep, "cache_hits")),
        integer(num(ep, "input_tokens")),
        integer(num(ep, "output_tokens")),
        usd(num(ep, "cost_usd")),
        *(_latency(ep, f"latency_{p}_s") for p in ("p50", "p95", "p99")),
    )
    return f'<tr><td class="l">{escape(name)}</td>{"".join(f"<td>{c}</td>" for c in cells)}</tr>'


def _totals_row(totals: object) -> str:
    cells = (
        f"{integer(num(totals, 'calls'))} calls",
        integer(num(totals, "retries")),
        "",
        "",
        integer(num(totals, "cache_hits")),
        integer(num(totals, "input_tokens")),
        integer(num(totals, "output_tokens")),
        usd(num(totals, "cost_usd")),
        f"wall {duration(num(totals, 'wall_s'))}",
    )
    tds = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr class="total"><th class="l">total</th>{tds}<td></td><td></td></tr>'


def _strategy(results: dict[str, Any]) -> str:
    strategy = results.get("strategy")
    knobs = sorted(strategy.items()) if isinstance(strategy, dict) else []
    info = [("run id", results.get("run_id")), ("config", results.get("config_path"))]
    items = [*info, *((f"strategy.{k}", v) for k, v in knobs)]
    body = "".join(
        f'<tr><th class="l">{escape(str(k))}</th><td class="l">{escape(_plain(v))}</td></tr>'
        for k, v in items
    )
    return f'<details class="run"><summary>Run settings</summary><table>{body}</table></details>'


def _plain(value: object) -> str:
    return orjson.dumps(value).decode() if not isinstance(value, str) else value
