"""Start an ASGI app under uvicorn and run Locust against it, both as bounded subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from idemkit.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("REDIS_URL", "SHOP_BROKEN", "TARGET_BROKEN"):
        env.pop(name, None)
    env.update(extra)
    return env


@contextlib.contextmanager
def serve(app: str, *args: str, log: Path, **env: str) -> Iterator[str]:
    """``uvicorn app`` on a free loopback port; yields its base URL; kills its process group."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", app, *args, "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=child_env(**env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not start:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(base + "/", timeout=1)
                break
            time.sleep(0.1)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def run_locust(
    locustfile: Path, host: str, *args: str, seconds: int = 4, users: int = 6
) -> subprocess.CompletedProcess[str]:
    """A short headless Locust run; stdout and stderr together in ``.stdout``."""
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--host", host, "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "1",
        "--only-summary", *args,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=seconds + 60,
    )  # fmt: skip
