"""Label Studio's ML backend protocol on the same server: Label Studio asks, the model pre-annotates.

    POST /predict   {"tasks": [...], "label_config": XML, ...} -> {"results": [{"result", "score", "model_version"}]}
    POST /setup     -> {"model_version"}      GET /health -> {"status": "UP", ...}
    GET  /versions  -> {"versions": [...]}    POST /validate {"config": XML} -> ok, or 400
    POST /webhook   -> acknowledged, ignored (nothing is trained);  POST /train -> 400

What to segment: by default one instruction per `Label` of each `BrushLabels` control of
the project's labeling config (its value is the text; the result's from_name / to_name are
the control's name and toName, the image is the task data key the Image tag's `$key`
names). With `text_field`, the instructions are that task data field's non-empty lines,
`label: instruction` or a bare instruction (its label: the control's only Label if it has
one, else the text itself).

Where images come from: only Label Studio itself (the configured URL's scheme, host and
port; a relative task URL such as `/data/upload/1/x.png` is joined to it), with its API
key, size- and time-bounded; or, for `/data/local-files/?d=REL` with `local_files_root`
set, the file REL under that root (resolved, symlinks included, and confined to it;
regular files only). Any other URL is refused for its task. Nothing is written to disk.

Each task's masks come back as `brushlabels` results in Label Studio's RLE (built by
`unilseg.batch.sinks.label_studio.brush_result`, as the batch sink's are), each scored by its
presence score; an empty mask (a target found absent: below the server's --min-score) gives
no result. A /predict
call's tasks run concurrently through the server's batcher. A task that fails (a refused
URL, an unreadable image) gets an empty result list and a logged warning; if every task
fails, the call is refused with the first reason.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import importlib.util
import json
import logging
import os
import stat
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from fastapi import Request  # both resolved by FastAPI from this module's names (the annotations are strings)
from fastapi.responses import JSONResponse

from unilseg.serve.schema import RequestError, SegmentRequest, check_instructions

log = logging.getLogger(__name__)

LOCAL_FILES_PATH = "/data/local-files/"
MAX_CONFIG_CHARS = 1_000_000
FETCH_TIMEOUT_S = 30.0
SDK_HINT = "the Label Studio backend needs label-studio-sdk on the server: pip install 'unilseg[label-studio]'"


# ------------------------------------------------------------------ the labeling config

@dataclass(frozen=True)
class Target:
    """One BrushLabels control: the names its results carry, the task data key of its image, its labels."""

    from_name: str
    to_name: str
    image_key: str  # the Image tag's value `$key`, without the `$`
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Instruction:
    label: str  # the BrushLabels label the mask gets
    text: str  # what the model is asked


def parse_config(xml: Any) -> list[Target]:
    """A labeling config (XML text) -> its BrushLabels controls, or RequestError(400) saying what is wrong.

    Refused before parsing: a DOCTYPE or an entity declaration (nothing is expanded or fetched)."""
    if not isinstance(xml, str) or not xml.strip():
        raise RequestError(400, "label_config must be the project's labeling config, an XML string")
    if len(xml) > MAX_CONFIG_CHARS:
        raise RequestError(400, f"the labeling config has {len(xml)} characters: at most {MAX_CONFIG_CHARS}")
    lowered = xml.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise RequestError(400, "the labeling config declares a DOCTYPE or entities, which are refused")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise RequestError(400, f"the labeling config is not well-formed XML ({e})") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag.lower() == "image"}
    targets = []
    for el in root.iter():
        if el.tag.lower() != "brushlabels":
            continue
        name, to_name = el.get("name"), el.get("toName")
        if not name or not to_name:
            raise RequestError(400, "a BrushLabels control of the labeling config lacks its name or toName")
        if to_name not in images:
            raise RequestError(400, f"BrushLabels {name!r} points at toName {to_name!r}, which is no Image tag "
                                    "of the labeling config")
        value = images[to_name]
        if not value.startswith("$") or len(value) < 2:
            raise RequestError(400, f"Image {to_name!r} has value {value!r}; it must name a task field, "
                                    'e.g. value="$image"')
        labels = tuple(lab.get("value") for lab in el.iter() if lab.tag.lower() == "label" and lab.get("value"))
        targets.append(Target(name, to_name, value[1:], labels))
    if not targets:
        raise RequestError(400, "the labeling config has no BrushLabels control (with an Image) to pre-annotate; "
                                "see `unilseg label-studio-config`")
    return targets


def instructions_of(target: Target, data: Mapping[str, Any], text_field: str | None) -> list[Instruction]:
    """What to segment for `target` in a task whose data is `data` (see the module's docstring)."""
    if text_field is None:
        if not target.labels:
            raise RequestError(400, f"BrushLabels {target.from_name!r} has no Label: give each class a "
                                    '<Label value="..."/>, or start the server with --text-field')
        return [Instruction(label, label) for label in target.labels]
    value = data.get(text_field)
    if not isinstance(value, str):
        raise RequestError(400, f"the task has no text field {text_field!r} holding the instructions")
    out = []
    for line in value.splitlines():
        label, sep, text = line.partition(":")
        label, text = label.strip(), text.strip()
        if not sep:
            if not label:
                continue
            text, label = label, (target.labels[0] if len(target.labels) == 1 else label)
        elif not label or not text:
            raise RequestError(400, f"the line {line.strip()!r} of {text_field!r} needs both a label and an "
                                    "instruction (`label: instruction`)")
        out.append(Instruction(label, text))
    if not out:
        raise RequestError(400, f"the task's {text_field!r} holds no instruction; write one per line")
    return out


# ------------------------------------------------------------------ where an image may come from

@dataclass(frozen=True)
class Source:
    """A task's image: an http(s) URL on Label Studio (`url`), or a file under the local-files root (`path`)."""

    url: str | None = None
    path: str | None = None


def _origin(parts: Any) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def resolve_image(ref: Any, ls_url: str | None, local_root: str | None) -> Source:
    """A task's image reference -> where to read it, or RequestError(400) if it is not Label Studio's."""
    if not isinstance(ref, str) or not ref.strip():
        raise RequestError(400, "the task has no image URL in the field the labeling config names")
    ref = ref.strip()
    parts = urlsplit(ref)
    if local_root is not None and parts.path.rstrip("/") + "/" == LOCAL_FILES_PATH and (
            not parts.scheme or (ls_url is not None and _origin(parts) == _origin(urlsplit(ls_url)))):
        rel = parse_qs(parts.query).get("d")
        if not rel or not rel[0]:
            raise RequestError(400, f"the local-files URL {ref[:200]!r} has no ?d=PATH")
        return Source(path=local_file(rel[0], local_root))
    if ls_url is None:
        raise RequestError(400, f"the image {ref[:200]!r} would be fetched from Label Studio, but the server has "
                                "no --label-studio-url (or $LABEL_STUDIO_URL)" +
                                ("" if local_root else " nor --local-files-root"))
    if parts.scheme or parts.netloc:
        if parts.scheme.lower() not in ("http", "https") or _origin(parts) != _origin(urlsplit(ls_url)):
            raise RequestError(400, f"the image URL {ref[:200]!r} is not on Label Studio ({ls_url}); only its "
                                    "images are fetched")
        return Source(url=ref)
    if not ref.startswith("/"):
        raise RequestError(400, f"the image reference {ref[:200]!r} is neither a Label Studio URL nor a path on it")
    return Source(url=urljoin(ls_url, ref))


def local_file(rel: str, root: str) -> str:
    """REL under `root`, symlinks resolved, or RequestError(400/403) if it leaves the root."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, rel.lstrip("/")))
    if os.path.commonpath([real, real_root]) != real_root or real == real_root:
        raise RequestError(403, f"the local file {rel[:200]!r} is outside the local-files root")
    return real


def read_local(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes (not through a final symlink), at most `max_bytes`, else RequestError."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise RequestError(404 if isinstance(e, FileNotFoundError) else 403,
                           f"cannot read the local file {os.path.basename(path)!r} ({e.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        if stat.S_ISREG(info.st_mode):
            raise RequestError(413, f"the image is {info.st_size} bytes: at most {max_bytes}")
        raise RequestError(403, f"the local file {os.path.basename(path)!r} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grown since fstat
        raise RequestError(413, f"the image is over {max_bytes} bytes")
    return data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could lead off Label Studio: refused (the 3xx becomes an HTTPError)


_OPENER = urllib.request.build_opener(_NoRedirect())


def fetch(url: str, headers: Mapping[str, str], max_bytes: int, timeout_s: float) -> bytes:
    """GET `url` (no redirects), at most `max_bytes`; RequestError saying why not."""
    request = urllib.request.Request(url, headers={"User-Agent": "unilseg", **headers})
    try:
        with _OPENER.open(request, timeout=timeout_s) as r:
            declared = r.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise RequestError(413, f"the image is {declared} bytes: at most {max_bytes}")
            data = r.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        hint = "; check the server's --label-studio-api-key-file" if e.code in (401, 403) else ""
        raise RequestError(502 if e.code >= 500 else 400,
                           f"Label Studio answered {e.code} for the image {urlsplit(url).path[:200]}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise RequestError(502, f"cannot fetch the image from Label Studio ({why})") from None
    if len(data) > max_bytes:
        raise RequestError(413, f"the image is over {max_bytes} bytes")
    return data


def is_jwt(key: str) -> bool:
    """A personal access token (a JWT refresh token: three base64url parts, a JSON header) or not (legacy)."""
    parts = key.split(".")
    if len(parts) != 3 or not all(parts):
        return False
    try:
        return isinstance(json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))), dict)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False


def _jwt_exp(token: str) -> float:
    try:
        part = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["exp"])
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return time.time() + 60.0


# ------------------------------------------------------------------ the backend

def model_version(service: Any) -> str:
    """What the predictions' model_version says: the served model's name and unilseg's version."""
    return f"{service.model.get('name', 'unilseg')}@{service.model.get('version', '')}".rstrip("@")


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, f"the {what} body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"the {what} body must be a JSON object")
    return payload


@dataclass
class Backend:
    """Label Studio's ML backend routes (`add_routes`), fetching images from `url` (or `local_files_root`)."""

    url: str | None = None  # Label Studio's address
    api_key: str | None = None  # legacy token, or personal access token (JWT refresh)
    local_files_root: str | None = None  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT
    text_field: str | None = None  # task data field of instructions (default: the BrushLabels' labels)
    _access: tuple[str, float] | None = field(default=None, repr=False)  # a PAT's access token, its expiry

    def __post_init__(self) -> None:
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                from unilseg.errors import UnilsegError

                raise UnilsegError(f"--label-studio-url {self.url!r}: give Label Studio's http(s) address, e.g. "
                                   "http://localhost:8080")

    # ---- authentication with Label Studio

    def _auth(self, renew: bool = False) -> dict[str, str]:
        """The header Label Studio accepts for the key: `Token KEY` (legacy), or `Bearer ACCESS` for a personal
        access token, exchanged at /api/token/refresh/ (and again once it expires)."""
        if not self.api_key:
            return {}
        if not is_jwt(self.api_key):
            return {"Authorization": f"Token {self.api_key}"}
        if renew or self._access is None or self._access[1] < time.time() + 30:
            request = urllib.request.Request(urljoin(self.url, "/api/token/refresh/"), method="POST",
                                             data=json.dumps({"refresh": self.api_key}).encode(),
                                             headers={"Content-Type": "application/json", "User-Agent": "unilseg"})
            try:
                with _OPENER.open(request, timeout=FETCH_TIMEOUT_S) as r:
                    access = json.loads(r.read(1_000_000))["access"]
            except urllib.error.HTTPError as e:
                raise RequestError(502, f"Label Studio refused the personal access token ({e.code} from "
                                        "/api/token/refresh/); check --label-studio-api-key-file") from None
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise RequestError(502, f"cannot exchange the personal access token at Label Studio ({e})") from None
            self._access = (access, _jwt_exp(access))
        return {"Authorization": f"Bearer {self._access[0]}"}

    def read_image(self, ref: Any, max_bytes: int, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
        """A task's image bytes from Label Studio or the local-files root (blocking; run it on a thread)."""
        source = resolve_image(ref, self.url, self.local_files_root)
        if source.path is not None:
            return read_local(source.path, max_bytes)
        try:
            return fetch(source.url, self._auth(), max_bytes, timeout_s)
        except RequestError as e:
            if not (self.api_key and is_jwt(self.api_key) and "answered 401" in e.message):
                raise
            return fetch(source.url, self._auth(renew=True), max_bytes, timeout_s)  # the access token expired

    # ---- one task

    async def predict_task(self, service: Any, task: Any, targets: Sequence[Target], arrived: float
                           ) -> dict[str, Any]:
        """One task -> its prediction {"result", "score", "model_version"}; RequestError if it cannot be run."""
        from unilseg.batch.sinks.label_studio import brush_result, region_id
        from unilseg.serve.app import run_job

        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise RequestError(400, "a task must be an object with a data object")
        data = task["data"]
        limits = service.limits
        left = limits.timeout_s - (time.perf_counter() - arrived)
        images: dict[str, bytes] = {}
        results: list[dict[str, Any]] = []
        for target in targets:
            wanted = instructions_of(target, data, self.text_field)
            check_instructions([w.text for w in wanted], limits)
            ref = data.get(target.image_key)
            if not isinstance(ref, str):
                raise RequestError(400, f"the task has no image in data.{target.image_key}")
            if ref not in images:
                try:
                    images[ref] = await asyncio.wait_for(asyncio.to_thread(
                        self.read_image, ref, limits.max_body_bytes, min(FETCH_TIMEOUT_S, max(left, 0.001))),
                        timeout=max(left, 0.001))
                except asyncio.TimeoutError:
                    raise RequestError(504, "fetching the image took too long") from None
            request = SegmentRequest(data=images[ref], instructions=[w.text for w in wanted])
            result = await run_job(service, request, arrived)

            def build(result: Any = result, wanted: list = wanted,
                      target: Target = target, ref: str = ref) -> list[dict[str, Any]]:
                out = []
                for w, p in zip(wanted, result.predictions):
                    if p.mask.any():  # none for an empty mask, so none for a target found absent
                        out.append(brush_result(p.mask, w.label, round(p.presence, 6),
                                                region_id(f"{target.from_name}\0{ref}", len(out)),
                                                target.from_name, target.to_name))
                return out

            results += await asyncio.to_thread(build)
        score = round(sum(r["score"] for r in results) / len(results), 6) if results else 0.0
        return {"result": results, "score": score, "model_version": model_version(service)}

    # ---- the calls

    async def predict(self, service: Any, body: bytes) -> dict[str, Any]:
        """A /predict body -> {"results": [one prediction per task]} (see the module's docstring)."""
        payload = _json_object(body, "/predict")
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError(400, "tasks must be a non-empty list of Label Studio tasks")
        targets = parse_config(payload.get("label_config"))
        if importlib.util.find_spec("label_studio_sdk") is None:
            raise RequestError(501, SDK_HINT)
        # a bounded number of tasks in flight: they share batches without filling the server's queue
        gate = asyncio.Semaphore(max(1, min(2 * service.limits.batch_images, service.limits.queue_size // 2)))

        async def one(task: Any) -> dict[str, Any]:
            async with gate:
                return await self.predict_task(service, task, targets, time.perf_counter())

        outcomes = await asyncio.gather(*(one(t) for t in tasks), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, RequestError):
                raise outcome
        failed = [(t, o) for t, o in zip(tasks, outcomes) if isinstance(o, RequestError)]
        if len(failed) == len(tasks):
            raise failed[0][1]
        for task, e in failed:
            log.warning("Label Studio task %s: no prediction: %s", task.get("id") if isinstance(task, dict) else "?",
                        e.message)
        empty = {"result": [], "score": 0.0, "model_version": model_version(service)}
        return {"results": [empty if isinstance(o, RequestError) else o for o in outcomes]}

    def setup(self, service: Any, body: bytes) -> dict[str, Any]:
        """/setup: the project's config is checked; -> the model version. Label Studio's hostname and token in
        the body are not used: images come only from the configured URL, with the configured key."""
        payload = _json_object(body, "/setup")
        schema = payload.get("schema")
        if schema:
            for target in parse_config(schema):
                if self.text_field is None and not target.labels:
                    instructions_of(target, {}, None)  # raises: nothing to segment
        return {"model_version": model_version(service)}

    def add_routes(self, app: Any, service: Any) -> None:
        """Label Studio's ML backend routes on the FastAPI `app` (every answer JSON; refusals {"error"})."""
        from unilseg.serve.app import read_body

        @app.get("/health", summary="Label Studio ML backend: the backend answers")
        async def health() -> JSONResponse:
            if service.error:
                return JSONResponse({"status": "DOWN", "error": service.error}, status_code=503)
            return JSONResponse({"status": "UP", "model_class": "unilseg", "model_version": model_version(service),
                                 "ready": service.ready})

        @app.post("/setup", summary="Label Studio ML backend: a project connects")
        async def setup(request: Request) -> JSONResponse:
            return JSONResponse(self.setup(service, await read_body(request, service.limits.max_body_bytes)))

        @app.post("/predict", summary="Label Studio ML backend: pre-annotate tasks with brush masks")
        async def predict(request: Request) -> JSONResponse:
            body = await read_body(request, service.limits.max_body_bytes)
            return JSONResponse(await self.predict(service, body))

        @app.post("/validate", summary="Label Studio ML backend: check a labeling config")
        async def validate(request: Request) -> JSONResponse:
            payload = _json_object(await read_body(request, service.limits.max_body_bytes), "/validate")
            targets = parse_config(payload.get("config"))
            return JSONResponse({"status": "ok", "controls": [t.from_name for t in targets]})

        @app.get("/versions", summary="Label Studio ML backend: the model versions")
        async def versions() -> JSONResponse:
            return JSONResponse({"versions": [model_version(service)], "model_version": model_version(service)})

        @app.post("/webhook", summary="Label Studio ML backend: events (acknowledged; nothing is trained)")
        async def webhook(request: Request) -> JSONResponse:
            await read_body(request, service.limits.max_body_bytes)
            return JSONResponse({"status": "ignored", "reason": "unilseg does not train from Label Studio events"})

        @app.post("/train", summary="Label Studio ML backend: training (not offered)")
        async def train() -> JSONResponse:
            return JSONResponse({"error": "this backend does not train; it only pre-annotates (/predict)"},
                                status_code=400)
