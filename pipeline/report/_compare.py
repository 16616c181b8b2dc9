"""The comparison section of ``report.html``, from a run directory's ``compare.json``.

A table per preset (mean test and best dev accuracy, the dev-test gap, cost, calls, tokens), a
table of each preset paired with the first (mean test difference, standard error, wins, ties,
losses, sign-test p, and whether the difference is within noise), and the same in sentences.
Every value is read loosely: anything missing shows as a dash.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import orjson

from pipeline.report._sections import integer, score, usd
from pipeline.report._svg import num, rows, text

_VERDICT_CLASS = {"better": "up", "worse": "down"}


def load_comparison(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/compare.json`` when it is a comparison with results, else None."""
    try:
        data: Any = orjson.loads((run_dir / "compare.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("presets"), list):
        return None
    return data


def comparison_section(data: dict[str, Any]) -> str:
    plan = data.get("plan")
    seeds = plan.get("seeds") if isinstance(plan, dict) else None
    reference = text(plan, "reference", "the first preset")
    count = len(seeds) if isinstance(seeds, list) else 0
    return (
        '<h2 id="compare">Presets compared</h2>'
        f'<p class="note">Every job under each preset with {count} seed(s); each preset is '
        f"paired with <b>{escape(reference)}</b> on the same (job, seed): same dev and test "
        "examples. Test is the best-dev prompt's test accuracy in percent; the gap is best dev "
        "minus test (overfitting the dev split).</p>"
        f"{_presets_table(data)}{_pairs_table(data, reference)}{_notes(data)}"
    )


def _presets_table(data: dict[str, Any]) -> str:
    head = (
        '<tr><th class="l">preset</th><th>jobs tested</th><th>mean test</th>'
        "<th>mean best dev</th><th>dev − test gap</th><th>cost</th><th>calls</th>"
        "<th>tokens</th></tr>"
    )
    body = "".join(
        f'<tr><td class="l">{escape(text(row, "preset"))}</td>'
        f"<td>{integer(num(row, 'tested'))}/{integer(num(row, 'jobs'))}</td>"
        f"<td>{score(num(row, 'mean_test'))}</td><td>{score(num(row, 'mean_best_dev'))}</td>"
        f"<td>{_signed(num(row, 'dev_test_gap'))}</td><td>{usd(num(row, 'cost_usd'))}</td>"
        f"<td>{integer(num(row, 'calls'))}</td><td>{integer(num(row, 'tokens'))}</td></tr>"
        for row in rows(data, "presets")
    )
    return f'<table class="summary compare">{head}{body}</table>'


def _pairs_table(data: dict[str, Any], reference: str) -> str:
    pairs = rows(data, "pairs")
    if not pairs:
        return ""
    head = (
        f'<tr><th class="l">vs {escape(reference)}</th><th>pairs</th><th>test diff</th>'
        '<th>SE</th><th>wins / ties / losses</th><th>sign p</th><th class="l">verdict</th></tr>'
    )
    body = "".join(_pair_row(pair) for pair in pairs)
    return f'<table class="summary pairs">{head}{body}</table>'


def _pair_row(pair: dict[str, Any]) -> str:
    verdict = text(pair, "verdict", "—")
    trend = _VERDICT_CLASS.get(verdict, "flat")
    counts = " / ".join(integer(num(pair, k)) for k in ("wins", "ties", "losses"))
    p = num(pair, "p_value")
    return (
        f'<tr><td class="l">{escape(text(pair, "preset"))}</td>'
        f"<td>{integer(num(pair, 'n'))}</td>"
        f'<td class="{trend}">{_signed(num(pair, "mean_diff"))}</td>'
        f"<td>{score(num(pair, 'se'))}</td><td>{counts}</td>"
        f"<td>{'—' if p is None else f'{p:.3g}'}</td>"
        f'<td class="l {trend}">{escape(verdict)}</td></tr>'
    )


def _notes(data: dict[str, Any]) -> str:
    unknown = "" if data.get("cost_known", True) else " Some price is unknown: costs are unknown."
    return (
        '<p class="note">A difference is <i>within noise</i> when it is smaller than two standard '
        "errors or the exact sign test (ties dropped) gives p ≥ 0.05; with fewer than two pairs "
        "there is no standard error and nothing to say. With fewer than 6 pairs that differ, "
        "the sign test cannot reach p &lt; 0.05. Cost, calls and tokens are what each preset's "
        "jobs paid: a call several presets make alike (the initial prompt's scoring, all that "
        f"the baseline does) is paid once, by the job that asked first.{unknown}</p>"
    )


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"
