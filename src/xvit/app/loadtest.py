"""A load test of the web app (``xvit serve --bench``): the server in its own process on a free loopback port,
``clients`` concurrent clients for ``seconds``, latency per endpoint, errors, the server's resident memory before,
at its peak and after, and faults: clients that disconnect mid-job, malformed multipart, a slow upload, an
oversized upload."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
from PIL import Image

from xvit.app.settings import Settings

MODEL = "shapes-vit-tiny"
METHODS = {"gradcam": {}, "attnlrp": {}}
SERVER = ("import json, sys; from pathlib import Path; from xvit.app import Settings, serve; "
          "s = json.loads(sys.argv[1]); s['allow_dirs'] = tuple(Path(p) for p in s['allow_dirs']); "
          "serve(Settings(**s))")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _png(seed: int, size: int = 96) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class _Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.lock = threading.Lock()

    def add(self, name: str, seconds: float, status: int) -> None:
        with self.lock:
            self.latency[name].append(seconds)
            self.status[name][status] += 1


def _client_loop(base: str, deadline: float, seed: int, rec: _Recorder, image_id: str) -> None:
    import httpx

    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=120) as http:
        def timed(name: str, method: str, url: str, **kw: Any) -> httpx.Response:
            start = time.perf_counter()
            r = http.request(method, url, **kw)
            rec.add(name, time.perf_counter() - start, r.status_code)
            return r

        while time.time() < deadline:
            action = rng.choice(["listing", "upload", "predict", "explain", "explain"])
            if action == "listing":
                timed("GET /api/methods", "GET", "/api/methods")
            elif action == "upload":
                timed("POST /api/images", "POST", "/api/images",
                      files={"file": ("x.png", _png(rng.randrange(10**6)), "image/png")})
            elif action == "predict":
                timed("POST /api/predict", "POST", "/api/predict", json={"model": MODEL, "image": image_id})
            else:
                start = time.perf_counter()
                r = timed("POST /api/jobs/explain", "POST", "/api/jobs/explain",
                          json={"model": MODEL, "images": [image_id], "methods": METHODS})
                if r.status_code == 429:
                    time.sleep(min(2.0, float(r.headers.get("Retry-After", "1"))))
                    continue
                job = r.json()["id"]
                while True:
                    state = timed("GET /api/jobs/{id}", "GET", f"/api/jobs/{job}").json()
                    if state["status"] not in ("queued", "running"):
                        break
                    time.sleep(0.1)
                rec.add("explain job (submit to done)", time.perf_counter() - start, 200 if state["status"] == "done"
                        else 500)
                if state["status"] == "done":
                    timed("GET heat PNG", "GET", state["result"]["images"][0]["maps"]["gradcam"]["heat"])


def _slow_body(data: bytes, boundary: str, pause: float, chunks: int) -> Iterator[bytes]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    step = -(-len(body) // chunks)
    for i in range(0, len(body), step):
        time.sleep(pause)
        yield body[i:i + step]


def _faults(base: str, image_id: str, limit: int) -> dict[str, dict[str, Any]]:
    """Each fault with the status it should get and the one it got."""
    import httpx

    out: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=base, timeout=60) as http:
        # Clients that disconnect mid-job: open the event stream, read one event, drop the connection.
        got = []
        for _ in range(3):
            r = http.post("/api/jobs/explain", json={"model": MODEL, "images": [image_id], "methods": METHODS})
            if r.status_code == 202:
                with http.stream("GET", f"/api/jobs/{r.json()['id']}/events") as stream:
                    next(stream.iter_lines())
                got.append(202)
            else:
                got.append(r.status_code)
        out["disconnect mid-job (x3)"] = {"expected": "202 or 429", "got": got}
        r = http.post("/api/images", content=b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n",
                      headers={"Content-Type": "multipart/form-data; boundary=b"})
        out["malformed multipart"] = {"expected": 400, "got": r.status_code}
        r = http.post("/api/images", content=b"\x00" * (limit + 1),
                      headers={"Content-Type": "multipart/form-data; boundary=b"})
        out["oversized upload"] = {"expected": 413, "got": r.status_code}
        start = time.perf_counter()
        r = http.post("/api/images", content=_slow_body(_png(7), "slowb", 0.25, 12),
                      headers={"Content-Type": "multipart/form-data; boundary=slowb"})
        out["slow upload (12 chunks, 3 s)"] = {"expected": 200, "got": r.status_code,
                                               "seconds": round(time.perf_counter() - start, 2)}
    return out


def load_test(settings: Settings, clients: int = 8, seconds: float = 30.0) -> dict[str, Any]:
    """Run the load test; returns the figures (see :func:`format_report`)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {**asdict(settings), "host": "127.0.0.1", "port": port,
              "allow_dirs": [str(p) for p in settings.allow_dirs]}
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(config)])
    try:
        deadline = time.time() + 120
        while True:
            try:
                httpx.get(f"{base}/api/health", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the app's server did not start") from None
                time.sleep(0.2)
        rss_start = _rss(server.pid)
        with httpx.Client(base_url=base, timeout=120) as http:  # warm-up: model loaded, one explain job
            image_id = http.post("/api/images/sample", json={"sample": "single_00"}).json()["images"][0]["id"]
            job = http.post("/api/jobs/explain", json={"model": MODEL, "images": [image_id], "methods": METHODS})
            while http.get(f"/api/jobs/{job.json()['id']}").json()["status"] in ("queued", "running"):
                time.sleep(0.1)
        rss_before = _rss(server.pid)
        peak = [rss_before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], _rss(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rec = _Recorder()
        end = time.time() + seconds
        threads = [threading.Thread(target=_client_loop, args=(base, end, i, rec, image_id)) for i in range(clients)]
        for t in threads:
            t.start()
        faults = _faults(base, image_id, settings.max_upload_bytes)
        for t in threads:
            t.join()
        with httpx.Client(base_url=base, timeout=30) as http:
            while http.get("/api/health").json()["jobs_active"]:
                time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        sampler.join()
        rss_after = _rss(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    endpoints = {}
    for name, values in sorted(rec.latency.items()):
        statuses = dict(rec.status[name])
        errors = sum(n for code, n in statuses.items() if code >= 400 and code != 429)
        endpoints[name] = {"requests": len(values), "p50_ms": 1000 * _percentile(values, 50),
                           "p95_ms": 1000 * _percentile(values, 95), "errors": errors,
                           "rejected_429": statuses.get(429, 0)}
    return {"clients": clients, "seconds": seconds, "workers": settings.workers, "max_queue": settings.max_queue,
            "model": MODEL, "methods": list(METHODS), "endpoints": endpoints, "faults": faults,
            "rss_mb": {"start": rss_start / 2**20, "before": rss_before / 2**20, "peak": peak[0] / 2**20,
                       "after": rss_after / 2**20}}


def format_report(report: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    lines = [f"{report['clients']} clients for {report['seconds']:g} s, {report['workers']} workers, queue "
             f"{report['max_queue']}, model {report['model']}, explain = {' + '.join(report['methods'])}", "",
             "| endpoint | requests | p50 (ms) | p95 (ms) | errors | 429 |", "|---|---|---|---|---|---|"]
    for name, e in report["endpoints"].items():
        lines.append(f"| {name} | {e['requests']} | {e['p50_ms']:.0f} | {e['p95_ms']:.0f} | {e['errors']} | "
                     f"{e['rejected_429']} |")
    lines += ["", "| fault | expected | got |", "|---|---|---|"]
    for name, f in report["faults"].items():
        extra = f" in {f['seconds']} s" if "seconds" in f else ""
        lines.append(f"| {name} | {f['expected']} | {f['got']}{extra} |")
    rss = report["rss_mb"]
    lines += ["", f"Server resident memory (MB): {rss['start']:.0f} at start, {rss['before']:.0f} after warm-up "
                  f"(model loaded, one job), {rss['peak']:.0f} at peak, {rss['after']:.0f} after the load "
                  f"({rss['after'] - rss['before']:+.0f} MB)."]
    return "\n".join(lines)
