"""A real ``redis-server`` for the coordination tests: Debian's package, started on a free
loopback port with its own directory, with the durability gpo documents (append-only file,
``appendfsync always``), stopped after. ``.ci/run`` installs the package when it is missing;
where it cannot be installed, the tests that need it skip, saying so.

The fixtures: ``redis_server`` (one server for the session) and ``redis_url`` (that server,
emptied before each test, as a ``redis://`` URL).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` again keep its port and data
    (its append-only file), as a restarted production server would."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self._process is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready()

    def stop(self) -> None:
        """SIGTERM, wait; SIGKILL if it does not stop."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL (the append-only file keeps every acknowledged write)."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def command(self, *args: str) -> str:
        """Run one command with a raw RESP exchange (no client library needed)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
            s.sendall(payload.encode())
            return s.recv(65536).decode()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start:\n{log[-2000:]}")
            try:
                if self.command("PING").startswith("+PONG"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT_S} s")


def _available() -> bool:
    return Path(REDIS_SERVER).exists()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not _available():
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.start()  # a test may have stopped it
    assert redis_server.command("FLUSHALL").startswith("+OK")
    return redis_server.url
