"""Soak: C clients for T seconds over every endpoint of a running service, with real test-split inputs. Prints the
requests, answers/s, p50/p95/p99 and maximum latency per endpoint, and every non-200 answer by status and
endpoint. A production service answers all of them 200 (a 503 counts too).

    make serve &   python bench/soak.py --url http://127.0.0.1:3000 --clients 32 --seconds 600

Only 127.0.0.1 is accepted. Every request has a timeout (a hang is reported as status 'timeout'), and every
client loop ends at the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from lifecycle.data import rows_of_split
from lifecycle.params import load_params
from lifecycle.paths import TaskPaths
from lifecycle.tasks import build_task, get_task


@dataclass
class Target:
    endpoint: str
    field: str
    inputs: list[bytes]


@dataclass
class Soak:
    seconds: float
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, status) -> count

    def non_200(self) -> int:
        return sum(self.failures.values())

    def report(self) -> str:
        lines = [
            f"{'endpoint':<14} {'requests':>9} {'ok/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        ]
        for endpoint, latencies in sorted(self.latencies_ms.items()):
            done = len(latencies) + sum(n for (e, _), n in self.failures.items() if e == endpoint)
            cuts = (
                statistics.quantiles(latencies, n=100, method="inclusive")
                if len(latencies) > 1
                else [float("nan")] * 99
            )
            lines.append(
                f"/{endpoint:<13} {done:>9} {len(latencies) / self.seconds:>8.1f} {cuts[49]:>8.1f} {cuts[94]:>8.1f} "
                f"{cuts[98]:>8.1f} {max(latencies, default=float('nan')):>8.1f}"
            )
        lines.append(f"non-200 answers: {self.non_200()}")
        lines += [f"  /{endpoint} {status}: {n}" for (endpoint, status), n in sorted(self.failures.items())]
        return "\n".join(lines)


def targets(root: Path, params_file: Path, per_task: int = 64) -> list[Target]:
    """Every task of params.yaml with a test split under `root`: its endpoint, upload field and test inputs."""
    params = load_params(params_file)
    found = []
    for name in params.tasks:
        paths = TaskPaths(root, name)
        if not paths.split_manifest.exists():
            continue
        rows = rows_of_split(paths.split_manifest, "test")[:per_task]
        field_name = build_task(name, params.task(name)).codec.input_field
        found.append(Target(get_task(name).endpoint, field_name, [(paths.raw / r["path"]).read_bytes() for r in rows]))
    return found


async def soak(url: str, endpoints: list[Target], clients: int, seconds: float, timeout_s: float = 30) -> Soak:
    """`clients` loops, client k posting to endpoint k mod n, one input after another, until the deadline."""
    import aiohttp

    if urlparse(url).hostname != "127.0.0.1":
        raise SystemExit(f"soak only loads a local service (127.0.0.1), not {url}")
    result = Soak(seconds, {t.endpoint: [] for t in endpoints})
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        target = endpoints[k % len(endpoints)]
        i = k
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            while time.perf_counter() < deadline:
                form = aiohttp.FormData()
                form.add_field(target.field, target.inputs[i % len(target.inputs)], filename=f"input-{i}")
                i += clients
                started = time.perf_counter()
                try:
                    async with session.post(f"{url}/{target.endpoint}", data=form) as response:
                        await response.read()
                        status = str(response.status)
                except TimeoutError:
                    status = "timeout"
                except aiohttp.ClientError as e:
                    status = type(e).__name__
                if status == "200":
                    result.latencies_ms[target.endpoint].append((time.perf_counter() - started) * 1000)
                else:
                    result.failures[(target.endpoint, status)] += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project whose test splits are sent")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    endpoints = targets(args.root, args.params)
    if not endpoints:
        raise SystemExit(f"no task has a test split under {args.root}: run `make run` first")
    print(f"{args.clients} clients x {args.seconds:g} s over " + ", ".join(f"/{t.endpoint}" for t in endpoints))
    print(asyncio.run(soak(args.url.rstrip("/"), endpoints, args.clients, args.seconds)).report())


if __name__ == "__main__":
    main()
