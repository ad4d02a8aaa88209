"""What the service's server process needs beneath its routes: reading an upload, request ids, BentoML's traffic
timeout without its timer leak, and a garbage collector that leaves the startup objects alone."""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import uuid
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from lifecycle.operations import ServingConfig
from lifecycle.samples import InvalidInput

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file, allowed on top of max_upload_mb
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def freeze_startup_objects() -> None:
    """Leave what the process holds once started (modules, models: some 300,000 objects) out of the garbage
    collector's full collections. Each full collection otherwise walks all of them, holding the GIL for about
    200 ms, which every request in flight waits out: under load that was the service's p99. Called again after a
    model swap, which first lets the collector free the retired model."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class AnsweredTimeout:
    """BentoML's traffic timeout (`traffic.timeout`: a request that has not begun its answer by then is cancelled
    and answered 504), with its timer cancelled once the answer begins. BentoML's own middleware (1.4.40) leaves
    every request's timer scheduled for the whole timeout, holding a future and a context: at 1,000 requests/s that
    is some 300,000 live objects, which each full garbage collection walks while holding the GIL (70 ms and rising
    within 20 s of load). The app runs in the request's own task, under `asyncio.timeout`: no task, future or timer
    per request outlives its answer's first message."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        deadline = asyncio.timeout(self.timeout)
        begun = False

        async def send_and_mark(message: Any) -> None:
            nonlocal begun
            if not begun and not deadline.expired():
                deadline.reschedule(None)  # the answer has begun: it is no longer timed
            begun = True
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_and_mark)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own, not the traffic timeout
            if begun:  # the timeout fell between the answer's first message and its sending: nothing more to say
                return
            message = f"Not able to process the request in {self.timeout} seconds"
            await JSONResponse({"error": message}, status_code=504)(scope, receive, send)


def use_answered_timeout() -> None:
    """Make BentoML's app factory build `AnsweredTimeout` where it builds its own timeout middleware (it looks the
    class up in its module each time it builds an app); a BentoML without that class is left as it is."""
    from bentoml._internal.server.http import traffic

    if isinstance(getattr(traffic, "TimeoutMiddleware", None), type):
        traffic.TimeoutMiddleware = AnsweredTimeout  # type: ignore[misc,assignment]


async def read_upload(request: Request, field: str, limits: ServingConfig) -> tuple[bytes, str]:
    """The bytes and file name of the multipart file field `field`, or InvalidInput saying what is wrong."""
    max_bytes = int(limits.max_upload_mb * 2**20)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidInput(
            f"send multipart/form-data with the file in the field '{field}' "
            f"(got Content-Type {content_type or 'none'!r})",
            415,
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise InvalidInput(f"request body is {int(declared)} bytes; the limit is {limits.max_upload_mb:g} MB", 413)
    try:
        form = await request.form(max_files=4, max_fields=16)
    except Exception as e:  # python-multipart raises several types for malformed bodies
        raise InvalidInput(f"malformed multipart body: {e}") from None
    try:
        if len(form.getlist(field)) > 1:
            raise InvalidInput(f"multipart field '{field}' holds {len(form.getlist(field))} values; send one file")
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            present = ", ".join(repr(k) for k in form.keys()) or "none"
            problem = "is not a file" if upload is not None else "is missing"
            raise InvalidInput(f"multipart field '{field}' {problem} (fields present: {present})")
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InvalidInput(f"file '{upload.filename}' is over the {limits.max_upload_mb:g} MB limit", 413)
        return data, upload.filename or ""
    finally:
        await form.close()


class RequestIds:
    """Ids for requests that bring none: a random prefix per process and a counter, unique across workers and
    restarts without a random draw per request."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):08x}"


def request_id_of(request: Request, ids: RequestIds) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else ids.new()
