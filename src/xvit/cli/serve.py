"""``xvit serve``: the local web app (explain, compare and analyse in the browser); ``--bench`` load-tests it."""

from __future__ import annotations

import argparse
from pathlib import Path

from xvit.cli.common import UsageError, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Start the web app on the bundled models and samples, random-weight architectures and the "
                          "checkpoints under --allow-dir folders. It listens on 127.0.0.1 (this machine only) unless "
                          "--host says otherwise; it has no authentication.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--allow-dir", action="append", default=[], type=Path, metavar="DIR",
                        help="a folder whose checkpoint sub-directories the page may load (repeatable)")
    parser.add_argument("--device", default="cpu", help="device for the models, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--workers", type=positive_int, default=2, help="jobs run at once (default: 2)")
    parser.add_argument("--max-queue", type=positive_int, default=16,
                        help="jobs waiting or running before new ones are refused with 429 (default: 16)")
    parser.add_argument("--job-timeout", type=float, default=300.0, help="seconds a job may run (default: 300)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload request (default: 20)")
    parser.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                        help="largest decoded image, width x height (default: 40000000)")
    parser.add_argument("--max-models", type=positive_int, default=3, help="models kept loaded (default: 3)")
    parser.add_argument("--bench", action="store_true",
                        help="instead of serving, load-test the app on a free loopback port and print the figures")
    parser.add_argument("--bench-clients", type=positive_int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--bench-seconds", type=float, default=30.0, help="length of the load phase (default: 30)")


def run(args: argparse.Namespace) -> int:
    try:
        from xvit.app import Settings, serve
    except ImportError as e:
        raise UsageError(f"the web app needs its extra ({e.name} is missing): pip install -c constraints.txt "
                         "-e '.[app]'") from None
    from xvit.cli.common import device

    for folder in args.allow_dir:
        if not folder.is_dir():
            raise UsageError(f"--allow-dir {str(folder)!r} is not a directory")
    if args.job_timeout <= 0 or args.max_upload_mb <= 0:
        raise UsageError("--job-timeout and --max-upload-mb must be positive")
    settings = Settings(host=args.host, port=args.port, allow_dirs=tuple(p.resolve() for p in args.allow_dir),
                        device=str(device(args.device)), workers=args.workers, max_queue=args.max_queue,
                        job_timeout_s=args.job_timeout, max_upload_bytes=int(args.max_upload_mb * 2**20),
                        max_pixels=args.max_pixels, max_models=args.max_models)
    if args.bench:
        from xvit.app.loadtest import format_report, load_test

        print(format_report(load_test(settings, clients=args.bench_clients, seconds=args.bench_seconds)))
        return 0
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"xvit serve: open http://{host}:{args.port}/ (Ctrl+C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("xvit serve: warning: listening beyond this machine; the app has no authentication", flush=True)
    serve(settings)
    return 0
