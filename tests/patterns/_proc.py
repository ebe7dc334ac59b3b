"""Start and follow the processes of ``tests/patterns/_procs.py``."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Proc:
    """One child process whose stdout lines are collected by a reader thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.patterns._procs", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 20.0) -> str:
        """The first line (from now on, or already seen) that starts with ``prefix``."""
        for line in self.lines:
            if line.startswith(prefix):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line {prefix!r} within {timeout}s: {self.stderr()}")
            try:
                line = self._queue.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.process.poll() is not None and self._queue.empty():
                    raise AssertionError(
                        f"process exited ({self.process.returncode}) before {prefix!r}: "
                        f"{self.lines[-5:]} {self.stderr()}"
                    ) from None
                continue
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def drain(self) -> list[str]:
        with contextlib.suppress(queue.Empty):
            while True:
                self.lines.append(self._queue.get_nowait())
        return self.lines

    def stopped(self) -> bool:
        """True once the process is in the stopped state (after SIGSTOP)."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"
        except OSError:
            return False

    def wait_stopped(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.stopped():
            assert time.monotonic() < deadline, "process did not stop"
            time.sleep(0.01)

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()[-2000:]

    def close(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
