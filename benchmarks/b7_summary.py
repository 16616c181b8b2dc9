"""B7: the table and the committed record of a `gpo compare` run on a real model.

    python -m benchmarks.b7_summary runs/b7-compare --out benchmarks/results/b7_real.json

Reads the run directory's ``compare.json`` and ``results.json`` and adds, per preset, what a
comparison table leaves out: optimizer replies without tags or rejected, task answers from which
no answer could be read, the candidates' word edits against the word budget, and tokens. Prints
a Markdown table for the README and writes everything, with the machine and the date, as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson


def preset_of(job_name: str) -> str:
    """``boolean_expressions@gpo#s1`` -> ``gpo``."""
    return job_name.split("@", 1)[1].split("#", 1)[0]


def replies(jobs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The jobs' optimizer replies without tags and rejected, summed."""
    total: dict[str, int] = {}
    for job in jobs:
        for reason, count in (job.get("optimizer_replies") or {}).items():
            total[reason] = total.get(reason, 0) + int(count)
    return total


def unreadable(jobs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(outputs judged, outputs from which no answer was read), summed over the jobs."""
    judged = sum(int(job.get("outputs_judged") or 0) for job in jobs)
    missed = sum(int(job.get("unextractable") or 0) for job in jobs)
    return judged, missed


def edits(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """New candidates' word edit distance to the current prompt, against each step's budget."""
    distances: list[int] = []
    over = 0
    budgets: list[int] = []
    for job in jobs:
        for record in job.get("step_records") or ():
            budget = record.get("word_budget")
            for candidate in record.get("candidates") or ():
                if not candidate.get("new"):
                    continue
                distances.append(int(candidate["edit_distance"]))
                over += bool(candidate.get("over_budget"))
                if budget is not None:
                    budgets.append(int(budget))
    return {
        "candidates": len(distances),
        "mean_edit_distance": statistics.fmean(distances) if distances else None,
        "median_edit_distance": statistics.median(distances) if distances else None,
        "mean_word_budget": statistics.fmean(budgets) if budgets else None,
        "over_budget": over,
    }


def extras(results: Mapping[str, Any], presets: Sequence[str]) -> dict[str, dict[str, Any]]:
    by_preset: dict[str, list[Mapping[str, Any]]] = {p: [] for p in presets}
    for job in results["jobs"]:
        by_preset.setdefault(preset_of(job["name"]), []).append(job)
    out: dict[str, dict[str, Any]] = {}
    for preset, jobs in by_preset.items():
        judged, missed = unreadable(jobs)
        out[preset] = {
            "optimizer_replies": replies(jobs),
            "outputs_judged": judged,
            "unextractable": missed,
            "unextractable_share": missed / judged if judged else None,
            "edits": edits(jobs),
            "initial_test_mean": _mean(j.get("initial_test_score") for j in jobs),
        }
    return out


def _mean(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _num(value: float | None, digits: int = 1, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def table(compare: Mapping[str, Any], more: Mapping[str, Mapping[str, Any]]) -> str:
    pairs = {p["preset"]: p for p in compare["pairs"]}
    reference = compare["plan"]["reference"]
    head = (
        "| preset | test (initial -> best-dev prompt) | best dev | dev-test gap "
        f"| vs {reference}: diff (SE), W/T/L, sign p | tokens | calls "
        "| optimizer replies: no tags / unchanged / copy | answers not read "
        "| word edits (mean) / budget (mean), over budget |"
    )
    rows = [head, "|" + " --- |" * 10]
    for row in compare["presets"]:
        name = row["preset"]
        extra = more.get(name, {})
        pair = pairs.get(name)
        versus = "-"
        if pair is not None:
            versus = (
                f"{_num(pair['mean_diff'], sign=True)} ({_num(pair['se'])}), "
                f"{pair['wins']}/{pair['ties']}/{pair['losses']}, "
                f"p = {_num(pair['p_value'], 3)}: {pair['verdict']}"
            )
        rep = extra.get("optimizer_replies", {})
        ed = extra.get("edits", {})
        share = extra.get("unextractable_share")
        rows.append(
            f"| `{name}` | {_num(extra.get('initial_test_mean'))} -> {_num(row['mean_test'])} "
            f"| {_num(row['mean_best_dev'])} | {_num(row['dev_test_gap'], sign=True)} "
            f"| {versus} | {row['tokens']:,} | {row['calls']:,} "
            f"| {rep.get('parse_failures', 0)} / {rep.get('rejected_unchanged', 0)} / "
            f"{rep.get('rejected_exemplar_copy', 0)} "
            f"| {extra.get('unextractable', 0)} of {extra.get('outputs_judged', 0)}"
            f" ({_num(None if share is None else 100 * share)} %) "
            f"| {_num(ed.get('mean_edit_distance'))} / {_num(ed.get('mean_word_budget'))}, "
            f"{ed.get('over_budget', 0)} of {ed.get('candidates', 0)} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="write the record as JSON here")
    parser.add_argument("--model", default="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (llama.cpp)")
    parser.add_argument("--note", default="", help="how the machine was set up, in words")
    args = parser.parse_args(argv)
    compare = orjson.loads((args.run_dir / "compare.json").read_bytes())
    results = orjson.loads((args.run_dir / "results.json").read_bytes())
    more = extras(results, compare["plan"]["presets"])
    print(table(compare, more))
    if args.out is not None:
        record = {
            "benchmark": "B7",
            "date": dt.date.today().isoformat(),
            "model": args.model,
            "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
            "note": args.note,
            "config": (args.run_dir / "config.toml").read_text(),
            "compare": compare,
            "per_preset": more,
            "totals": results.get("totals"),
            "endpoints": results.get("endpoints"),
            "jobs": [
                {k: job.get(k) for k in ("name", "status", "initial_prompt", "best_prompt")}
                for job in results["jobs"]
            ],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
