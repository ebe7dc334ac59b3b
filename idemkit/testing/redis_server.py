"""One throwaway ``redis-server`` process on a free loopback port, with fault injection."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType

__all__ = ["RedisServer", "free_port", "redis_binary"]


def free_port(below: int = 65536) -> int:
    """A TCP port on 127.0.0.1, below ``below``, that was free a moment ago."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below:
            return port
    raise RuntimeError(f"no free loopback port below {below}")


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server is not installed; run 'make test' (installs it with apt-get as root) "
            "or install it with your package manager"
        )
    return path


class RedisServer:
    """One ``redis-server`` child process bound to 127.0.0.1.

    ``appendonly=True`` turns on AOF with ``appendfsync always`` so a restart keeps every
    acknowledged write, which tests of token monotonicity across restarts rely on.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        directory: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="idemkit-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            self.directory,
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
            "--logfile",
            os.path.join(self.directory, "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited at start (port {self.port}): {self._log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log")) as log:
                return "".join(log.readlines()[-5:])
        except OSError:
            return "(no log)"

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM), waiting for the process to exit."""
        if self.process is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Crash the server (SIGKILL): no shutdown, no final AOF rewrite."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False, down_for: float = 0.0) -> None:
        """Stop (or kill) and start again on the same port and data directory."""
        self.kill() if kill else self.stop()
        if down_for:
            time.sleep(down_for)
        self.process = None
        self.start()

    def close(self) -> None:
        self.stop()
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
