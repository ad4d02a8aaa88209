"""The BentoML service: `POST /<endpoint>` for every task in params.yaml that has a production model.

    bentoml serve lifecycle.service:Lifecycle --host 127.0.0.1 --port 3000      (or `make serve`)

One hop per process (`serving.workers` processes share the port): the service parses and checks the upload, decodes it with the task's own `decode` and
`prepare` (the evaluation transform) in a worker thread, and hands it to the task's micro-batcher, which merges
the requests that arrive while a batch runs into the next `Predictor.infer` call (adaptive batching); then it
answers and logs the request for monitoring. There is no internal HTTP call to fail or hang: a request beyond
capacity (it would queue over `<task>.serve.max_latency_ms`) is answered 503 with Retry-After at once.

Every `serving.reload_seconds` the service looks for a new production model in the store (a promotion or a
rollback) and swaps it in: requests already holding the old model finish on it, later ones get the new one,
decoded by its own stored config; answers and the request log name the model that answered.

The routes are our own app (`TaskRoutes`) rather than `@bentoml.api` methods so that every bad input gets a
4xx JSON answer of our making (BentoML's own multipart parsing would also fetch URLs given in place of files). BentoML adds
/healthz, /livez, /readyz and Prometheus /metrics; `LifecycleService` adds the routes to BentoML's OpenAPI
document (/docs.json, the page at /) and to the schema its clients read (/schema.json), so that
`bentoml.SyncHTTPClient(url).classify(image=Path("digit.png"))` works. params.yaml is read from the working directory, or from
$LIFECYCLE_PARAMS.

Importing this module builds nothing: `Lifecycle` is built on first access (PEP 562), which is when `bentoml
serve lifecycle.service:Lifecycle` asks for it.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lifecycle import capture, registry
from lifecycle.apidocs import client_route, openapi_path
from lifecycle.operations import ServeConfig
from lifecycle.params import Params, load_params
from lifecycle.requestlog import RequestLog
from lifecycle.samples import InvalidInput
from lifecycle.serving import Answer, MicroBatcher, Overloaded, Predictor
from lifecycle.tasks import Task, build_task, get_task
from lifecycle.webserver import (
    RequestIds,
    freeze_startup_objects,
    json_response,
    read_upload,
    request_id_of,
    use_answered_timeout,
)

logger = logging.getLogger(__name__)

PARAMS_ENV = "LIFECYCLE_PARAMS"


@dataclass(frozen=True)
class Served:
    """One model answering a task: its task as the model was trained (decoding follows it), tag and batcher."""

    task: Task
    tag: str
    batcher: MicroBatcher


@dataclass
class Endpoint:
    """What the public service holds for one task: the model answering now (swapped on promotion), and its log."""

    name: str
    served: Served
    cfg: ServeConfig
    log: RequestLog


def load_served(model_file: Path, tag: str, cfg: ServeConfig) -> Served:
    predictor = Predictor.from_file(model_file, tag, cfg.device)
    return Served(predictor.task, tag, MicroBatcher(predictor, cfg.max_batch_size, cfg.max_latency_ms))


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
    """The public service: one route per served task; the production models as the service's models (so that
    `bentoml build` packages them), loaded into the process when it starts."""
    params = load_params(params_path)
    stored = served_models(params)
    use_answered_timeout()
    models = {f"{name}_model": bentoml.models.BentoModel(s.tag) for name, s in stored.items()}
    app = TaskRoutes(stored)

    def __init__(self: Any) -> None:
        self.serving = params.serving
        self.monitoring = params.monitoring
        self.sampler = random.Random()
        self.request_ids = RequestIds()
        # decoding and preparation hold the GIL for much of their time, so more threads than cores only contend for
        # it; a hop to Starlette's pool (anyio, up to 40 threads) costs twice as much under 32 concurrent requests
        self.prepare_pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="prepare")
        self.endpoints = {}
        for name in stored:
            ref = getattr(self, f"{name}_model")  # from the store, or from the Bento's own models in a Bento
            cfg = params.task(name).serve
            self.endpoints[name] = Endpoint(
                name,
                load_served(Path(ref.path) / registry.MODEL_FILE, str(ref.tag), cfg),
                cfg,
                RequestLog(
                    params.serving.log_dir, name, int(params.serving.log_max_mb * 2**20), params.serving.log_backups
                ),
            )

    async def start_watching(self: Any) -> None:
        freeze_startup_objects()
        if self.serving.reload_seconds > 0:
            self.watcher = asyncio.get_running_loop().create_task(watch_production(self))

    async def drain(self: Any) -> None:
        await finish_accepted(self)

    attrs = {
        **models,
        "__init__": __init__,
        "start_watching": bentoml.on_startup(start_watching),
        "drain": bentoml.on_shutdown(drain),
    }
    cls = type("Lifecycle", (), attrs)
    service = bentoml.service(
        name="lifecycle",
        service_class=LifecycleService,
        workers=params.serving.workers,
        traffic={"timeout": 60},
        logging={"access": {"enabled": params.serving.access_log}},  # a line per request costs CPU per request
        **({} if params.serving.trace_requests else {"tracing": {"excluded_urls": untraced_routes(stored)}}),
    )(bentoml.asgi_app(app)(cls))
    service.tasks = tuple(build_task(name, params.task(name)) for name in stored)
    return service


def untraced_routes(tasks: Iterable[str]) -> list[str]:
    """Patterns of the task routes' URLs for OpenTelemetry's exclude list (matched anywhere in the full URL)."""
    return [rf"/{re.escape(get_task(name).endpoint)}(\?|$)" for name in tasks]


class LifecycleService(bentoml.Service[Any]):
    """BentoML's service, whose OpenAPI document (/docs.json) and client schema (/schema.json, what bentoml's
    clients read to find endpoints) also describe the task routes, which BentoML's API registry does not see."""

    tasks: tuple[Task, ...] = ()  # the served tasks, as params.yaml configures them

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = super().schema()
        schema["routes"] = [*schema["routes"], *(client_route(task) for task in self.tasks)]
        return schema

    @property
    def openapi_spec(self) -> Any:
        """BentoML's document with the task paths added. It is rebuilt through the document class's own public
        round trip (`asdict`, then `from_yaml_file` of it as JSON, which is YAML), so that no private BentoML name
        is needed to build path objects. Unescaped: YAML reads an escaped surrogate pair as two lone surrogates."""
        spec = super().openapi_spec
        document = spec.asdict()
        document["paths"].update({f"/{task.spec.endpoint}": openapi_path(task) for task in self.tasks})
        return type(spec).from_yaml_file(io.StringIO(json.dumps(document, ensure_ascii=False)))


async def watch_production(service: Any) -> None:
    """Swap in each task's production model when the store's changes (promotion or rollback), forever."""
    while True:
        await asyncio.sleep(service.serving.reload_seconds)
        for endpoint in service.endpoints.values():
            try:
                await swap_if_changed(endpoint)
            except Exception:  # noqa: BLE001 - the current model keeps answering; the next look tries again
                logger.exception("could not swap in the production model of %s", endpoint.name)


async def finish_accepted(service: Any) -> None:
    """At shutdown (SIGTERM: the server has stopped accepting): answer what the batchers hold, for at most
    `serving.shutdown_grace_seconds`, then flush and close the request logs."""
    if watcher := getattr(service, "watcher", None):
        watcher.cancel()
    deadline = time.monotonic() + service.serving.shutdown_grace_seconds
    endpoints = service.endpoints.values()
    while any(e.served.batcher.pending() for e in endpoints) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for endpoint in endpoints:
        endpoint.log.close()


async def swap_if_changed(endpoint: Endpoint) -> None:
    current = await run_in_threadpool(registry.production, endpoint.name)
    if current is None or current.tag == endpoint.served.tag:
        return
    served = await run_in_threadpool(load_served, current.model_file, current.tag, endpoint.cfg)
    previous, endpoint.served = endpoint.served, served
    previous.batcher.retire()  # after answering the requests that already hold it
    logger.info("/%s: model %s swapped in for %s", served.task.spec.endpoint, served.tag, previous.tag)
    freeze_startup_objects()


class TaskRoutes(Starlette):
    """The task endpoints, which BentoML mounts at /: `POST /<endpoint>` is answered by its task and another method
    there is a JSON 405. A Starlette app, because BentoML's mount hands a Starlette app only the paths its routes
    match (any other app would get every path, / and /docs.json included); but called without Starlette's
    middleware stack and second router, which cost about 4 % of the service's CPU per request under load: BentoML's
    app in front already routes, times out and catches errors."""

    def __init__(self, tasks: Iterable[str]) -> None:
        self.handlers = {f"/{get_task(name).endpoint}": answer_for(name) for name in tasks}
        super().__init__(routes=[Route(path, handler, methods=["POST"]) for path, handler in self.handlers.items()])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # BentoML's app handles the lifespan; nothing else is served here
            return
        path, root = scope["path"], scope.get("root_path", "")
        handler = self.handlers.get(path[len(root) :] if root and path.startswith(root) else path)
        if handler is None:  # not sent here by BentoML's mount; answered all the same
            response = json_response({"error": f"no endpoint at {path}"}, 404)
        elif scope["method"] != "POST":
            response = json_response(
                {"error": f"{scope['method']} is not allowed here; send POST"}, 405, {"Allow": "POST"}
            )
        else:
            response = await handler(Request(scope, receive))
        await response(scope, receive, send)


def answer_for(task_name: str) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        service = bentoml.get_current_service()
        return await respond(service, service.endpoints[task_name], request)

    answer.__name__ = f"answer_{task_name}"
    return answer


async def respond(service: Any, endpoint: Endpoint, request: Request) -> Response:
    started = time.perf_counter()
    request_id = request_id_of(request, service.request_ids)
    headers = {"X-Request-ID": request_id}
    served = endpoint.served  # this request is answered by this model, even if another is swapped in meanwhile
    try:
        data, filename = await read_upload(request, served.task.codec.input_field, service.serving)
        decoded, prepared = await asyncio.get_running_loop().run_in_executor(
            service.prepare_pool, decode_and_prepare, served.task, data
        )
        answer, batch = await served.batcher.infer(prepared, decoded)
        answered = served.task.outputs.answer(answer.prediction, dict(request.query_params))
        body = {**answered, "model": served.tag}
    except InvalidInput as e:
        return json_response({"error": str(e)}, e.status, headers)
    except Overloaded as e:
        return json_response(
            {"error": f"overloaded, try again: {e}"}, 503, {**headers, "Retry-After": str(e.retry_after)}
        )
    except Exception:
        logger.exception("request %s to /%s failed", request_id, served.task.spec.endpoint)
        return json_response({"error": f"internal error (request {request_id}); see the server log"}, 500, headers)
    latency_ms = (time.perf_counter() - started) * 1000
    log_request(endpoint.log, served, request_id, replace(answer, prediction=answered), batch, latency_ms)
    keep = service.monitoring
    if keep.capture_inputs and service.sampler.random() < keep.capture_rate:
        directory = keep.capture_dir / served.task.name
        await run_in_threadpool(capture_input, directory, request_id, filename, data, keep.capture_max_mb)
    return json_response(body, headers=headers)


def decode_and_prepare(task: Task, data: bytes) -> tuple[Any, Any]:
    """The decoded input (its monitoring descriptors are computed with its batch) and the model's prepared input:
    one worker-thread hop for the CPU work before the model."""
    decoded = task.codec.decode(data)
    return decoded, task.codec.prepare(decoded)


def log_request(
    log: RequestLog,
    served: Served,
    request_id: str,
    answer: Answer,
    batch: int,
    latency_ms: float,
) -> None:
    """One line for monitoring, naming the model that answered and the size of the batch it answered in. Written
    from the event loop: appending a line costs less than a hop to a worker thread; a request whose descriptors
    failed is not logged (the monitor could not compare it), and a failed write is logged by RequestLog, never
    raised."""
    if answer.descriptors is None:
        return
    try:
        confidence = served.task.outputs.confidence(answer.prediction)
    except Exception:  # noqa: BLE001 - monitoring must never fail an answered request
        logger.exception("could not score the confidence of request %s for the request log", request_id)
        return
    log.write(
        {
            "timestamp": datetime.now(UTC).isoformat(),
            "request_id": request_id,
            "task": served.task.name,
            "model": served.tag,
            "descriptors": answer.descriptors,
            "prediction": answer.prediction,
            "confidence": confidence,
            "embedding": answer.embedding,
            "batch": batch,
            "latency_ms": round(latency_ms, 3),
        }
    )


def capture_input(directory: Path, request_id: str, filename: str, data: bytes, max_mb: float) -> None:
    """Keep a production input for labeling (`lifecycle label`) within the capture bound; a failure is logged,
    never raised."""
    try:
        capture.capture_input(directory, request_id, filename, data, max_mb)
    except OSError:
        logger.exception("could not capture the input of request %s in %s", request_id, directory)


def __getattr__(name: str) -> Any:
    """`Lifecycle`, the public service, built when first asked for (by `bentoml serve`), not at import."""
    if name != "Lifecycle":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    service = build_service(Path(os.environ.get(PARAMS_ENV, "params.yaml")))
    globals()["Lifecycle"] = service
    return service
