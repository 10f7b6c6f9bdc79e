"""The FastAPI application of ``xvit serve``: the page (plain static files), the registries, uploads, and jobs
with progress streamed as server-sent events.

Hardening: request bodies are capped (413) and must keep arriving (408); images are decoded to be accepted,
their pixels capped (413); the job queue is bounded (429 with ``Retry-After``); every error is JSON
``{"error": message}``; the ``Host`` header must name this server (no DNS rebinding); no CORS headers; a strict
content security policy; nothing is served but the app's own static files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xvit.app.catalog import ModelCache, ModelEntry, model_entries, sample_entries
from xvit.app.images import ImageLoadError, ImageStore, ImageTooLargeError, StoredImage, thumbnail_png
from xvit.app.jobs import TERMINAL, Job, JobPool, QueueFullError
from xvit.app.schema import (
    InvalidParameterError,
    analysis_listing,
    checked_analysis_params,
    checked_method_params,
    colormaps,
    method_listing,
)
from xvit.app.settings import Settings
from xvit.app.work import ExplainOutput, analyse, explain, png_bytes, predict
from xvit.version import __version__

STATIC = Path(__file__).resolve().parent / "static"
JSON_BODY_LIMIT = 256 * 1024
ID = r"^[0-9a-f]{16}$"
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
log = logging.getLogger("xvit.app")


class ApiError(HTTPException):
    """An error answered as ``{"error": message}`` with ``status`` (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class GuardMiddleware:
    """Checks the ``Host`` header, caps the request body (``limit`` for uploads, :data:`JSON_BODY_LIMIT`
    otherwise), answers 408 when a body stalls, and adds the security headers to every response."""

    def __init__(self, app: ASGIApp, hosts: list[str], upload_limit: int, body_timeout_s: float) -> None:
        self.app, self.hosts, self.upload_limit = app, {h.lower() for h in hosts}, upload_limit
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() not in self.hosts:
            await _error(400, f"unknown Host header {host!r}; open the address 'xvit serve' printed")(
                scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] == "/api/images" else JSON_BODY_LIMIT
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _error(413, _too_large(limit))(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(408, f"the request body stopped arriving for {self.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(413, _too_large(limit))
            return message

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                         (b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                         (b"cross-origin-resource-policy", b"same-origin")]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, limited_receive, secured_send)


def _too_large(limit: int) -> str:
    return f"the request is larger than this server accepts ({limit / 2**20:.3g} MB); send fewer or smaller files"


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=200)
    images: list[str] = Field(min_length=1, max_length=64)
    methods: dict[str, dict[str, Any]] = Field(min_length=1)
    target: int | None = Field(default=None, ge=0)


class AnalysisRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=200)
    images: list[str] = Field(min_length=1, max_length=64)
    analysis: str = Field(max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    target: int | None = Field(default=None, ge=0)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=200)
    image: str = Field(max_length=64)


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample: str = Field(max_length=200)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The web app for ``settings`` (defaults: :class:`Settings`)."""
    settings = settings or Settings()
    pool = JobPool(settings.workers, settings.max_queue, settings.job_timeout_s, settings.max_jobs_kept)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    app = FastAPI(title="xvit", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.pool = pool
    app.state.models = models = ModelCache(settings.max_models, settings.device)
    app.state.images = store = ImageStore(settings.max_store_bytes, settings.max_pixels)
    samples = sample_entries()
    sample_thumbnails: dict[str, bytes] = {}
    app.add_middleware(GuardMiddleware, hosts=settings.hosts(), upload_limit=settings.max_upload_bytes,
                       body_timeout_s=settings.body_timeout_s)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request body")

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, f"internal error ({type(e).__name__}); the server log has the details")

    def model_entry(model_id: str) -> ModelEntry:
        entries = model_entries(settings.allow_dirs)
        if model_id not in entries:
            raise ApiError(400, f"unknown model {model_id!r}; GET /api/models lists the models this server offers")
        return entries[model_id]

    def stored(image_ids: list[str]) -> list[StoredImage]:
        try:
            return [store.get(i) for i in image_ids]
        except KeyError as e:
            raise ApiError(404, e.args[0]) from None

    def submit(kind: str, body: Callable[[Job], Any]) -> tuple[Job, Any]:
        try:
            return pool.submit(kind, body)
        except QueueFullError as e:
            raise ApiError(429, str(e), {"Retry-After": str(e.retry_after)}) from None

    def job_of(job_id: str) -> Job:
        try:
            return pool.get(job_id)
        except KeyError as e:
            raise ApiError(404, e.args[0]) from None

    def finished(job_id: str, kind: str | None = None) -> Any:
        job = job_of(job_id)
        if job.status != "done":
            raise ApiError(409, f"job {job_id} is {job.status}, it has no result")
        if kind is not None and job.kind != kind:
            raise ApiError(404, f"job {job_id} is an {job.kind} job")
        return job.output

    # ----------------------------------------------------------------------------------------- page, listings

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "jobs_active": pool.active(),
                "models_loaded": models.loaded(), "images_stored": len(store)}

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        s = settings
        return {"version": __version__, "device": s.device, "workers": s.workers, "max_queue": s.max_queue,
                "job_timeout_s": s.job_timeout_s, "max_upload_bytes": s.max_upload_bytes,
                "max_pixels": s.max_pixels, "max_files": s.max_files, "max_images_per_job": s.max_images_per_job,
                "max_methods_per_job": s.max_methods_per_job, "colormaps": colormaps()}

    @app.get("/api/models")
    async def list_models() -> dict[str, Any]:
        entries = model_entries(settings.allow_dirs)
        return {"models": [e.to_dict() for e in entries.values()], "loaded": models.loaded()}

    @app.get("/api/methods")
    async def list_methods() -> dict[str, Any]:
        return {"methods": method_listing()}

    @app.get("/api/analyses")
    async def list_analyses() -> dict[str, Any]:
        return {"analyses": analysis_listing()}

    @app.get("/api/samples")
    async def list_samples() -> dict[str, Any]:
        return {"samples": [s.to_dict() for s in samples.values()]}

    # ------------------------------------------------------------------------------------------------ images

    @app.post("/api/images")
    async def upload(request: Request) -> dict[str, Any]:
        try:
            form = await request.form(max_files=settings.max_files, max_fields=settings.max_files)
        except HTTPException:
            raise
        except Exception as e:  # malformed multipart arrives as several exception types
            raise ApiError(400, f"could not read the upload as multipart/form-data ({_first_line(e)})") from None
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "no files in the upload; send images as multipart/form-data file fields")
        accepted = []
        try:
            for i, f in enumerate(files):
                data = await f.read()
                try:
                    accepted.append(await asyncio.to_thread(store.add, data, f.filename or f"image_{i:03d}"))
                except ImageTooLargeError as e:
                    raise ApiError(413, str(e)) from None
                except ImageLoadError as e:
                    raise ApiError(400, str(e)) from None
        finally:
            await form.close()
        return {"images": [im.to_dict() for im in accepted]}

    @app.post("/api/images/sample")
    async def use_sample(req: SampleRequest) -> dict[str, Any]:
        if req.sample not in samples:
            raise ApiError(404, f"unknown sample {req.sample!r}; GET /api/samples lists them")
        sample = samples[req.sample]
        image = await asyncio.to_thread(store.add, sample.path.read_bytes(), sample.id)
        return {"images": [{**image.to_dict(), "label": sample.label}]}

    @app.get("/api/samples/{sample_id}/thumbnail.png")
    async def sample_thumbnail(sample_id: str) -> Response:
        if sample_id not in samples:
            raise ApiError(404, f"unknown sample {sample_id!r}")
        if sample_id not in sample_thumbnails:
            sample_thumbnails[sample_id] = await asyncio.to_thread(thumbnail_png, samples[sample_id].path.read_bytes())
        return Response(sample_thumbnails[sample_id], media_type="image/png")

    @app.get("/api/images/{image_id}/thumbnail.png")
    async def thumbnail(image_id: str = PathParam(pattern=ID)) -> Response:
        return Response(stored([image_id])[0].thumbnail, media_type="image/png")

    # -------------------------------------------------------------------------------------------------- jobs

    @app.post("/api/predict")
    async def predict_route(req: PredictRequest) -> dict[str, Any]:
        entry = model_entry(req.model)
        image = stored([req.image])[0]
        job, future = submit("predict", lambda job: predict(job, models.get(entry), image))
        await asyncio.wrap_future(future)
        if job.status != "done":
            raise ApiError(400 if job.status == "error" else 503, job.message or job.status)
        return job.output

    @app.post("/api/jobs/explain", status_code=202)
    async def explain_route(req: ExplainRequest) -> dict[str, Any]:
        entry = model_entry(req.model)
        if len(req.images) > settings.max_images_per_job:
            raise ApiError(422, f"images: at most {settings.max_images_per_job} images per job")
        if len(req.methods) > settings.max_methods_per_job:
            raise ApiError(422, f"methods: at most {settings.max_methods_per_job} methods per job")
        try:
            methods = checked_method_params(req.methods)
        except KeyError as e:
            raise ApiError(400, e.args[0]) from None
        except InvalidParameterError as e:
            raise ApiError(422, str(e)) from None
        images = stored(req.images)
        job, _ = submit("explain", lambda job: explain(job, models.get(entry), images, methods, req.target))
        return job.snapshot()

    @app.post("/api/jobs/analysis", status_code=202)
    async def analysis_route(req: AnalysisRequest) -> dict[str, Any]:
        entry = model_entry(req.model)
        if len(req.images) > settings.max_images_per_job:
            raise ApiError(422, f"images: at most {settings.max_images_per_job} images per job")
        try:
            params = checked_analysis_params(req.analysis, req.params)
        except KeyError as e:
            raise ApiError(400, e.args[0]) from None
        except InvalidParameterError as e:
            raise ApiError(422, str(e)) from None
        images = stored(req.images)
        job, _ = submit("analysis", lambda job: analyse(job, models.get(entry), images, req.analysis, params,
                                                             req.target))
        return job.snapshot()

    def state(job: Job) -> dict[str, Any]:
        out = job.snapshot()
        if job.status == "done" and hasattr(job.output, "page"):
            out["result"] = job.output.page(job.id)
        return out

    @app.get("/api/jobs/{job_id}")
    async def job_state(job_id: str = PathParam(pattern=ID)) -> dict[str, Any]:
        return state(job_of(job_id))

    @app.delete("/api/jobs/{job_id}")
    async def cancel(job_id: str = PathParam(pattern=ID)) -> dict[str, Any]:
        job = job_of(job_id)
        job.cancel()
        return job.snapshot()

    @app.get("/api/jobs/{job_id}/events")
    async def events(request: Request, job_id: str = PathParam(pattern=ID)) -> StreamingResponse:
        job = job_of(job_id)

        async def stream() -> Any:
            last = None
            while True:
                snap = job.snapshot()
                done = snap["status"] in TERMINAL
                key = (snap["status"], snap["progress"], snap["stage"])
                if key != last or done:
                    payload = state(job) if done else snap
                    yield f"event: {'end' if done else 'progress'}\ndata: {json.dumps(payload)}\n\n"
                    last = key
                if done or await request.is_disconnected():
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/result.json")
    async def result_json(job_id: str = PathParam(pattern=ID)) -> Response:
        output = finished(job_id)
        body = await asyncio.to_thread(lambda: json.dumps(output.download(), indent=1))
        return Response(body, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="xvit-{job_of(job_id).kind}-'
                                                        f'{job_id}.json"'})

    def explain_output(job_id: str, b: int, method: str | None = None) -> ExplainOutput:
        output = finished(job_id, "explain")
        if not 0 <= b < len(output.display) or (method is not None and method not in output.explanations):
            raise ApiError(404, "no such image or method in this job")
        return output

    @app.get("/api/jobs/{job_id}/images/{b}.png")
    async def display_image(b: int, job_id: str = PathParam(pattern=ID)) -> Response:
        return Response(png_bytes(explain_output(job_id, b).display[b]), media_type="image/png")

    @app.get("/api/jobs/{job_id}/heat/{b}/{method}.png")
    async def heat(b: int, method: str, job_id: str = PathParam(pattern=ID)) -> Response:
        return Response(explain_output(job_id, b, method).heat[(b, method)], media_type="image/png")

    @app.get("/api/jobs/{job_id}/overlay/{b}/{method}.png")
    async def overlay(b: int, method: str, job_id: str = PathParam(pattern=ID), alpha: float = 0.5) -> Response:
        if not 0.0 <= alpha <= 1.0:
            raise ApiError(422, f"alpha must be in [0, 1]; got {alpha}")
        output = explain_output(job_id, b, method)
        body = await asyncio.to_thread(output.overlay_png, b, method, alpha)
        name = f"xvit-{job_id}-{b}-{method}.png"
        return Response(body, media_type="image/png", headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/jobs/{job_id}/figure.png")
    async def figure(job_id: str = PathParam(pattern=ID)) -> Response:
        return Response(finished(job_id, "analysis").figure, media_type="image/png")

    return app


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def serve(settings: Settings) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                timeout_keep_alive=5, limit_concurrency=256)
