"""Fixtures for the web app's tests: an app on the ASGI test client, small images as bytes, job polling."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs the 'app' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("httpx", reason="the ASGI test client needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from xvit.app import Settings, create_app  # noqa: E402

MODEL = "xvit-random:nano"
SLOW = {"slow_app_method": {}}


@pytest.fixture
def slow_method():
    """Registers ``slow_app_method``: forward passes until stopped (the app's cancellation and time limit)."""
    from xvit.methods import METHODS
    from xvit.methods.base import Method

    class Slow(Method):
        """Runs forward passes for ever."""

        name = "slow_app_method"
        class_specific = False
        resolution = "tokens"

        def attribute(self, ctx, x, targets):
            while True:
                ctx.adapter.forward(x)

    with METHODS.registered("slow_app_method", Slow, citation="test", passes="many F"):
        yield Slow


def png(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise_image(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_client(**overrides) -> TestClient:
    settings = Settings(**{"allowed_hosts": ("testserver",), "workers": 1, **overrides})
    return TestClient(create_app(settings))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client() as c:
        yield c


@contextlib.contextmanager
def running_server(**overrides) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(**{"port": port, "workers": 2, **overrides})
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            raise AssertionError("the app's server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


def upload(client: TestClient, image: Image.Image | bytes, name: str = "x.png") -> dict:
    data = image if isinstance(image, bytes) else png(image)
    r = client.post("/api/images", files={"file": (name, data, "image/png")})
    assert r.status_code == 200, r.text
    return r.json()["images"][0]


def wait(client: TestClient, job_id: str, timeout: float = 60.0) -> dict:
    """Poll a job until it finishes; its final state."""
    end = time.time() + timeout
    while time.time() < end:
        state = client.get(f"/api/jobs/{job_id}").json()
        if state["status"] in ("done", "error", "cancelled", "timed_out"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
