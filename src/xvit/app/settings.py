"""The server's settings: limits, pool sizes and the checkpoint folders the person who started it allowed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Everything ``xvit serve`` can be told on its command line; the defaults suit a laptop.

    Attributes:
        host, port: where to listen (loopback by default; the app has no authentication).
        allow_dirs: folders whose checkpoint sub-directories (``config.json`` + weights) may be loaded. The
            browser picks them by an opaque id from ``/api/models``; it never sends a path.
        device: torch device for the models.
        workers: jobs that run at once (threads; jobs on one model are serialised by its lock).
        max_queue: jobs waiting or running before new ones get 429.
        job_timeout_s: a job still running after this many seconds is stopped at its next forward pass.
        max_upload_bytes: largest accepted request body of an upload (all files together).
        body_timeout_s: a request body that stops arriving for this long is answered 408.
        max_pixels: largest decoded image (width x height) accepted.
        max_files: images per upload request.
        max_models: models kept loaded (least recently used ones are dropped).
        max_store_bytes: encoded bytes of uploaded images kept (least recently used ones are dropped).
        max_jobs_kept: finished jobs whose results are kept for display and download.
        max_images_per_job, max_methods_per_job: the size of one explain request.
        allowed_hosts: accepted ``Host`` headers (guards against DNS rebinding); None: loopback names and ``host``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    allow_dirs: tuple[Path, ...] = ()
    device: str = "cpu"
    workers: int = 2
    max_queue: int = 16
    job_timeout_s: float = 300.0
    max_upload_bytes: int = 20 * 2**20
    body_timeout_s: float = 30.0
    max_pixels: int = 40_000_000
    max_files: int = 16
    max_models: int = 3
    max_store_bytes: int = 200 * 2**20
    max_jobs_kept: int = 32
    max_images_per_job: int = 8
    max_methods_per_job: int = 8
    allowed_hosts: tuple[str, ...] | None = None

    def hosts(self) -> list[str]:
        """The accepted ``Host`` header names."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        return sorted({"127.0.0.1", "localhost", "::1", "[::1]", self.host})
