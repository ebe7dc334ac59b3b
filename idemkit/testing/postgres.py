"""One throwaway PostgreSQL server (``initdb`` + ``pg_ctl``) on a free loopback port.

Debian keeps the server binaries in ``/usr/lib/postgresql/<version>/bin``, off ``PATH``;
:func:`postgres_bindir` finds them (``IDEMKIT_PG_BINDIR`` overrides). ``initdb`` refuses to
run as root, so as root the cluster is created and run as an unprivileged system user
(``postgres`` by default, created if missing) through ``runuser``. The data directory is a
temporary one with durability switched off (``fsync=off``): a test server, never a real one.
Never the system server on 5432: the port is a free one and only 127.0.0.1 is listened on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from types import TracebackType

from idemkit.testing.redis_server import free_port

__all__ = ["PostgresServer", "postgres_bindir"]


def postgres_bindir() -> str:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or a clear error."""
    configured = os.environ.get("IDEMKIT_PG_BINDIR")
    if configured:
        return configured
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; run 'make postgres' (installs "
        "Debian's postgresql with apt-get as root) or set IDEMKIT_PG_BINDIR"
    )


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


class PostgresServer:
    """A throwaway PostgreSQL cluster bound to 127.0.0.1; trust authentication, user
    ``postgres``, database ``postgres``. Fault injection: :meth:`kill` (SIGKILL of the
    postmaster), :meth:`restart`."""

    def __init__(self, *, port: int | None = None, os_user: str = "postgres") -> None:
        self.port = port or free_port()
        self.bindir = postgres_bindir()
        self.directory = tempfile.mkdtemp(prefix="idemkit-pg-")
        self.datadir = os.path.join(self.directory, "data")
        self.logfile = os.path.join(self.directory, "postgres.log")
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = _ensure_user(os_user)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", os_user, "--"]
        self._initialised = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{os.path.basename(args[0])} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{self._log_tail()}"
            )

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def start(self, timeout: float = 30.0) -> PostgresServer:
        if not self._initialised:
            self._run(
                self._bin("initdb"),
                "-D",
                self.datadir,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            )
            self._initialised = True
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.directory} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        self._run(
            self._bin("pg_ctl"),
            "-D",
            self.datadir,
            "-l",
            self.logfile,
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 5,
        )
        return self

    def _pid(self) -> int | None:
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def _log_tail(self) -> str:
        try:
            with open(self.logfile) as log:
                return "".join(log.readlines()[-5:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown (``pg_ctl stop -m fast``)."""
        if self._pid() is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(self._bin("pg_ctl"), "-D", self.datadir, "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """Crash the postmaster (SIGKILL); its backends exit when they notice."""
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        # Orphaned backends keep the shared memory busy for a moment; the restart waits.
        time.sleep(0.2)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.datadir, "postmaster.pid"))

    def restart(self, *, kill: bool = False) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
