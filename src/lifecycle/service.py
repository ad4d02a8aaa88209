"""The BentoML service: `POST /<endpoint>` for every task in params.yaml that has a production model, each backed
by a batchable model service that merges concurrent requests into one model call (adaptive batching).

    bentoml serve lifecycle.service:Lifecycle --host 127.0.0.1 --port 3000      (or `make serve`)

The public service parses and checks the upload, decodes it with the task's own `decode` and `prepare` (the
evaluation transform), asks the task's model service, answers, and logs the request for monitoring. Its routes are
a Starlette app rather than `@bentoml.api` methods so that every bad input gets a 4xx JSON answer of our making
(BentoML's own multipart parsing would also fetch URLs given in place of files). BentoML adds /healthz, /livez,
/readyz and Prometheus /metrics. params.yaml is read from the working directory, or from $LIFECYCLE_PARAMS.

Importing this module builds nothing: `Lifecycle` is built on first access (PEP 562), which is when `bentoml
serve lifecycle.service:Lifecycle` asks for it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lifecycle import registry
from lifecycle.atomic import write_bytes
from lifecycle.config import ServeConfig, ServingConfig
from lifecycle.models import load_task
from lifecycle.params import Params, load_params
from lifecycle.requestlog import RequestLog
from lifecycle.samples import InvalidInput
from lifecycle.serving import Answer, Predictor
from lifecycle.tasks import Task, get_task

logger = logging.getLogger(__name__)

PARAMS_ENV = "LIFECYCLE_PARAMS"
RETRIED = "connection recycled"  # marks the log line of a retried model call
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file, allowed on top of max_upload_mb
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass
class Endpoint:
    """What the public service holds for one task: the task as its model was trained, and where to log."""

    task: Task
    tag: str
    model_attr: str  # the attribute of the public service holding the task's model-service dependency
    log: RequestLog


def model_service(task_name: str, stored: registry.StoredModel, cfg: ServeConfig) -> Any:
    """A BentoML service for one stored model with one batchable API, `predict(list of prepared inputs)`."""

    def __init__(self: Any) -> None:
        ref = self.stored_model  # resolved from the store, or from the Bento's own models when served from a Bento
        self.predictor = Predictor.from_file(Path(ref.path) / registry.MODEL_FILE, str(ref.tag), cfg.device)

    def predict(self: Any, inputs: list[Any]) -> list[dict[str, Any]]:
        return [asdict(answer) for answer in self.predictor.infer([on_wire(x, back=True) for x in inputs])]

    if cfg.max_batch_size > 1:
        api = bentoml.api(batchable=True, max_batch_size=cfg.max_batch_size, max_latency_ms=cfg.max_latency_ms)
    else:  # BentoML's batchable APIs need a batch size above 1; one at a time is a plain API
        api = bentoml.api()
    attrs = {"stored_model": bentoml.models.BentoModel(stored.tag), "__init__": __init__, "predict": api(predict)}
    cls = type(f"{task_name.capitalize()}Model", (), attrs)
    return bentoml.service(
        name=f"lifecycle-{task_name}-model", workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}}
    )(cls)  # the public service logs each request


def served_models(params: Params) -> dict[str, registry.StoredModel]:
    """The production model of every task in params.yaml; tasks without one are left out with a warning."""
    found = {}
    for name in params.tasks:
        stored = registry.production(name)
        if stored is None:
            logger.warning(
                "task %s has no production model in the store; /%s is not served", name, get_task(name).endpoint
            )
        else:
            found[name] = stored
    if not found:
        raise RuntimeError(
            f"no production model for any task in params.yaml ({', '.join(params.tasks)}) in the BentoML store "
            f"{os.environ.get('BENTOML_HOME', '~/bentoml')}: run `make run` (or `lifecycle promote --task T`) first"
        )
    return found


def build_service(params_path: Path) -> Any:
    """The public service: one route per served task, each task's model service as a dependency."""
    params = load_params(params_path)
    stored = served_models(params)
    dependencies = {
        f"{name}_model": bentoml.depends(model_service(name, s, params.task(name).serve)) for name, s in stored.items()
    }
    routes = [Route(f"/{get_task(name).endpoint}", _route(name), methods=["POST"]) for name in stored]
    app = Starlette(routes=routes)

    def __init__(self: Any) -> None:
        import torch

        torch.set_num_threads(1)  # decoding and resizing one input; the model services own the cores
        self.serving = params.serving
        self.monitoring = params.monitoring
        self.sampler = random.Random()
        self.endpoints = {
            name: Endpoint(
                load_task(s.model_file),
                s.tag,
                f"{name}_model",
                RequestLog(
                    params.serving.log_dir, name, int(params.serving.log_max_mb * 2**20), params.serving.log_backups
                ),
            )
            for name, s in stored.items()
        }

    cls = type("Lifecycle", (), {**dependencies, "__init__": __init__})
    return bentoml.service(name="lifecycle", workers=1, traffic={"timeout": 60})(bentoml.asgi_app(app)(cls))


def _route(task_name: str) -> Any:
    async def answer(request: Request) -> JSONResponse:
        service = bentoml.get_current_service()
        return await respond(service, service.endpoints[task_name], request)

    answer.__name__ = f"answer_{task_name}"
    return answer


async def respond(service: Any, endpoint: Endpoint, request: Request) -> JSONResponse:
    started = time.perf_counter()
    request_id = _request_id(request)
    headers = {"X-Request-ID": request_id}
    try:
        data, filename = await read_upload(request, endpoint.task.codec.input_field, service.serving)
        raw, prepared = await run_in_threadpool(decode_and_prepare, endpoint.task, data)
        answer = await ask_model(getattr(service, endpoint.model_attr), prepared)
        answered = endpoint.task.outputs.answer(answer.prediction, dict(request.query_params))
        body = {**answered, "model": endpoint.tag}
    except InvalidInput as e:
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)
    except bentoml.exceptions.ServiceUnavailable as e:
        return JSONResponse({"error": f"overloaded, try again: {e}"}, status_code=503, headers=headers)
    except Exception:
        logger.exception("request %s to /%s failed", request_id, endpoint.task.spec.endpoint)
        return JSONResponse(
            {"error": f"internal error (request {request_id}); see the server log"}, status_code=500, headers=headers
        )
    latency_ms = (time.perf_counter() - started) * 1000
    await run_in_threadpool(log_request, endpoint, request_id, raw, Answer(answered, answer.embedding), latency_ms)
    capture = service.monitoring
    if capture.capture_inputs and service.sampler.random() < capture.capture_rate:
        await run_in_threadpool(capture_input, capture.capture_dir / endpoint.task.name, request_id, filename, data)
    return JSONResponse(body, headers=headers)


def decode_and_prepare(task: Task, data: bytes) -> tuple[Any, Any]:
    raw = task.codec.decode(data)
    return raw, on_wire(task.codec.prepare(raw))


def on_wire(obj: Any, back: bool = False) -> Any:
    """Tensors as numpy arrays between the services (pickling a tensor costs a torch.save per call), and back."""
    import torch

    if isinstance(obj, (list, tuple)):
        return type(obj)(on_wire(v, back) for v in obj)
    if isinstance(obj, dict):
        return {k: on_wire(v, back) for k, v in obj.items()}
    if back:
        return torch.from_numpy(obj) if type(obj).__module__ == "numpy" else obj
    return obj.numpy() if isinstance(obj, torch.Tensor) else obj


async def ask_model(model: Any, prepared: Any, attempts: int = 3) -> Answer:
    """One input through the model service's batchable `predict`. BentoML's client closes its HTTP session every
    100 calls, cutting the calls still in flight on it ("Server disconnected"); those are retried on the new one."""
    import aiohttp

    for _ in range(attempts - 1):
        try:
            return Answer(**(await model.to_async.predict([prepared]))[0])
        except aiohttp.ClientConnectionError as e:
            # the model service may already have run the input: the retry runs it again (counted in its metrics)
            logger.warning("%s: model call retried: %s", RETRIED, e)
            continue
    return Answer(**(await model.to_async.predict([prepared]))[0])


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


def log_request(endpoint: Endpoint, request_id: str, raw: Any, answer: Answer, latency_ms: float) -> None:
    """One line for monitoring; any failure (descriptors included) is logged by RequestLog, never raised."""
    try:
        record = {
            "timestamp": datetime.now(UTC).isoformat(),
            "request_id": request_id,
            "task": endpoint.task.name,
            "model": endpoint.tag,
            "descriptors": endpoint.task.monitoring.descriptors(raw),
            "prediction": answer.prediction,
            "confidence": endpoint.task.outputs.confidence(answer.prediction),
            "embedding": answer.embedding,
            "latency_ms": round(latency_ms, 3),
        }
    except Exception:  # noqa: BLE001 - monitoring must never fail an answered request
        logger.exception("could not describe request %s for the request log", request_id)
        return
    endpoint.log.write(record)


def capture_input(directory: Path, request_id: str, filename: str, data: bytes) -> None:
    """Keep a production input for labeling (`lifecycle label`); a failure is logged, never raised."""
    suffix = Path(filename).suffix.lower()
    try:
        write_bytes(directory / f"{request_id}{suffix if suffix[1:].isalnum() else ''}", data)
    except OSError:
        logger.exception("could not capture the input of request %s in %s", request_id, directory)


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def __getattr__(name: str) -> Any:
    """`Lifecycle`, the public service, built when first asked for (by `bentoml serve`), not at import."""
    if name != "Lifecycle":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    service = build_service(Path(os.environ.get(PARAMS_ENV, "params.yaml")))
    globals()["Lifecycle"] = service
    return service
