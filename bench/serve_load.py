"""Serving load: N concurrent clients for T seconds a server, under one load generator in one run, against
  - the baseline a user would write instead: a minimal hand-written Starlette app on uvicorn, one process, the same
    decode, prepare and batched `Predictor.infer`, with a small asyncio micro-batcher (`baseline_app` below);
  - `bentoml serve` of the project's service with adaptive batching as params.yaml sets it,
  - and with `max_batch_size: 1`;
plus the raw batched `Predictor.infer` of the same model in-process (the limit). The three servers run side by side
and take turns under the load (`--rounds`), so that a drift in the machine's speed weighs on each alike. Prints
requests/s, p50/p95/p99 latency and the ratios against their targets.

    make bench-serve      # after `make run`; or: python bench/serve_load.py --clients 32 --seconds 30 --rounds 3
    python bench/serve_load.py --width 64 --input-size 64   # an untrained, heavier copy of the model instead
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lifecycle import registry
from lifecycle.data import rows_of_split
from lifecycle.params import load_params
from lifecycle.paths import TaskPaths
from lifecycle.runtime import configure_environment
from lifecycle.serving import Predictor


@dataclass
class Load:
    name: str
    requests_per_s: float
    latencies_ms: list[float]
    errors: Counter[int]  # non-200 answers by status

    def percentile(self, q: float) -> float:
        return (
            statistics.quantiles(self.latencies_ms, n=100)[int(q) - 1] if len(self.latencies_ms) > 1 else float("nan")
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drive(
    url: str, field: str, inputs: list[bytes], clients: int, seconds: float
) -> tuple[list[float], Counter[int]]:
    """`clients` loops, each posting one input after another until the deadline; (latencies of 200s, non-200
    answers by status)."""
    import aiohttp

    latencies: list[float] = []
    errors: Counter[int] = Counter()
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        i = offset
        async with aiohttp.ClientSession() as session:
            while time.perf_counter() < deadline:
                form = aiohttp.FormData()
                form.add_field(field, inputs[i % len(inputs)], filename="input.png", content_type="image/png")
                start = time.perf_counter()
                async with session.post(url, data=form) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append((time.perf_counter() - start) * 1000)
                    else:
                        errors[response.status] += 1
                i += clients

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, errors


def baseline_app(model_file: Path, max_batch_size: int) -> Any:
    """What a user would write: one route, decode and prepare in a thread, and a micro-batcher that runs whatever
    queued while the previous batch ran."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    predictor = Predictor.from_file(model_file, "baseline", "auto")
    codec, outputs = predictor.task.codec, predictor.task.outputs
    queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()

    async def batcher() -> None:
        while True:
            waiting = [await queue.get()]
            while len(waiting) < max_batch_size and not queue.empty():
                waiting.append(queue.get_nowait())
            answers = await asyncio.to_thread(predictor.infer, [prepared for prepared, _ in waiting])
            for (_, future), answer in zip(waiting, answers, strict=True):
                future.set_result(answer)

    async def predict(request: Request) -> JSONResponse:
        form = await request.form()
        data = await form[codec.input_field].read()  # type: ignore[union-attr]
        prepared = await asyncio.to_thread(lambda: codec.prepare(codec.decode(data)))
        future = asyncio.get_running_loop().create_future()
        await queue.put((prepared, future))
        answer = await future
        return JSONResponse({**outputs.answer(answer.prediction, {}), "model": "baseline"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher())
        yield
        task.cancel()

    return Starlette(routes=[Route(f"/{predictor.task.spec.endpoint}", predict, methods=["POST"])], lifespan=lifespan)


def serve_baseline(port: int, model_file: Path, max_batch_size: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(model_file, max_batch_size), host="127.0.0.1", port=port, log_level="warning")


def baseline_cmd(model_file: Path, max_batch_size: int) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        __file__,
        "--serve-baseline",
        str(port),
        "--model-file",
        str(model_file),
        "--max-batch-size",
        str(max_batch_size),
    ]


def bentoml_cmd(port: int) -> list[str]:
    bentoml = str(Path(sys.executable).parent / "bentoml")
    return [bentoml, "serve", "lifecycle.service:Lifecycle", "--host", "127.0.0.1", "--port", str(port)]


@contextlib.contextmanager
def running_server(cmd: Callable[[int], list[str]], root: Path, params: dict, endpoint: str) -> Iterator[str]:
    """A server started by `cmd(port)` with `params` as its params.yaml (request logs in a temporary folder),
    stopped on exit; yields its endpoint's URL once it answers."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump({**params, "serving": {**params.get("serving", {}), "log_dir": tmp}}))
        env = {**os.environ, "LIFECYCLE_PARAMS": str(params_file)}
        proc = subprocess.Popen(
            cmd(port), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", f"/{endpoint}", proc)
            yield f"http://127.0.0.1:{port}/{endpoint}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def interleaved_loads(
    urls: dict[str, str], field: str, inputs: list[bytes], clients: int, seconds: float, warmup: float, rounds: int
) -> list[Load]:
    """Each server under the same load for `seconds` in all, in `rounds` turns alternating between the servers
    (forwards, then backwards: A B C C B A ...), so that a machine whose speed drifts during the run (other
    tenants, clock boost) weighs on every server alike. One server at a time is loaded; the others idle."""
    for url in urls.values():
        asyncio.run(drive(url, field, inputs, clients, warmup))  # caches, and the batchers' latency model
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    errors: dict[str, Counter[int]] = {name: Counter() for name in urls}
    elapsed = dict.fromkeys(urls, 0.0)
    for turn in range(rounds):
        for name in list(urls) if turn % 2 == 0 else list(reversed(urls)):
            started = time.perf_counter()
            answered, refused = asyncio.run(drive(urls[name], field, inputs, clients, seconds / rounds))
            elapsed[name] += time.perf_counter() - started
            latencies[name] += answered
            errors[name] += refused
    return [Load(name, len(latencies[name]) / elapsed[name], latencies[name], errors[name]) for name in urls]


def wait_ready(url: str, path: str, proc: subprocess.Popen) -> None:
    """Until `path` answers at all (a GET: 405 from a route that takes POST), within 120 s."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; run it by hand to see why")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server was not ready within 120 s")


def raw_throughput(
    stored: registry.StoredModel, device: str, inputs: list[bytes], batch_size: int, seconds: float
) -> float:
    """Inputs/s of `Predictor.infer` on prepared batches of `batch_size`, in this process."""
    predictor = Predictor.from_store(stored, device)
    codec = predictor.task.codec
    prepared = [codec.prepare(codec.decode(data)) for data in inputs]
    batches = [
        (prepared * (batch_size // len(prepared) + 1))[i : i + batch_size] for i in range(0, batch_size * 4, batch_size)
    ]
    predictor.infer(batches[0])  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in batches:
            predictor.infer(batch)
            done += len(batch)
    return done / (time.perf_counter() - start)


def store_scaled_model(task_name: str, params_file: Path, overrides: dict) -> None:
    """An untrained copy of the task's model with `overrides` (e.g. model.width), as the production model of a
    temporary BentoML store (throughput does not depend on the weights)."""
    from lifecycle.config import with_overrides
    from lifecycle.models import save_model
    from lifecycle.tasks import build_task

    home = Path(tempfile.mkdtemp(prefix="bench-bentoml-"))
    os.environ["BENTOML_HOME"] = str(home)  # before anything imports bentoml
    cfg = with_overrides(load_params(params_file, only=[task_name]).task(task_name), overrides)
    # a scaled value may lie outside the tuning search space, which the stored config is checked against
    space = {k: v for k, v in cfg.tune.space.items() if k not in overrides}
    task = build_task(task_name, cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"space": space})}))
    model_file = home / "scaled.pt"
    save_model(model_file, task, task.network.build().state_dict(), {"bench": f"untrained, {overrides}"})
    stored = registry.store_candidate(task_name, model_file, {})
    registry.make_production(task_name, stored.tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="classify")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30, help="of load on each server, in all its turns")
    parser.add_argument("--rounds", type=int, default=3, help="turns alternating between the servers")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--width", type=int, help="serve an untrained copy of the model with this model.width")
    parser.add_argument("--input-size", type=int, help="... and this model.input_size (classify)")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--model-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.model_file, args.max_batch_size)
        return
    configure_environment(Path.cwd())  # the project's store (.bentoml), as make and the CLI use it
    scaled = {k: v for k, v in (("model.width", args.width), ("model.input_size", args.input_size)) if v}
    if scaled:
        store_scaled_model(args.task, args.params, scaled)

    root = Path.cwd()
    raw_params = yaml.safe_load(args.params.read_text())
    cfg = load_params(args.params).task(args.task)
    stored = registry.production(args.task)
    if stored is None:
        raise SystemExit(f"no production model for {args.task}: run `make run` first")
    from lifecycle.tasks import build_task, get_task

    spec = get_task(args.task)
    field = build_task(args.task, cfg).codec.input_field
    rows = rows_of_split(TaskPaths(root, args.task).split_manifest, "test")[:256]
    inputs = [(TaskPaths(root, args.task).raw / row["path"]).read_bytes() for row in rows]
    batch = cfg.serve.max_batch_size
    print(
        f"{args.task}: {stored.tag}, {args.clients} clients x {args.seconds:g} s in {args.rounds} turns a server, "
        f"max_batch_size {batch}, max_latency_ms {cfg.serve.max_latency_ms}, {os.cpu_count()} CPUs"
    )

    def with_batch(size: int) -> dict:
        task_params = {
            **raw_params[args.task],
            "serve": {**raw_params[args.task].get("serve", {}), "max_batch_size": size},
        }
        return {**raw_params, "tasks": [args.task], args.task: task_params}

    servers = {
        f"hand-written baseline (max {batch})": (baseline_cmd(stored.model_file, batch), with_batch(batch)),
        f"service, adaptive (max {batch})": (bentoml_cmd, with_batch(batch)),
        "service, max_batch_size 1": (bentoml_cmd, with_batch(1)),
    }
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(running_server(cmd, root, params, spec.endpoint))
            for name, (cmd, params) in servers.items()
        }
        baseline, batched, single = interleaved_loads(
            urls, field, inputs, args.clients, args.seconds, args.warmup, args.rounds
        )
    raw = raw_throughput(stored, cfg.serve.device, inputs, batch, min(args.seconds, 10))
    raw_single = raw_throughput(stored, cfg.serve.device, inputs, 1, min(args.seconds, 10))

    print(f"\n{'configuration':<34} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  non-200 (status: count)")
    for load in (baseline, batched, single):
        print(
            f"{load.name:<34} {load.requests_per_s:>8.1f} {load.percentile(50):>8.1f} {load.percentile(95):>8.1f} "
            f"{load.percentile(99):>8.1f}  {dict(sorted(load.errors.items())) or 0}"
        )
    print(f"{f'raw Predictor.infer, batch {batch}':<34} {raw:>8.1f}  (inputs/s, in-process)")
    print(f"{'raw Predictor.infer, batch 1':<34} {raw_single:>8.1f}  (inputs/s, in-process)")
    gain = raw / raw_single
    print(f"\nratios (targets on 2 CPU cores at 32 clients), {os.cpu_count()} CPUs here")
    print(
        f"  service / baseline requests/s          : {batched.requests_per_s / baseline.requests_per_s:6.2f}x  (>= 0.7)"
    )
    print(
        f"  service / baseline p95                 : {batched.percentile(95) / baseline.percentile(95):6.2f}x  (<= 1.1)"
    )
    print(
        f"  batching / max_batch_size 1 requests/s : {batched.requests_per_s / single.requests_per_s:6.2f}x  ", end=""
    )
    print("(>= 2)" if gain >= 5 else "(no target: the model gains under 5x from batching)")
    print(f"  raw batch {batch} / raw batch 1 (what batching can gain in the model itself): {gain:.2f}x")


if __name__ == "__main__":
    main()
