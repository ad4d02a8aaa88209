"""What the service's server process needs beneath its routes: reading an upload, request ids, BentoML's traffic
timeout without its timer leak, and a garbage collector that leaves the startup objects alone."""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from lifecycle.operations import ServingConfig
from lifecycle.samples import InvalidInput

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file, allowed on top of max_upload_mb
PART_LIMITS = {"files": 4, "fields": 16}  # parts of one multipart body: the upload, and a few a client may add
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer encoded by orjson (a float that is not a number becomes null rather than failing the answer)."""
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


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
            await json_response({"error": message}, 504)(scope, receive, send)


def use_answered_timeout() -> None:
    """Make BentoML's app factory build `AnsweredTimeout` where it builds its own timeout middleware (it looks the
    class up in its module each time it builds an app); a BentoML without that class is left as it is."""
    from bentoml._internal.server.http import traffic

    if isinstance(getattr(traffic, "TimeoutMiddleware", None), type):
        traffic.TimeoutMiddleware = AnsweredTimeout  # type: ignore[misc,assignment]


async def read_upload(request: Request, field: str, limits: ServingConfig) -> tuple[bytes, str]:
    """The bytes and file name of the multipart file field `field`, or InvalidInput saying what is wrong. The body
    is streamed through python-multipart's parser keeping only that file's bytes, and refused (413) as soon as
    it outgrows the limit, with or without a Content-Length."""
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
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise InvalidInput("malformed multipart body: its Content-Type names no boundary")
    form = FileField(field, max_bytes, limits.max_upload_mb)
    parser = MultipartParser(boundary, form.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + MULTIPART_OVERHEAD:
                raise InvalidInput(f"request body is over the {limits.max_upload_mb:g} MB limit", 413)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise InvalidInput(f"malformed multipart body: {e}") from None
    except ClientDisconnect:
        raise InvalidInput("the client disconnected before the body ended") from None
    return form.upload()


class FileField:
    """python-multipart's callbacks for one multipart body, keeping the bytes of the file field `field` (at most
    `max_bytes`) and only the names of the other parts (at most PART_LIMITS of each kind)."""

    def __init__(self, field: str, max_bytes: int, max_mb: float) -> None:
        self.field, self.max_bytes, self.max_mb = field, max_bytes, max_mb
        self.names: list[str] = []  # every finished part's name, in order
        self.values = 0  # finished parts named `field`
        self.parts = dict.fromkeys(PART_LIMITS, 0)  # parts begun, of each kind
        self.data: bytearray | None = None  # the first file part named `field`
        self.filename = ""
        self._header_name, self._header_value = b"", b""  # of the header being read
        self._disposition = b""
        self._name: str | None = None  # of the part being read
        self._keep = False  # whether its bytes are the upload

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._add_header_name,
            "on_header_value": self._add_header_value,
            "on_header_end": self._end_header,
            "on_headers_finished": self._start_data,
            "on_part_data": self._add_data,
            "on_part_end": self._end_part,
        }

    def upload(self) -> tuple[bytes, str]:
        if self._name is not None:
            inside = f"the part '{self._name}'" if self._name else "a part's headers"
            raise InvalidInput(f"malformed multipart body: it ends inside {inside}")
        if self.values > 1:
            raise InvalidInput(f"multipart field '{self.field}' holds {self.values} values; send one file")
        if self.data is None:
            present = ", ".join(repr(name) for name in dict.fromkeys(self.names)) or "none"
            problem = "is not a file" if self.values else "is missing"
            raise InvalidInput(f"multipart field '{self.field}' {problem} (fields present: {present})")
        return bytes(self.data), self.filename

    def _begin(self) -> None:
        self._disposition, self._name, self._keep = b"", "", False

    def _add_header_name(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]  # python-multipart bounds a header's size

    def _add_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _end_header(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _start_data(self) -> None:
        options = parse_options_header(self._disposition)[1]
        if b"name" not in options:
            raise InvalidInput("malformed multipart body: a part's Content-Disposition gives no name")
        self._name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        kind = "files" if filename is not None else "fields"
        self.parts[kind] += 1
        if self.parts[kind] > PART_LIMITS[kind]:
            raise InvalidInput(
                f"multipart body holds more than {PART_LIMITS[kind]} {kind}; send the file in '{self.field}'"
            )
        self._keep = self._name == self.field and filename is not None and self.data is None
        if self._keep:
            self.data, self.filename = bytearray(), (filename or b"").decode("utf-8", "replace")

    def _add_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keep:
            return
        assert self.data is not None
        if len(self.data) + end - start > self.max_bytes:
            raise InvalidInput(f"file '{self.filename}' is over the {self.max_mb:g} MB limit", 413)
        self.data += data[start:end]

    def _end_part(self) -> None:
        assert self._name is not None
        self.names.append(self._name)
        self.values += self._name == self.field
        self._name, self._keep = None, False


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
