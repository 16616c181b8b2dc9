"""B7's summary: per-preset counts read from a comparison's results.json."""

from __future__ import annotations

from typing import Any

from benchmarks.b7_summary import extras, preset_of


def job(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "initial_test_score": 50.0, "step_records": [], **fields}


def test_counts_are_summed_per_preset_and_only_new_candidates_count_as_edits() -> None:
    step = {
        "word_budget": 40,
        "candidates": [
            {"new": True, "edit_distance": 10, "over_budget": False},
            {"new": True, "edit_distance": 50, "over_budget": True},
            {"new": False, "edit_distance": 99, "over_budget": True},  # reused: not an edit
        ],
    }
    results = {
        "jobs": [
            job(
                "a@gpo#s1",
                optimizer_replies={"parse_failures": 2},
                outputs_judged=10,
                unextractable=1,
                step_records=[step],
            ),
            job(
                "b@gpo#s2",
                optimizer_replies={"parse_failures": 1, "rejected_unchanged": 3},
                outputs_judged=30,
                unextractable=3,
                initial_test_score=70.0,
            ),
            job("a@baseline#s1", outputs_judged=5, unextractable=0),
        ]
    }
    more = extras(results, ["gpo", "baseline"])
    assert more["gpo"]["optimizer_replies"] == {"parse_failures": 3, "rejected_unchanged": 3}
    assert more["gpo"]["unextractable_share"] == 4 / 40
    assert more["gpo"]["initial_test_mean"] == 60.0
    assert more["gpo"]["edits"] == {
        "candidates": 2,
        "mean_edit_distance": 30.0,
        "median_edit_distance": 30.0,
        "mean_word_budget": 40.0,
        "over_budget": 1,
    }
    assert more["baseline"]["edits"]["candidates"] == 0
    assert more["baseline"]["unextractable_share"] == 0.0


def test_the_preset_is_read_from_a_comparison_job_name() -> None:
    assert preset_of("web_of_lies@opro#s2") == "opro"
