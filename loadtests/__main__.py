"""``python -m loadtests run``: see :mod:`loadtests.driver`.

The built-in shop by default; any service with ``--start`` (and ``--locustfile``)::

    python -m loadtests run --duration 20s --fault restart-redis
    python -m loadtests run --fault kill-orchestrator     # or pause-orchestrator, kill-relay,
                                                          # pause-relay, kill-consumer
    python -m loadtests run --start "uvicorn myapp:app --port {port} --workers 2" \\
        --locustfile my_locustfile.py --fault kill-worker
    python -m loadtests run --target http://127.0.0.1:8000 --locustfile my_locustfile.py
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from loadtests.driver import FAULTS, RunOptions, run


def _seconds(text: str) -> float:
    text = text.strip().lower()
    scale = {"s": 1, "m": 60}.get(text[-1:], 0)
    try:
        return float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 20s, 2m)") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m loadtests")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run Locust against a service, inject a fault, verify")
    p.add_argument("--duration", type=_seconds, default=20.0, help="e.g. 20s (default), 2m")
    p.add_argument("--fault", choices=FAULTS, help="injected at 40%% of the run")
    p.add_argument("--users", type=int, default=20, help="Locust users (default 20)")
    p.add_argument("--report", type=Path, help="report path (default <out>/report.md)")
    p.add_argument("--out", type=Path, help="logs and results (default loadtests/out/<run>/)")
    p.add_argument("--processes", type=int, default=1, help="Locust processes (default 1)")
    own = p.add_argument_group("your service (default: the built-in shop)")
    own.add_argument("--start", help='its start command, e.g. "uvicorn app:app --port {port}"')
    own.add_argument("--target", help="its base URL (default http://127.0.0.1:{port})")
    own.add_argument("--locustfile", type=Path, help="its locustfile (IdempotentUser routes)")
    own.add_argument("--health", default="/", help="path polled until it answers (default /)")
    own.add_argument(
        "--redis", action="store_true", help="start a throwaway Redis: {redis_url}, REDIS_URL"
    )
    p.add_argument(
        "--lease", type=float, default=2.0,
        help="the service's idempotency lease, s (the shop uses it; pause-worker pauses past it)",
    )  # fmt: skip
    shop = p.add_argument_group("the built-in shop")
    shop.add_argument("--workers", type=int, help="uvicorn workers (default 2; 1 with --embedded)")
    shop.add_argument("--embedded", action="store_true", help="fakeredis in the one worker")
    shop.add_argument(
        "--database",
        help="the shop's orders and outbox: postgresql://... or sqlite:///path "
        "(default: a throwaway PostgreSQL)",
    )
    args = parser.parse_args(argv)
    opts = RunOptions(
        duration=args.duration,
        fault=args.fault,
        workers=args.workers or (1 if args.embedded else 2),
        users=args.users,
        embedded=args.embedded,
        report=args.report,
        out_dir=args.out,
        lease=args.lease,
        command=shlex.join(["python", "-m", "loadtests", *argv]),
        target=args.target,
        start=args.start,
        locustfile=args.locustfile,
        redis=args.redis,
        health=args.health,
        processes=args.processes,
        database=args.database,
    )
    try:
        opts.check()
    except ValueError as exc:
        parser.error(str(exc))
    outcome = run(opts)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
