"""The HTTP API (FastAPI), built around a `Service`: how to run a job, the limits, the key.

    POST /v1/segment   an image and instructions -> masks (JSON or multipart; see `unilseg.serve.schema`)
    GET  /v1/models    the model served: name, runtime, precision, device, input size, threshold, min score
    GET  /v1/stats     encoder calls, batches, cache hits (what the batching and the cache saved)
    GET  /healthz      the process answers;  GET /readyz  the model is loaded
    /predict /setup /health   Label Studio's ML backend protocol (`unilseg.serve.label_studio`)
    GET  /docs, /openapi.json  the API's OpenAPI description

Every refusal is JSON `{"error": "one sentence"}` with a 4xx status (5xx only for the
server's own failures, logged), never an HTML page or a trace. With a key, every route
but the health checks and the docs wants `Authorization: Bearer KEY` (or HTTP Basic with
the key as password, as Label Studio sends it), compared in constant time.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from unilseg.model.spec import effective_min_score
from unilseg.serve.engine import Busy, Job, JobResult, image_key
from unilseg.serve.schema import (
    Limits,
    RequestError,
    SegmentRequest,
    check_fields,
    check_image,
    parse_json,
    segment_answer,
)

log = logging.getLogger(__name__)
PUBLIC = frozenset({"/healthz", "/readyz", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


@dataclass
class Service:
    """What the routes need: `run` (a Job -> its JobResult, batched), the model's description and limits.

    ready: the model is loaded (`run` may be called); error: why it never will be.
    """

    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    run: Callable[[Job], Awaitable[JobResult]] | None = None  # may raise Busy, at the call or when awaited
    has_image: Callable[[str], bool] = lambda key: False  # an embedding for this image key is cached
    stats: Callable[[], dict[str, Any]] = dict
    model: dict[str, Any] = field(default_factory=dict)  # name, runtime, precision, device, input_size, threshold,
    # min_score
    threshold: float = 0.35  # the model's default
    min_score: float | None = None  # the server's default (--min-score, else the model's); None: off
    ready: bool = False
    error: str | None = None
    arriving: int = 0  # requests being read and checked, not yet queued (the batcher waits for them)
    label_studio: Any = None  # unilseg.serve.label_studio.Backend, or None: its routes answer 404

    def __post_init__(self) -> None:
        self._key_digest = None if self.api_key is None else hashlib.sha256(self.api_key.encode()).digest()

    def admits(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries the key (Bearer, or Basic with it as password)."""
        if self._key_digest is None:
            return True
        given = ""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = ""
        # digests of equal length: the comparison's time does not depend on where the texts differ
        return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "replace")).digest(), self._key_digest)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {int(declared)} bytes: at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_form(request: Request, body: bytes, limits: Limits) -> SegmentRequest:
    """A multipart form: the image as a file part `image`, the other fields as text parts (`instructions`
    repeated, one per part)."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=limits.max_instructions + 16,
                                                         max_part_size=limits.max_body_bytes)
    except MultiPartException as e:
        raise RequestError(400, f"the multipart body is malformed ({e.message})") from None
    except StarletteHTTPException as e:  # Starlette's wording of a MultiPartException inside an app
        raise RequestError(400, f"the multipart body is malformed ({e.detail})") from None
    except (ValueError, KeyError, AssertionError):
        raise RequestError(400, "the multipart body is malformed") from None
    try:
        if not form:
            raise RequestError(400, "the multipart body holds no parts; check its boundary and encoding")
        image = form.get("image")
        if image is None or isinstance(image, str):
            raise RequestError(400, "image missing; send the image file as the form's `image` part")
        data = await image.read()
        fields: dict[str, Any] = {}
        for name in form:
            if name == "image":
                continue
            values = form.getlist(name)
            if any(not isinstance(v, str) for v in values):
                raise RequestError(400, f"{name} must be a text field, not a file")
            fields[name] = values if name == "instructions" else values[-1]
        if "instructions" in fields:
            fields["instructions"] = [line for v in fields["instructions"] for line in v.splitlines() if line.strip()]
        return check_fields(fields, data, limits)
    finally:
        await form.close()


def create_app(service: Service) -> FastAPI:
    """The FastAPI application serving `service` (the local server and each Ray Serve replica build one)."""
    app = FastAPI(title="unilseg", summary="Segment whatever a language instruction names in an image (UniLSeg)",
                  version=service.model.get("version", "0.1.0"))
    app.state.service = service

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path not in PUBLIC and not service.admits(request.headers.get("authorization")):
            return error(401, "a valid API key is required: send `Authorization: Bearer KEY`",
                         {"WWW-Authenticate": 'Bearer realm="unilseg"'})
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError) -> JSONResponse:
        return error(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        words = {404: f"no route {request.url.path}; see /docs", 405: f"{request.method} is not allowed on "
                 f"{request.url.path}"}
        return error(e.status_code, words.get(e.status_code, str(e.detail)), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(400, f"{where or 'the request'}: {first.get('msg', 'invalid')}".rstrip("."))

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return error(500, "the server failed on this request; see its log")

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and requests are served")
    async def readyz() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "failed" if service.error else "loading", "error": service.error},
                            status_code=503)

    @app.get("/v1/models", summary="The model this server runs")
    async def models() -> dict[str, Any]:
        return {"models": [{**service.model, "ready": service.ready}]}

    @app.get("/v1/stats", summary="Encoder calls, batches and embedding-cache hits since start")
    async def stats() -> dict[str, Any]:
        return service.stats()

    @app.post("/v1/segment", summary="Segment what each instruction names", openapi_extra=SEGMENT_OPENAPI)
    async def segment(request: Request) -> JSONResponse:
        arrived = time.perf_counter()
        answer = await segment_request(service, request, arrived)
        return JSONResponse(answer)

    if service.label_studio is not None:
        service.label_studio.add_routes(app, service)
    return app


async def segment_request(service: Service, request: Request, arrived: float) -> dict[str, Any]:
    """Read, check, queue and answer one /v1/segment request."""
    limits = service.limits
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", "multipart/form-data"):
        raise RequestError(415, f"content type {kind or 'none'!r}: send application/json or multipart/form-data")
    service.arriving += 1
    try:
        body = await read_body(request, limits.max_body_bytes)
        parsed = parse_json(body, limits) if kind == "application/json" else await parse_form(request, body, limits)
    except BaseException:
        service.arriving -= 1
        raise
    return await answer(service, parsed, arrived, counted=True)


async def run_job(service: Service, parsed: SegmentRequest, arrived: float, counted: bool = False) -> JobResult:
    """A checked request's model work: its image decoded (unless its embedding is cached), queued, awaited
    until `timeout_s` after `arrived` (perf_counter). RequestError 503 (loading, queue full) or 504.
    counted: the request is in `service.arriving` (taken out here once it is queued or refused)."""
    try:
        if not service.ready or service.run is None:
            raise RequestError(503, "the model is still loading; retry shortly" if not service.error else
                               f"the model failed to load: {service.error}", {"Retry-After": "5"})
        limits = service.limits
        key = image_key(parsed.data)
        if not service.has_image(key):  # decoded (and checked) here, off the model's thread
            parsed.image = await asyncio.to_thread(check_image, parsed.data, limits)
        job = Job(key, parsed.data, parsed.instructions, service.threshold if parsed.threshold is None else
                  parsed.threshold, parsed.image, min_score=parsed.min_score)
        try:
            running = service.run(job)  # the local Batcher queues the job here (Ray Serve's batch: when awaited)
        except Busy as e:
            raise RequestError(503, str(e), {"Retry-After": str(e.retry_after)}) from None
    finally:
        if counted:
            service.arriving -= 1
    left = limits.timeout_s - (time.perf_counter() - arrived)
    try:
        return await asyncio.wait_for(running, timeout=max(left, 0.001))
    except Busy as e:
        raise RequestError(503, str(e), {"Retry-After": str(e.retry_after)}) from None
    except asyncio.TimeoutError:
        raise RequestError(504, f"the request took over {limits.timeout_s:g} s; retry, or ask for fewer "
                                "instructions") from None


async def answer(service: Service, parsed: SegmentRequest, arrived: float, counted: bool = False) -> dict[str, Any]:
    """Run a checked request through the model and build its JSON (timings included)."""
    result = await run_job(service, parsed, arrived, counted)
    threshold = service.threshold if parsed.threshold is None else parsed.threshold
    min_score = effective_min_score(service.min_score, parsed.min_score)
    started = time.perf_counter()
    out = await asyncio.to_thread(segment_answer, parsed, result, threshold, min_score)
    out["model"] = {k: service.model.get(k) for k in ("name", "runtime", "precision", "device")}
    out["timings"] = {"total_ms": round((time.perf_counter() - arrived) * 1e3, 1),
                      "queue_ms": round(result.queue_ms, 1), "encode_ms": round(result.encode_ms, 1),
                      "decode_ms": round(result.decode_ms, 1),
                      "postprocess_ms": round((time.perf_counter() - started) * 1e3, 1),
                      "cache_hit": result.cache_hit, "batch_requests": result.batch_jobs}
    return out


_PROPS = {
    "instructions": {"type": "array", "items": {"type": "string"}, "description": "texts naming what to segment"},
    "threshold": {"type": "number", "minimum": 0, "maximum": 1, "description": "default: the model's"},
    "min_score": {"type": "number", "minimum": 0, "maximum": 1,
                  "description": "a prediction whose presence score is below it comes back empty, present: false "
                                 "(0: off; default: the server's --min-score, else the model's)"},
    "outputs": {"type": "array", "items": {"enum": ["rle", "png", "polygons"]}, "default": ["rle"]},
    "instances": {"type": "boolean", "default": False, "description": "also each mask's connected components"},
    "min_area": {"type": "integer", "minimum": 1, "default": 16},
    "max_instances": {"type": "integer", "minimum": 1, "default": 100},
    "classes": {"type": "boolean", "default": False,
                "description": "the instructions are label-map classes (`name` or `name: instruction`)"},
}
SEGMENT_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["image", "instructions"], "properties": {
        "image": {"type": "string", "format": "byte", "description": "the image file, base64"}, **_PROPS}}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image", "instructions"], "properties": {
        "image": {"type": "string", "format": "binary"}, **_PROPS}}},
}}}
