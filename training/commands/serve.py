"""Commands of the service area: ``usfad serve``, ``usfad worker``, ``usfad bench serve``.

``serve`` and ``worker`` hand the process over (``os.execv``) to ``python -m service`` so the
serving processes never import torch or ``training``; ``serve --demo`` first builds the demo
bundles in a subprocess (``python -m training.demo``, cached) and prints a curl example.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from service import settings as service_settings
from service.__main__ import API_SETTINGS, WORKER_SETTINGS


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``serve``, ``worker`` (top level) and ``bench serve``."""
    serve = groups["root"].add_parser(
        "serve",
        help="serve model bundles over HTTP (one process without --redis-url)",
        description="Start the scoring API. Without --redis-url (USFAD_REDIS_URL) the API, the queue and one "
        "worker run in this one process; with it, the API feeds Redis Streams for `usfad worker`s.",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="train (once, cached) and serve a small tabular and image model; print a curl example",
    )
    serve.add_argument(
        "--demo-dir",
        default=None,
        help="demo cache folder (default: $USFAD_HOME/demo or ~/.cache/usfad/demo)",
    )
    service_settings.add_arguments(serve, API_SETTINGS)
    serve.set_defaults(handler=run_serve)

    worker = groups["root"].add_parser(
        "worker",
        help="batching ONNX Runtime worker reading Redis Streams (run any number)",
        description="Read scoring jobs from Redis Streams in dynamic batches, score them with ONNX Runtime "
        "(CUDA when available), publish results, then acknowledge.",
    )
    service_settings.add_arguments(worker, WORKER_SETTINGS)
    worker.set_defaults(handler=run_worker)

    bench = groups["bench"].add_parser(
        "serve",
        help="drive a running service at concurrency 1..64 vs direct ONNX Runtime in one process",
        description="Throughput, p50/p95/p99 latency and mean batch size of the running service, next to the "
        "same bundle scored directly with ONNX Runtime at the same batch sizes, plus RSS of the processes.",
    )
    from service.bench import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(handler=run_bench)


# Flags of ``usfad serve`` itself, not passed on to ``python -m service serve``: name -> takes a value.
OWN_FLAGS = {"--demo": False, "--demo-dir": True}


def _service_argv(command: str, args: argparse.Namespace, extra: Sequence[str] = ()) -> list[str]:
    """``python -m service COMMAND`` followed by the user's own arguments (``args.argv``).

    The arguments after the command name are passed on as typed (the ``USFAD_*`` variables
    reach the new process through the environment), minus ``usfad serve``'s own flags, then
    ``extra``. argparse keeps the last value of a repeated flag, so ``extra`` wins.
    """
    typed = list(getattr(args, "argv", None) or [])
    passed: list[str] = []
    if command in typed:
        skip = False
        for item in typed[typed.index(command) + 1 :]:
            if skip:
                skip = False
                continue
            name = item.split("=", 1)[0]
            if name in OWN_FLAGS:
                skip = OWN_FLAGS[name] and "=" not in item
                continue
            passed.append(item)
    return [sys.executable, "-m", "service", command, *passed, *extra]


def demo_dir(args: argparse.Namespace) -> Path:
    """The demo cache: ``--demo-dir``, ``$USFAD_HOME/demo`` or ``~/.cache/usfad/demo``."""
    if args.demo_dir:
        return Path(args.demo_dir)
    home = os.environ.get("USFAD_HOME")
    return Path(home) / "demo" if home else Path.home() / ".cache" / "usfad" / "demo"


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``usfad serve``: optionally build the demo, then exec ``python -m service serve``."""
    if args.demo:
        cache = demo_dir(args)
        built = subprocess.run([sys.executable, "-m", "training.demo", "--out", str(cache)], check=False)
        if built.returncode != 0:
            print("error: building the demo bundles failed (see above)", file=sys.stderr)
            return built.returncode
        extra = ["--model-dir", str(cache / "bundles")]
        from training.demo import curl_examples

        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print("\nServing the demo models. Try:\n")
        for line in curl_examples(cache, f"http://{host}:{args.port}"):
            print(line)
        print(f"\nOpenAPI: http://{host}:{args.port}/docs\n", flush=True)
    else:
        extra = []
    argv = _service_argv("serve", args, extra)
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def run_worker(args: argparse.Namespace) -> int:
    """Handler of ``usfad worker``: exec ``python -m service worker``."""
    if not args.redis_url:
        print("error: --redis-url (or USFAD_REDIS_URL) is required for a worker", file=sys.stderr)
        return 2
    os.execv(sys.executable, _service_argv("worker", args))
    return 0  # not reached


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``usfad bench serve``."""
    from service.bench import main

    return main(args)
