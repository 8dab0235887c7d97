"""``usfad bench serve``: the running service vs ONNX Runtime called directly, in one run.

Drives the HTTP API from separate client processes with ``concurrency`` clients each sending
``rows_per_request`` rows per request, for 1…64 concurrent clients, and reports throughput,
p50/p95/p99 latency, the mean batch size the workers formed (from their Prometheus metrics)
and the CPU time each process spent per request. Next to each line, the same bundle scored
directly with ONNX Runtime in this process, both at the service's mean batch size (like for
like) and at its fastest batch size (peak), with the ratios. With ``--spawn`` it starts the
service itself (embedded, or API + Redis workers) and reports the processes' resident memory.
Imports only argparse at module level (the ``usfad`` CLI must start fast).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``usfad bench serve``."""
    parser.add_argument("--model-dir", required=True, type=Path, help="bundle directory of the served models")
    parser.add_argument("--model", required=True, help="model to drive (tabular or image)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="API base URL (ignored with --spawn)")
    parser.add_argument(
        "--spawn",
        choices=("none", "embedded", "redis"),
        default="none",
        help="start the service: embedded (one process) or API + --workers Redis workers",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for --spawn redis")
    parser.add_argument("--workers", type=int, default=1, help="workers for --spawn redis")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API processes for --spawn redis (uvicorn workers)"
    )
    parser.add_argument("--port", type=int, default=8077, help="API port for --spawn")
    parser.add_argument(
        "--metrics-url", action="append", default=[], help="worker /metrics URLs (batch sizes)"
    )
    parser.add_argument("--pid", type=int, action="append", default=[], help="PIDs whose RSS to report")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client counts")
    parser.add_argument("--rows-per-request", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per concurrency level")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="drive the levels this many times in turn (8, 32, 64, 8, 32, 64 ...) and summarise each "
        "level's throughput as median and range: whether it falls as concurrency rises, beyond the "
        "round-to-round spread",
    )
    parser.add_argument("--max-batch", type=int, default=64, help="workers' max batch (with --spawn)")
    parser.add_argument("--max-delay-ms", type=float, default=2.0, help="workers' max delay (with --spawn)")
    parser.add_argument(
        "--ort-threads", type=int, default=1, help="ONNX Runtime threads (service and direct)"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=4,
        help="processes the clients are spread over",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="image models: the file to send (e.g. a Magnetic Tile JPEG, resized by the service); "
        "default: a generated PNG at the model's own size",
    )
    parser.add_argument(
        "--upload", choices=("raw", "multipart"), default="raw", help="image models: raw body or multipart"
    )
    parser.add_argument(
        "--map", choices=("none", "png", "array"), default="png", help="image models: anomaly map format"
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also start and drive the bare floor app (benchmarks/floor_app.py) at each level",
    )
    parser.add_argument("--floor-port", type=int, default=8099, help="port of the floor app")


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (``VmRSS`` from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _batch_totals(urls: list[str], model: str) -> tuple[float, float]:
    """Sum and count of ``usfad_batch_size`` for ``model`` over every metrics URL."""
    import httpx

    total = count = 0.0
    for url in urls:
        for line in httpx.get(url, timeout=5).text.splitlines():
            if line.startswith("usfad_batch_size_sum") and f'model="{model}"' in line:
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("usfad_batch_size_count") and f'model="{model}"' in line:
                count += float(line.rsplit(" ", 1)[1])
    return total, count


@dataclass(frozen=True)
class RequestSpec:
    """One pre-built request: path with query, content type, body, and the rows/images it holds."""

    path: str
    content_type: str
    body: bytes
    items: int


def _drive_processes(
    executor: Any, processes: int, url: str, spec: RequestSpec, concurrency: int, duration: float
) -> tuple[list[float], int, float]:
    """Split ``concurrency`` clients over up to ``processes`` client processes (``_drive`` in each).

    One Python process with 64 client threads spends its time fighting over the GIL and would
    measure itself; several processes do not. Returns (latencies, errors, client CPU seconds).
    """
    count = max(1, min(processes, concurrency))
    shares = [concurrency // count + (1 if index < concurrency % count else 0) for index in range(count)]
    futures = [executor.submit(_drive, url, spec, share, duration) for share in shares]
    latencies: list[float] = []
    errors = 0
    cpu = 0.0
    for future in futures:
        part, failed, seconds = future.result()
        latencies += part
        errors += failed
        cpu += seconds
    return latencies, errors, cpu


def _drive(url: str, spec: RequestSpec, concurrency: int, duration: float) -> tuple[list[float], int, float]:
    """``concurrency`` threads, each posting ``spec`` over its own keep-alive connection.

    Each client (a thread) writes one pre-built HTTP/1.1 request and reads the status line, the headers and
    ``Content-Length`` bytes of body from a buffered socket: the cheapest client the standard
    library allows (``http.client`` costs several times more CPU per request), because the
    client shares the machine with the service it measures. Only status 200 counts as served.
    """
    import socket
    import threading

    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST {spec.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {spec.content_type}\r\n"
        f"Content-Length: {len(spec.body)}\r\n\r\n"
    ).encode()
    request = head + spec.body
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def one_client() -> None:
        mine, failed = [], 0
        with socket.create_connection((host, int(port)), timeout=60) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = connection.makefile("rb")
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                connection.sendall(request)
                status = reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                reader.read(length)
                if status[9:12] == b"200":
                    mine.append(time.perf_counter() - started)
                else:
                    failed += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    cpu_started = time.process_time()
    threads = [threading.Thread(target=one_client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.process_time() - cpu_started


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (``/proc/<pid>/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_all(roles: dict[str, int]) -> dict[str, float]:
    seconds = {}
    for role, pid in roles.items():
        try:
            seconds[role] = cpu_seconds(pid)
        except OSError:
            seconds[role] = float("nan")
    return seconds


def _direct_rows_per_s(bundle: Any, spec: RequestSpec, batch: int, seconds: float = 1.0) -> float:
    """Rows (or images) per second of ONNX Runtime called directly on batches of ``batch``."""
    return direct_rate_and_cpu(bundle, spec, batch, seconds)[0]


def direct_rate_and_cpu(
    bundle: Any, spec: RequestSpec, batch: int, seconds: float = 1.0
) -> tuple[float, float]:
    """(Rows or images per second, CPU ms per item) of ONNX Runtime called directly, ``batch`` a call.

    Tabular: ``session.run`` on ``batch`` rows. Images: Pillow decode and resize of ``batch``
    copies of the request's image, then ``session.run`` on the stacked batch, the work the
    service cannot avoid.
    """
    import numpy as np

    if bundle.manifest.kind == "tabular":
        rows = np.asarray(json.loads(spec.body)["rows"], dtype=np.float32)
        inputs = np.ascontiguousarray(np.resize(rows, (batch, rows.shape[1])))

        def work() -> None:
            bundle.run(inputs)

    else:
        from service.images import decode_image, resize_for_model

        data = _image_bytes(spec)
        height, width = bundle.manifest.image_size

        def work() -> None:
            pixels = [decode_image(data, bundle.manifest.color_mode) for _ in range(batch)]
            bundle.run(np.stack([resize_for_model(image, height, width) for image in pixels]))

    return _timed(work, batch, seconds)


def _timed(work: Any, batch: int, seconds: float) -> tuple[float, float]:
    """Run ``work`` (``batch`` items a call) for ``seconds``: (items per second, CPU ms per item).

    The CPU time per item is what the work costs whatever share of the machine it gets, so it
    compares across processes on a loaded machine where throughput does not.
    """
    work()
    done = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        work()
        done += batch
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return done / elapsed, cpu * 1000 / max(done, 1)


def _peak_direct(bundle: Any, spec: RequestSpec, max_batch: int) -> tuple[int, float]:
    """(batch size, rows/s) of the fastest direct ONNX Runtime run over batch sizes up to ``max_batch``."""
    sizes = sorted({1, 8, 64, 256, 1024, max_batch} & set(range(1, max(max_batch, 1) + 1)))
    if bundle.manifest.kind == "image":
        sizes = [size for size in sizes if size <= 64]
    speeds = {size: _direct_rows_per_s(bundle, spec, size, seconds=0.5) for size in sizes}
    best = max(speeds, key=speeds.__getitem__)
    return best, speeds[best]


def _image_bytes(spec: RequestSpec) -> bytes:
    """The image inside a request (raw body, or the one file of a multipart body)."""
    if not spec.content_type.startswith("multipart/"):
        return spec.body
    boundary = spec.content_type.split("boundary=", 1)[1].encode()
    part = spec.body.split(b"--" + boundary)[1]
    return part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")


def build_request(args: argparse.Namespace, manifest: Any) -> RequestSpec:
    """The request the clients send, for a tabular or an image model."""
    import numpy as np

    count = max(1, args.rows_per_request)
    if manifest.kind == "tabular":
        rows = np.random.default_rng(0).normal(size=(count, manifest.features)).astype(np.float32)
        body = json.dumps({"model": args.model, "rows": rows.tolist()}).encode()
        return RequestSpec("/score/tabular", "application/json", body, count)
    if args.image is not None:
        data = args.image.read_bytes()
        kind = "jpeg" if args.image.suffix.lower() in (".jpg", ".jpeg") else args.image.suffix.lower()[1:]
    else:
        data, kind = _generated_png(manifest), "png"
    path = f"/score/image?model={args.model}&map={args.map}"
    if args.upload == "raw":
        if count != 1:
            raise SystemExit("--upload raw sends one image per request; use --upload multipart")
        return RequestSpec(path, f"image/{kind}", data, 1)
    boundary = "usfadbenchboundary"
    part = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"part.{kind}\"\r\n"
        f"Content-Type: image/{kind}\r\n\r\n"
    ).encode()
    body = b"".join([part + data + b"\r\n"] * count) + f"--{boundary}--\r\n".encode()
    return RequestSpec(path, f"multipart/form-data; boundary={boundary}", body, count)


def _generated_png(manifest: Any) -> bytes:
    """A smooth noisy PNG at the model's own size (nothing to resize)."""
    import io

    import numpy as np
    from PIL import Image

    height, width = manifest.image_size
    rng = np.random.default_rng(0)
    base = np.add.outer(np.linspace(40, 200, height), np.linspace(0, 40, width))
    pixels = np.clip(base[:, :, None] + rng.normal(0, 8, (height, width, manifest.channels)), 0, 255)
    buffer = io.BytesIO()
    image = pixels.astype(np.uint8)
    Image.fromarray(image[:, :, 0] if manifest.channels == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _spawn_floor(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """Start ``benchmarks/floor_app.py`` (one uvicorn process) on ``--floor-port``."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "floor_app.py"
    if not script.is_file():
        raise SystemExit(f"{script} not found (the floor app lives in the repository); use --no-floor")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.ort_threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(script.parents[1]), env.get("PYTHONPATH")]))
    command = [sys.executable, str(script), "--model-dir", str(args.model_dir)]
    command += ["--port", str(args.floor_port), "--ort-threads", str(args.ort_threads)]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{args.floor_port}"
    _wait_ready(url)
    return process, url


def _wait_ready(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the service at {url} did not become ready within {timeout_s} s")


def _spawn(
    args: argparse.Namespace, source: Path | None = None, tag: str = "", path: tuple[str, ...] = ()
) -> tuple[list[subprocess.Popen], str, list[str], dict[str, int]]:
    """Start the service (embedded, or API + Redis workers) on ``args.port``.

    ``source``: run the ``service`` package of another checkout, with ``path`` after it on
    ``PYTHONPATH`` (``benchmarks/serve_before_after.py`` drives an older version side by side);
    ``tag`` keeps its Redis keys apart.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.ort_threads),
        "USFAD_MODEL_DIR": str(args.model_dir),
        "USFAD_MAX_BATCH": str(args.max_batch),
        "USFAD_MAX_DELAY_MS": str(args.max_delay_ms),
        "USFAD_ORT_THREADS": str(args.ort_threads),
        "USFAD_MAX_QUEUE_DEPTH": "100000",
        "USFAD_API_WORKERS": str(args.api_workers if args.spawn == "redis" else 1),
    }
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), *path])
    cwd = source
    url = f"http://127.0.0.1:{args.port}"
    processes: list[subprocess.Popen] = []
    roles: dict[str, int] = {}
    metrics = [f"{url}/metrics"]
    if args.spawn == "redis":
        prefix = f"usfad-bench-{os.getpid()}{tag}"
        env.update({"USFAD_REDIS_URL": args.redis_url, "USFAD_QUEUE_PREFIX": prefix})
        metrics = []
        for index in range(args.workers):
            port = args.port + 1 + index
            worker_env = {**env, "USFAD_METRICS_PORT": str(port), "USFAD_WORKER_ID": f"bench-worker-{index}"}
            command = [sys.executable, "-m", "service", "worker"]
            processes.append(subprocess.Popen(command, env=worker_env, cwd=cwd))
            roles[f"worker-{index}"] = processes[-1].pid
            metrics.append(f"http://127.0.0.1:{port}/metrics")
    command = [sys.executable, "-m", "service", "serve", "--port", str(args.port)]
    api = subprocess.Popen(command, env=env, cwd=cwd)
    processes.append(api)
    roles["api" if args.spawn == "redis" else "embedded"] = api.pid
    _wait_ready(url)
    for index, child in enumerate(_children(api.pid) if args.api_workers > 1 else []):
        roles[f"api-{index}"] = child  # uvicorn's worker processes (the parent only supervises)
    return processes, url, metrics, roles


def _children(pid: int) -> list[int]:
    """Server child processes of ``pid`` (``/proc/<pid>/task/*/children``)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(item) for item in (task / "children").read_text().split()]
    # multiprocessing's resource tracker is a child too; keep the server processes only
    return [pid for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _delete_keys(url: str, prefix: str) -> None:
    """Remove the benchmark's Redis keys."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def _level(
    executor: Any, args: argparse.Namespace, url: str, spec: RequestSpec, concurrency: int
) -> dict[str, Any]:
    """Drive ``url`` at ``concurrency`` for ``--duration``: throughput and latency percentiles."""
    import numpy as np

    started = time.perf_counter()
    latencies, errors, client_cpu = _drive_processes(
        executor, args.client_processes, url, spec, concurrency, args.duration
    )
    elapsed = time.perf_counter() - started
    quantiles = [
        float(np.percentile(latencies, q)) * 1000 if latencies else float("nan")
        for q in (50, 95, 99)
    ]
    return {
        "requests": len(latencies),
        "errors": errors,
        "rows_per_s": len(latencies) * spec.items / elapsed,
        "p50_ms": quantiles[0],
        "p95_ms": quantiles[1],
        "p99_ms": quantiles[2],
        "client_cpu_s": client_cpu,
    }


def shut_down(executor: Any, processes: list[subprocess.Popen]) -> None:
    """Stop the client pool, then the spawned servers: SIGTERM, SIGKILL after 10 s (each by its id)."""
    if executor is not None:
        executor.shutdown()
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print the table."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from service.bundles.bundle import load_bundle

    bundle = load_bundle(args.model_dir / args.model, device="cpu", threads=args.ort_threads)
    spec = build_request(args, bundle.manifest)
    processes: list[subprocess.Popen] = []
    roles = {f"pid-{pid}": pid for pid in args.pid}
    url, metrics_urls = args.url, list(args.metrics_url)
    floor_url = None
    executor: ProcessPoolExecutor | None = None
    try:
        if args.spawn != "none":
            processes, url, metrics_urls, roles = _spawn(args)
        elif not metrics_urls:
            metrics_urls = [f"{url}/metrics"]
        if args.floor:
            floor, floor_url = _spawn_floor(args)
            processes.append(floor)
        executor = ProcessPoolExecutor(args.client_processes, mp_context=multiprocessing.get_context("spawn"))
        for target in filter(None, (url, floor_url)):  # warm-up
            _drive_processes(executor, args.client_processes, target, spec, 4 * args.client_processes, 1.0)
        peak_batch, peak = _peak_direct(bundle, spec, args.max_batch)
        results = []
        round_levels = [int(item) for item in args.concurrency.split(",")]
        for index, concurrency in enumerate(round_levels * max(1, args.rounds)):
            before = _batch_totals(metrics_urls, args.model)
            cpu_before = _cpu_all(roles)
            level = _level(executor, args, url, spec, concurrency)
            cpu_after = {**_cpu_all(roles), "client": level.pop("client_cpu_s")}
            cpu_before["client"] = 0.0
            after = _batch_totals(metrics_urls, args.model)
            batches = after[1] - before[1]
            mean_batch = (after[0] - before[0]) / batches if batches else float("nan")
            floor_level = _level(executor, args, floor_url, spec, concurrency) if floor_url else None
            batch = max(1, round(mean_batch)) if mean_batch == mean_batch else spec.items
            direct = _direct_rows_per_s(bundle, spec, batch)
            requests = max(1, level["requests"] + level["errors"])
            results.append(
                {
                    "concurrency": concurrency,
                    "round": index // len(round_levels),
                    **level,
                    "mean_batch": mean_batch,
                    "direct_rows_per_s": direct,
                    "ratio": level["rows_per_s"] / direct,
                    "peak_direct_rows_per_s": peak,
                    "peak_direct_batch": peak_batch,
                    "peak_ratio": level["rows_per_s"] / peak,
                    "floor": floor_level,
                    "floor_ratio": level["rows_per_s"] / floor_level["rows_per_s"]
                    if floor_level and floor_level["rows_per_s"]
                    else None,
                    "cpu_ms_per_request": {
                        role: (cpu_after[role] - cpu_before[role]) * 1000 / requests for role in cpu_after
                    },
                }
            )
        memory = {role: rss_mb(pid) for role, pid in roles.items()}
    finally:
        shut_down(executor, processes)
        if args.spawn == "redis":
            _delete_keys(args.redis_url, f"usfad-bench-{os.getpid()}")
    _print_table(args, spec, bundle.manifest.kind, results, memory)
    if args.rounds > 1:
        print(throughput_by_level(results, "rows" if bundle.manifest.kind == "tabular" else "img"))
    if args.json_out:
        args.json_out.write_text(json.dumps({"results": results, "rss_mb": memory}, indent=2))
    return 0


def throughput_by_level(results: list[dict[str, Any]], unit: str) -> str:
    """Each level's service throughput over the rounds (median, min–max), and the falls.

    A level *falls* when its median is below the lowest throughput any round measured at the
    level before it: a drop larger than the round-to-round spread, not one run's noise.
    """
    by_level: dict[int, list[float]] = {}
    for result in results:
        by_level.setdefault(result["concurrency"], []).append(result["rows_per_s"])
    cells, falls, previous = [], [], None
    for concurrency, rates in by_level.items():
        median = statistics.median(rates)
        cells.append(f"{concurrency}: {median:.0f} ({min(rates):.0f}–{max(rates):.0f})")
        if previous is not None and median < min(previous[1]):
            change = median / statistics.median(previous[1]) - 1
            falls.append(f"{previous[0]} → {concurrency} ({change:+.1%})")
        previous = (concurrency, rates)
    rounds = max(len(rates) for rates in by_level.values())
    verdict = "falls beyond the spread: " + (", ".join(falls) if falls else "none")
    summary = f"service {unit}/s by concurrency over {rounds} rounds, median (min–max): " + "; ".join(cells)
    return f"\n{summary}\n{verdict}"


def _print_table(
    args: argparse.Namespace,
    spec: RequestSpec,
    kind: str,
    results: list[dict[str, Any]],
    memory: dict[str, float],
) -> None:
    unit = "rows" if kind == "tabular" else "img"
    what = f"{spec.items} row(s)/request" if kind == "tabular" else (
        f"{spec.items} image(s)/request ({args.upload}, {spec.content_type.split(';')[0]}, "
        f"{len(spec.body)} bytes), map={args.map}"
    )
    print(
        f"\nmodel {args.model}, {what}, {args.duration:g} s per level, "
        f"spawn={args.spawn}, workers={args.workers if args.spawn == 'redis' else 'embedded'}, "
        f"API workers={args.api_workers}, max batch={args.max_batch}, "
        f"max delay={args.max_delay_ms:g} ms, ORT threads={args.ort_threads}, "
        f"client processes={args.client_processes}, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"| concurrency | requests | errors | service {unit}/s | p50 ms | p95 ms | p99 ms | mean batch "
        f"| floor {unit}/s | floor p50 ms | service / floor | direct ORT {unit}/s (same batch) "
        "| service / direct (same batch) | service / peak direct | CPU ms per request |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        cpu = ", ".join(f"{role} {ms:.2f}" for role, ms in r["cpu_ms_per_request"].items())
        floor = r["floor"]
        floor_cells = (
            f"{floor['rows_per_s']:.0f} | {floor['p50_ms']:.2f} | {r['floor_ratio']:.1%}"
            if floor and r["floor_ratio"] is not None
            else "- | - | -"
        )
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rows_per_s']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} "
            f"| {floor_cells} | {r['direct_rows_per_s']:.0f} | {r['ratio']:.1%} | {r['peak_ratio']:.1%} "
            f"| {cpu} |"
        )
    if results:
        print(
            f"\npeak direct ONNX Runtime: {results[0]['peak_direct_rows_per_s']:.0f} {unit}/s "
            f"at batch {results[0]['peak_direct_batch']}"
        )
    if memory:
        print("resident memory: " + ", ".join(f"{role} {mb:.0f} MB" for role, mb in memory.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m service.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
