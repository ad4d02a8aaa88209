"""Drift decision cost: time and peak memory of `lifecycle.monitoring.monitor` on request logs of 100k and 1M rows,
against the same decision on the whole window unsampled (the baseline: what DataDriftPreset over every logged row
costs). Each measurement runs in a fresh process, so its peak RSS is its own.

    python bench/drift.py                         # 100k and 1M rows; baseline on 100k
    python bench/drift.py --rows 200000 --baseline-rows 50000

The log is synthetic but shaped like the service's (descriptors, prediction, confidence, 8-d embedding per line);
its second half drifts (brighter inputs), so the decision has something to find.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

TASK = "classify"
CLASSES = [str(d) for d in range(10)]


def rows(n: int, rng: np.random.Generator, shift: float) -> dict[str, np.ndarray]:
    return {
        "intensity_mean": rng.normal(0.13 + shift, 0.03, n),
        "intensity_std": rng.normal(0.30, 0.03, n),
        "sharpness": rng.gamma(4.0, 0.03, n),
        "confidence": rng.beta(20, 1, n),
        "label": rng.choice(CLASSES, n),
        "embedding": rng.normal(shift * 5, 1.0, (n, 8)),
    }


def prepare(workdir: Path, sizes: list[int]) -> str:
    """A stored untrained model with a synthetic reference, and one request log per size; returns the model tag."""
    import pandas as pd

    from lifecycle import registry
    from lifecycle.models import save_model
    from lifecycle.monitoring import REFERENCE, write_reference
    from lifecycle.params import parse_params
    from lifecycle.tasks import build_task

    task = build_task(TASK, parse_params({"tasks": [TASK], TASK: {}}).task(TASK))
    save_model(workdir / "model.pt", task, task.network.build().state_dict(), {"bench": "untrained"})
    rng = np.random.default_rng(0)
    ref = rows(500, rng, 0.0)
    frame = pd.DataFrame(
        {
            "input.width": 28.0,
            "input.height": 28.0,
            "input.intensity_mean": ref["intensity_mean"],
            "input.intensity_std": ref["intensity_std"],
            "input.sharpness": ref["sharpness"],
            "prediction.predicted_label": ref["label"],
            "prediction.confidence": ref["confidence"],
            **{f"embedding.{i}": ref["embedding"][:, i] for i in range(8)},
        }
    )
    write_reference(frame, workdir / REFERENCE)
    stored = registry.store_candidate(TASK, workdir / "model.pt", {}, (workdir / REFERENCE,))
    registry.make_production(TASK, stored.tag)
    for n in sizes:
        write_log(workdir / f"logs-{n}" / TASK / "requests-1.jsonl", n, stored.tag, rng)
    return stored.tag


def write_log(path: Path, n: int, tag: str, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with path.open("w") as f:
        for half, shift in ((0, 0.0), (1, 0.05)):
            r = rows(n // 2, rng, shift)
            for i in range(n // 2):
                stamp = (start + timedelta(milliseconds=half * n // 2 + i)).isoformat()
                record = {
                    "timestamp": stamp,
                    "request_id": f"{half}-{i}",
                    "task": TASK,
                    "model": tag,
                    "descriptors": {
                        "width": 28.0,
                        "height": 28.0,
                        "intensity_mean": float(r["intensity_mean"][i]),
                        "intensity_std": float(r["intensity_std"][i]),
                        "sharpness": float(r["sharpness"][i]),
                    },
                    "prediction": {"label": str(r["label"][i]), "confidence": float(r["confidence"][i])},
                    "confidence": float(r["confidence"][i]),
                    "embedding": [round(float(v), 5) for v in r["embedding"][i]],
                    "latency_ms": 3.0,
                }
                f.write(json.dumps(record, separators=(",", ":")) + "\n")


def measure(workdir: Path, n: int, max_rows: int) -> dict:
    """One decision in this process: seconds, peak RSS (MB) and the outcome."""
    from lifecycle.monitoring import monitor
    from lifecycle.operations import MonitoringConfig

    cfg = MonitoringConfig(max_rows=max_rows)
    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    decision = monitor(TASK, cfg, workdir / f"logs-{n}", workdir / f"drift-{n}-{max_rows}")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": n,
        "max_rows": max_rows,
        "seconds": seconds,
        "peak_mb": peak,
        "before_mb": idle,
        "status": decision["status"],
        "compared": decision["compared"],
    }


def run_measure(workdir: Path, n: int, max_rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(n), "--max-rows", str(max_rows), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if out.returncode != 0:
        raise SystemExit(f"measurement of {n} rows failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--baseline-rows", type=int, nargs="*", default=[100_000])
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-rows", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        os.environ["BENTOML_HOME"] = str(args.workdir / "bentoml")
        print(json.dumps(measure(args.workdir, args.measure, args.max_rows)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        workdir = Path(tmp)
        os.environ["BENTOML_HOME"] = str(workdir / "bentoml")  # before anything imports bentoml
        started = time.perf_counter()
        prepare(workdir, sorted(set(args.rows) | set(args.baseline_rows)))
        print(
            f"wrote logs of {', '.join(f'{n:,}' for n in sorted(set(args.rows)))} rows in {time.perf_counter() - started:.0f} s; "
            f"{os.cpu_count()} CPUs\n"
        )
        results = [run_measure(workdir, n, args.max_rows) for n in args.rows]
        baselines = {n: run_measure(workdir, n, 10**9) for n in args.baseline_rows}

    print(f"{'rows':>10} {'compared':>9} {'seconds':>8} {'peak MB':>8}  decision")
    for r in results:
        print(f"{r['rows']:>10,} {r['compared']:>9,} {r['seconds']:>8.1f} {r['peak_mb']:>8.0f}  {r['status']}")
    for n, b in baselines.items():
        print(
            f"{n:>10,} {b['compared']:>9,} {b['seconds']:>8.1f} {b['peak_mb']:>8.0f}  {b['status']}  (baseline: unsampled)"
        )
    print(f"\n(imports alone: {results[0]['before_mb']:.0f} MB peak RSS)")
    for n, b in baselines.items():
        sampled = next((r for r in results if r["rows"] == n), None)
        if sampled:
            print(
                f"{n:,} rows: sampled / unsampled time {sampled['seconds'] / b['seconds']:.2f}x, "
                f"peak memory {sampled['peak_mb'] / b['peak_mb']:.2f}x"
            )
    million = next((r for r in results if r["rows"] >= 1_000_000), None)
    if million:
        print(f"{million['rows']:,} rows: {million['seconds']:.1f} s (target <= 60 s on 2 cores)")


if __name__ == "__main__":
    main()
