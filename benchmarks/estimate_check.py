"""How close ``gpo estimate`` comes to a real run: estimate a config, run it on the simulator,
compare per endpoint (requests, input and output tokens, dollars; expected and worst case).

  python -m benchmarks.estimate_check examples/sim_bbh.toml --jobs 2 --dev 48 --test 32
  python -m benchmarks.estimate_check examples/*.toml --epochs 1

Every config is rewritten into a temporary variant first: its endpoints become simulator
endpoints that keep their knobs (``supports_n``, ``default_max_tokens``, an Anthropic endpoint
gets ``supports_n = false`` as the Messages API has no ``n``) and their price (the price
database's when the config gives none; a pretend $0.15 / $0.60 when nobody knows it); the
simulator loads every data file of the jobs so that it knows their answers; budget caps are
dropped (a capped run would stop early); jobs, dev and test sizes and epochs can be cut down so
a run takes seconds. A job on a file that does not exist (``examples/openai.toml``'s
``my_task.csv``) gets a stand-in: BBH's web_of_lies as a question,label CSV. The run is
``gpo run`` in a subprocess; its ``results.json`` gives the actual figures.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from pipeline.config._load import build_jobs, load_config
from pipeline.llm._endpoint import EndpointConfig
from pipeline.llm._pricing import Price
from pipeline.runner._estimate import estimate

PRETEND = {"input_per_mtok": 0.15, "output_per_mtok": 0.60}
STAND_IN = Path("/work/shared/data/bbh/web_of_lies.json")
_GPO = Path(sys.executable).with_name("gpo")


# --- the variant ---------------------------------------------------------------------------------


def variant(
    source: Path,
    out: Path,
    *,
    jobs: int,
    dev: int | None,
    test: int | None,
    epochs: int | None,
    split: bool = False,
    preset: str | None = None,
) -> Path:
    """Write the simulated, cut-down variant of ``source`` into ``out``; its path."""
    raw = tomllib.loads(source.read_text())
    base = source.absolute().parent
    config = load_config(source, require_keys=False, check_files=False)
    original = {e.name: e for e in config.endpoints}
    run = dict(raw.get("run", {}))
    for key in ("budget_usd", "budget_tokens", "dir"):
        run.pop(key, None)
    run.setdefault("seed", 0)
    job_tables, tasks = _jobs(raw.get("jobs", []), base, out, jobs, dev, test)
    sim = dict(raw.get("simulator", {}))
    sim["tasks"] = sorted(set(tasks))
    sim.setdefault("latency_ms", 1)
    optimizer = dict(raw.get("optimizer", {}))
    if epochs is not None:
        optimizer["epochs"] = epochs
    if preset is not None:
        optimizer["preset"] = preset
    endpoints = {
        name: _endpoint(table, original[name]) for name, table in raw.get("endpoints", {}).items()
    }
    if split:
        endpoints = _split(endpoints, optimizer)
    doc = {
        "run": run,
        "simulator": sim,
        "endpoints": endpoints,
        "optimizer": optimizer,
        "jobs": job_tables,
    }
    path = out / f"{source.stem}.toml"
    path.write_text(dumps(doc))
    return path


def _endpoint(table: Mapping[str, Any], config: EndpointConfig) -> dict[str, Any]:
    kept = ("supports_n", "default_max_tokens", "max_in_flight", "price", "model")
    new = {"kind": "simulator", **{k: v for k, v in table.items() if k in kept}}
    if table.get("kind") == "anthropic":
        new["supports_n"] = False  # what the gateway does for kind "anthropic"
    if "price" not in table or table["price"] == "free":
        price = config.effective_price
        new["price"] = PRETEND if price is None else _price_table(price)
    return new


def _split(endpoints: dict[str, Any], optimizer: dict[str, Any]) -> dict[str, Any]:
    """One endpoint per role (task, optimizer, embedding), so each role's figures show apart."""
    task = optimizer.get("task_endpoint") or next(iter(endpoints))
    roles = {"task": task, "optimizer": optimizer.get("optimizer_endpoint") or task}
    if optimizer.get("embedding_endpoint"):
        roles["embedding"] = optimizer["embedding_endpoint"]
    for role in roles:
        optimizer[f"{role}_endpoint"] = role
    return {role: endpoints[name] for role, name in roles.items()}


def _price_table(price: Price) -> dict[str, float]:
    return {"input_per_mtok": price.input_per_mtok, "output_per_mtok": price.output_per_mtok}


def _jobs(
    tables: Iterable[Mapping[str, Any]],
    base: Path,
    out: Path,
    limit: int,
    dev: int | None,
    test: int | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    result: list[dict[str, Any]] = []
    tasks: list[str] = []
    for table in tables:
        for job in _expanded(table, base, out):
            if len(result) >= limit:
                break
            job.pop("budget_usd", None)
            job.pop("budget_tokens", None)
            if dev is not None:
                job["dev_size"] = min(dev, job.get("dev_size", 48))
            if test is not None:
                job["test_size"] = min(test, job.get("test_size", 144))
            data = job["data"]
            if not data.startswith("builtin:"):
                tasks.append(job.pop("_task", data))
            job.pop("_task", None)
            result.append(job)
    return result, tasks


def _expanded(table: Mapping[str, Any], base: Path, out: Path) -> list[dict[str, Any]]:
    job = dict(table)
    if "glob" in job:
        pattern = str(base / job.pop("glob"))
        return [{**job, "data": path} for path in sorted(glob.glob(pattern))]
    data = job["data"]
    if data.startswith("builtin:"):
        return [job]
    path = (base / data).resolve()
    if path.exists():
        return [{**job, "data": str(path)}]
    return [{**job, **_stand_in(path, out, job)}]


def _stand_in(path: Path, out: Path, job: Mapping[str, Any]) -> dict[str, Any]:
    """A missing CSV/JSONL job file replaced by web_of_lies with the job's field names."""
    examples = orjson.loads(STAND_IN.read_bytes())["examples"]
    inp, target = job.get("input_field", "input"), job.get("target_field", "target")
    data = out / path.with_suffix(".csv").name
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([inp, target])
        writer.writerows([e["input"], e["target"].lower()] for e in examples)
    task = out / f"{path.stem}.jsonl"
    task.write_bytes(
        b"".join(
            orjson.dumps({"input": e["input"], "target": e["target"].lower()}) + b"\n"
            for e in examples
        )
    )
    return {"data": str(data), "format": "csv", "_task": str(task)}


def dumps(doc: Mapping[str, Any]) -> str:
    """A minimal TOML writer for this script's documents."""
    lines: list[str] = []
    for section, value in doc.items():
        if section == "jobs":
            for job in value:
                lines += ["", "[[jobs]]", *(f"{k} = {_value(v)}" for k, v in job.items())]
        elif section == "endpoints":
            for name, table in value.items():
                lines += [
                    "",
                    f"[endpoints.{name}]",
                    *(f"{k} = {_value(v)}" for k, v in table.items()),
                ]
        else:
            lines += ["", f"[{section}]", *(f"{k} = {_value(v)}" for k, v in value.items())]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


# --- estimate, run, compare ----------------------------------------------------------------------


def estimated(path: Path) -> dict[str, dict[str, float]]:
    config = load_config(path, require_keys=False)
    result = estimate(build_jobs(config), config.settings, config.endpoints, **_extra(config))
    prices = {e.name: e.effective_price for e in config.endpoints}
    rows = {}
    for name, u in result.endpoints.items():
        price = prices[name] or Price()
        rows[name] = {
            "requests": u.requests,
            "requests_worst": u.requests_worst,
            "input": u.input_tokens,
            "input_worst": u.input_worst,
            "output": u.output_tokens,
            "output_worst": u.output_worst,
            "usd": price.cost(u.input_tokens, u.output_tokens),
            "usd_worst": price.cost(u.input_worst, u.output_worst),
        }
    return rows


def _extra(config: Any) -> dict[str, Any]:
    """Keyword arguments that newer versions of ``estimate`` take (the simulated endpoints)."""
    import inspect

    if "simulated" in inspect.signature(estimate).parameters:
        return {"simulated": config.simulated}
    return {}


def actual(path: Path, run_dir: Path) -> dict[str, dict[str, float]]:
    command = [str(_GPO) if _GPO.exists() else sys.executable, "run", str(path)]
    if not _GPO.exists():
        command[1:1] = ["-m", "pipeline.cli"]
    command += ["--run-dir", str(run_dir)]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"gpo run {path} exited {done.returncode}:\n{done.stderr[-3000:]}")
    results = orjson.loads((run_dir / "results.json").read_bytes())
    return {
        name: {
            "requests": e["requests"],
            "retries": sum(e["retries"].values()),
            "input": e["input_tokens"],
            "output": e["output_tokens"],
            "usd": e["cost_usd"],
        }
        for name, e in results["endpoints"].items()
        if e["requests"]
    }


def compare(name: str, est: Mapping[str, Mapping[str, float]], act: Mapping[str, Any]) -> bool:
    ok = True
    print(f"\n{name}")
    print(
        f"  {'endpoint':<10} {'what':<10} {'expected':>12} {'worst':>12} {'actual':>12} "
        f"{'exp/act':>8} {'worst>=act':>10}  (requests: actual less retries)"
    )
    for endpoint in sorted(set(est) | set(act)):
        e, a = est.get(endpoint, {}), act.get(endpoint, {})
        for what, limit in (("requests", 1.10), ("input", 1.5), ("output", 1.5), ("usd", 1.5)):
            exp, worst, real = e.get(what, 0), e.get(f"{what}_worst", 0), a.get(what, 0)
            ratio = exp / real if real else float("inf") if exp else 1.0
            within = 1 / limit <= ratio <= limit
            # The worst case leaves retries apart (they come on top, a 429 is not billed).
            bound = worst >= real - (a.get("retries", 0) if what == "requests" else 0)
            ok = ok and within and bound
            fmt = ".4f" if what == "usd" else ",.0f"
            print(
                f"  {endpoint:<10} {what:<10} {exp:>12{fmt}} {worst:>12{fmt}} {real:>12{fmt}} "
                f"{ratio:>7.2f}{'' if within else '!'} {'yes' if bound else 'NO':>10}"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--jobs", type=int, default=2, help="at most this many jobs (2)")
    parser.add_argument("--dev", type=int, help="cap dev_size")
    parser.add_argument("--test", type=int, default=32, help="cap test_size (32)")
    parser.add_argument("--epochs", type=int, help="set the optimizer's epochs")
    parser.add_argument("--preset", help="set the optimizer's preset (gpo, opro, ape, ...)")
    parser.add_argument("--split", action="store_true", help="one endpoint per role")
    parser.add_argument("--keep", type=Path, help="write variants and runs here (kept)")
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for source in args.configs:
            out = root / source.stem
            out.mkdir(exist_ok=True)
            path = variant(
                source,
                out,
                jobs=args.jobs,
                dev=args.dev,
                test=args.test,
                epochs=args.epochs,
                split=args.split,
                preset=args.preset,
            )
            est = estimated(path)
            act = actual(path, out / "run")
            ok = compare(source.name, est, act) and ok
    print("\nall within targets" if ok else "\nSOME FIGURES MISS THEIR TARGETS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
