"""``report.html``: one self-contained page to read a finished (or stopped) run in the morning.

The page opens with the five-second view (run status, cost against the cap, and every job ranked by
how much it improved; for ``gpo compare`` first the presets compared, from ``compare.json``), then
one collapsible section per job (score curve, word-level diff of the best prompt, trajectory, edit
distance against the word budget) and the run's endpoints over time.
Inline CSS and inline SVG only: no network, no fonts, no scripts beyond opening sections to print.
All text from the run (prompts, names, errors) is escaped.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ConfigError
from pipeline.report import _sections as sec
from pipeline.report import _svg as svg
from pipeline.report._compare import comparison_section, load_comparison
from pipeline.report._sections import DETAILED_JOBS, Job
from pipeline.report._svg import num, rows, text

MAX_SAMPLES = 400
HISTOGRAM_JOBS = 10
_KEYS = ("cost_usd", "requests", "rate_limited")


def render_report(run_dir: Path) -> str:
    """The report of the run in ``run_dir`` as one HTML document."""
    results = _load_results(Path(run_dir) / "results.json")
    samples = stats_samples(Path(run_dir) / "journal.jsonl")
    ranked = sorted(rows(results, "jobs"), key=sec.rank_key)
    comparison = load_comparison(Path(run_dir))
    kind = "run" if comparison is None else "compare"
    title = f"gpo {kind} {text(results, 'run_id', Path(run_dir).name)}"
    body = (
        _overview(results, ranked, title),
        "" if comparison is None else comparison_section(comparison),
        _summary(ranked),
        sec.job_sections(ranked),
        sec.run_section(results, samples),
    )
    return _page(title, "".join(body))


def write_report(run_dir: Path) -> Path:
    """Render the report and write it to ``run_dir/report.html`` atomically; return that path."""
    target = Path(run_dir) / "report.html"
    html_text = render_report(Path(run_dir))
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(html_text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# --- input ---------------------------------------------------------------------------------


def _load_results(path: Path) -> dict[str, Any]:
    try:
        data: Any = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (is this a gpo run directory?)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read: {err.strerror}") from None
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        found = type(data).__name__ if not isinstance(data, dict) else "no 'jobs' list"
        raise ConfigError(f"{path}: expected an object with a 'jobs' list, found {found}")
    if data.get("schema", 1) != 1:
        raise ConfigError(f"{path}: schema {data.get('schema')!r} is not supported (expected 1)")
    return data


def stats_samples(journal: Path) -> list[svg.Sample]:
    """The journal's ``stats`` events as (t, {endpoint: counters}), on one time line, thinned to
    at most ``MAX_SAMPLES``; unreadable lines (a torn last line) are skipped, no file is none."""
    try:
        samples = _stitch(_events(journal))
    except OSError:
        return []
    if len(samples) <= MAX_SAMPLES:
        return samples
    step = -(-len(samples) // MAX_SAMPLES)
    return samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])


def _events(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as lines:
        for line in lines:
            if b'"stats"' not in line and b'"run_started"' not in line:
                continue
            try:
                event: Any = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


def _stitch(events: Iterator[dict[str, Any]]) -> list[svg.Sample]:
    """A resumed run's sessions each restart their clock and counters at zero: shift every later
    session to where the one before it ended."""
    samples: list[svg.Sample] = []
    offset, base = 0.0, svg.Counters()
    for event in events:
        kind, t = event.get("event"), num(event, "t")
        if kind == "run_started" and samples:
            offset, base = samples[-1]
        elif kind == "stats" and t is not None:
            samples.append((offset + t, _add(base, _counters(event.get("endpoints")))))
    return samples


def _add(base: svg.Counters, counters: svg.Counters) -> svg.Counters:
    if not base:
        return counters
    names = base.keys() | counters.keys()
    return {
        n: {k: base.get(n, {}).get(k, 0.0) + counters.get(n, {}).get(k, 0.0) for k in _KEYS}
        for n in names
    }


def _counters(endpoints: object) -> svg.Counters:
    if not isinstance(endpoints, dict):
        return {}
    return {
        str(name): {k: v for k in _KEYS if (v := num(ep, k)) is not None}
        for name, ep in endpoints.items()
    }


def _delta_cell(job: Job, gain: float | None, scale: float, bar: bool) -> str:
    trend = sec.trend(gain, text(job, "status") == "failed")
    if gain is None:
        return '<td class="flat">—</td>'
    arrow = {"up": "▲ +", "down": "▼ −", "flat": "● ±"}[trend]
    width = 0 if not bar or trend == "flat" else max(2, round(70 * abs(gain) / scale))
    meter = f'<i class="bar" style="width:{width}px"></i>' if width else ""
    return f'<td class="{trend}">{meter}{arrow}{abs(gain):.1f}</td>'


# --- the five-second view ------------------------------------------------------------------


def _wall(results: dict[str, Any]) -> float | None:
    wall = num(results.get("totals"), "wall_s")
    if wall is not None:
        return wall
    try:
        start = datetime.fromisoformat(text(results, "started_at"))
        return (datetime.fromisoformat(text(results, "finished_at")) - start).total_seconds()
    except (ValueError, TypeError):
        return None


def _headline(ranked: Sequence[Job]) -> str:
    failed = sum(text(j, "status") == "failed" for j in ranked)
    gains = _gains(ranked)
    trends = [sec.trend(g) for g in gains]
    others = [f"{trends.count('flat')} unchanged", f"{failed} failed"]
    if len(ranked) - failed - len(gains):
        others.append(f"{len(ranked) - failed - len(gains)} not scored")
    median = f" · median change {statistics.median(gains):+.1f} points" if gains else ""
    return (
        f'<p class="headline">{_count(trends, "up", "▲", "improved")} · '
        f"{_count(trends, 'down', '▼', 'regressed')} · "
        f'<span class="flat">{" · ".join(others)}</span> of {len(ranked):,} jobs{median}</p>'
    )


def _count(trends: list[str], trend: str, arrow: str, label: str) -> str:
    n = trends.count(trend)
    return f'<b class="{trend if n else "flat"}">{arrow} {n} {label}</b>'


def _gains(ranked: Sequence[Job]) -> list[float]:
    """The improvement of every job that did not fail and has one."""
    done = [j for j in ranked if text(j, "status") != "failed"]
    return [g for j in done if (g := sec.improvement(j)) is not None]


def _cost_tile(results: dict[str, Any]) -> str:
    budget, totals = results.get("budget"), results.get("totals")
    spent = num(budget, "spent_usd")
    spent = num(totals, "cost_usd") if spent is None else spent
    cap = num(budget, "cap_usd")
    if cap is None or not cap > 0:
        return _tile("cost", sec.usd(spent), "no dollar cap")
    share = min(1.0, (spent or 0.0) / cap)
    meter = f'<span class="meter"><i style="width:{share * 100:.1f}%"></i></span>'
    return _tile("cost", sec.usd(spent), f"of {sec.usd(cap)} cap ({share:.0%}){meter}")


def _tile(label: str, value: str, note: str = "") -> str:
    return f'<div class="tile"><span>{label}</span><b>{value}</b><small>{note}</small></div>'


def _overview(results: dict[str, Any], ranked: Sequence[Job], title: str) -> str:
    totals, endpoints = results.get("totals"), results.get("endpoints")
    limited = sum(num(ep, "rate_limited") or 0 for ep in sec.endpoint_items(endpoints))
    status = text(results, "status", "unknown")
    when = escape(f"{text(results, 'started_at')} → {text(results, 'finished_at')}")
    tiles = (
        _tile("status", sec.badge(status)),
        _tile("wall time", sec.duration(_wall(results)), when),
        _cost_tile(results),
        _tile("calls", sec.integer(num(totals, "calls"))),
        _tile("cache hits", sec.integer(num(totals, "cache_hits"))),
        _tile("retries", sec.integer(num(totals, "retries")), f"{limited:,.0f} rate-limited (429)"),
        _tile("jobs", f"{len(ranked):,}"),
    )
    return f'<h1>{escape(title)}</h1>{_headline(ranked)}<div class="tiles">{"".join(tiles)}</div>'


def _distribution(ranked: Sequence[Job]) -> str:
    gains = _gains(ranked)
    if len(gains) < HISTOGRAM_JOBS:
        return ""
    chart = svg.gain_histogram(gains, "change in score, points (test; dev where no test)")
    return f"<figure><figcaption>Jobs by score change</figcaption>{chart}</figure>"


def _summary(ranked: Sequence[Job]) -> str:
    scale = max([abs(g) for j in ranked if (g := sec.improvement(j)) is not None] + [1.0])
    head = (
        '<tr><th>#</th><th class="l">job</th><th class="l">status</th><th>dev: initial → best</th>'
        "<th>Δ dev</th><th>test: initial → best</th><th>Δ test</th><th>steps</th><th>cost</th></tr>"
    )
    body = "".join(_summary_row(i, job, scale) for i, job in enumerate(ranked))
    return (
        '<h2 id="jobs">Jobs, most improved first</h2>'
        f"{_distribution(ranked)}"
        '<p class="note">Ranked by the test-score change (the dev-score change where a job has '
        "no test score); failed jobs last. Scores are accuracy in percent.</p>"
        f'<table class="summary">{head}{body}</table>'
    )


def _summary_row(index: int, job: Job, scale: float) -> str:
    name = escape(text(job, "name", f"job {index + 1}"))
    if index < DETAILED_JOBS:
        name = f'<a href="#job-{index}">{name}</a>'
    error = text(job, "error")
    if error:
        name += f'<div class="err">{escape(error[:160])}</div>'
    dev, test = sec.delta(job, "dev"), sec.delta(job, "test")
    return (
        f'<tr><td>{index + 1}</td><td class="l">{name}</td><td class="l">'
        f"{sec.badge(text(job, 'status', 'unknown'))}</td>"
        f"<td>{sec.pair(job, 'dev')}</td>{_delta_cell(job, dev, scale, test is None)}"
        f"<td>{sec.pair(job, 'test')}</td>{_delta_cell(job, test, scale, test is not None)}"
        f"<td>{sec.integer(num(job, 'steps'))}</td><td>{sec.usd(num(job, 'cost_usd'))}</td></tr>"
    )


# --- the page --------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light}*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:#1b1b1b;background:#fff;margin:0 auto;max-width:1360px;padding:18px 28px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:18px;margin:30px 0 6px;border-bottom:2px solid #ddd}
h4{margin:12px 0 4px;font-size:14px}.note{color:#555;margin:2px 0 8px}
.headline{font-size:18px;margin:4px 0 12px}.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{border:1px solid #d8d8d8;border-radius:6px;padding:6px 12px;min-width:110px;
background:#fafafa}
.tile>span{display:block;color:#555;font-size:11px;text-transform:uppercase;letter-spacing:.05em}
.tile b{display:block;font-size:20px}.tile small{display:block;color:#555;font-size:12px}
.meter{display:block;width:150px;height:6px;background:#e3e3e3;border-radius:3px;margin-top:3px}
.meter i{display:block;height:6px;background:#0072B2;border-radius:3px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0}
th,td{padding:3px 9px;border-bottom:1px solid #e6e6e6;text-align:right;vertical-align:top}
th{background:#f2f2f2;font-weight:600}.l{text-align:left}
tr.total td,tr.total th{border-top:2px solid #bbb}
.summary tr:hover td{background:#f7f9fc}.summary a{color:#0b4f8a}
.summary td:not(.l),.summary th{white-space:nowrap}
td.up{background:#e3f4ee}td.down{background:#fbe8dc}
.up{color:#00704d;font-weight:600}.down{color:#a94300;font-weight:600}.flat{color:#6b6b6b}
.bar{display:inline-block;height:9px;margin-right:6px;border-radius:2px;vertical-align:baseline}
.up .bar{background:#009E73}.down .bar{background:#D55E00}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;color:#fff;
font-weight:600}
.badge.ok{background:#00704d}.badge.warn{background:#8a6100}.badge.bad{background:#b23c00}
.err{color:#a32d00;font-size:12px;white-space:pre-wrap;margin:2px 0}
details.job{border:1px solid #d8d8d8;border-radius:6px;margin:8px 0;padding:4px 12px}
details.job>summary{cursor:pointer;font-size:15px;padding:4px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px 24px}figure{margin:6px 0;break-inside:avoid}
figcaption{font-weight:600;font-size:13px;color:#333}svg.chart{max-width:100%;height:auto}
.chart text{font-size:11px;fill:#333}.chart .lab{font-size:12px;font-weight:600;fill:#222}
.chart .ax{stroke:#555}.chart .grid{stroke:#e9e9e9}
.prompts{display:flex;gap:24px;align-items:flex-start}.prompts>div{flex:1;min-width:0}
.prompt{border:1px solid #e0e0e0;background:#fbfbfb;padding:6px 10px;border-radius:4px;
white-space:pre-wrap;overflow-wrap:anywhere}.diff{white-space:normal}
ins{background:#d7ecfa;text-decoration:none;border-bottom:2px solid #0072B2}
del{background:#fde3d3;color:#7a3000;text-decoration:line-through}
.steps tr.best td{background:#fff3cf;font-weight:600}
.steps .prompt-cell{max-width:640px;white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px}
@media print{body{max-width:none;padding:0;font-size:11px}h2{break-after:avoid}}
"""

_PRINT_JS = (
    '<script>addEventListener("beforeprint",()=>'
    'document.querySelectorAll("details").forEach(d=>d.open=true))</script>'
)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style>{_PRINT_JS}</head>"
        f"<body>{body}</body></html>\n"
    )
