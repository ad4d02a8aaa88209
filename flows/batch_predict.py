"""The batch_predict flow: a stored model (the production one by default) over a folder of inputs, one prediction
per input in a JSON lines or CSV file, and a markdown artifact listing any unreadable input with its reason."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from lifecycle.batch import BatchResult, predict_folder, production_or
from lifecycle.params import load_params
from lifecycle.serving import Predictor


@task(task_run_name="predict@{task_name}")
def predict(task_name: str, input_dir: Path, out: Path, model: str | None, params: Path) -> BatchResult:
    cfg = load_params(params, only=[task_name])
    serve = cfg.task(task_name).serve
    predictor = Predictor.from_store(production_or(task_name, model), serve.device)
    return predict_folder(predictor, input_dir, out, cfg.serving.batch_size, progress=False)


@flow(name="batch_predict", log_prints=True)
def batch_predict(
    task: str, input_dir: str, out: str | None = None, model: str | None = None, params: str = "params.yaml"
) -> dict:
    """Predict every file under `input_dir`; `out` defaults to reports/<task>/batch/<UTC time>.jsonl."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path(out) if out else Path("reports") / task / "batch" / f"{stamp}.jsonl"
    result = predict(task, Path(input_dir), target, model, Path(params))
    failures = "\n".join(f"| `{f['input']}` | {f['error']} |" for f in result.failed)
    create_markdown_artifact(
        key=f"{task}-batch-predict",
        markdown=f"# {task}: batch predictions\n\n{result.predicted} inputs predicted by `{result.model}` into "
        f"`{result.out}`; {len(result.failed)} unreadable.\n"
        + (f"\n| input | reason |\n|---|---|\n{failures}\n" if failures else ""),
        description=f"{task}: batch inference over {input_dir}",
    )
    print(f"{result.out}: {result.predicted} predicted, {len(result.failed)} unreadable")
    return {"out": str(result.out), "model": result.model, "predicted": result.predicted, "failed": result.failed}


def main() -> None:
    from lifecycle.runtime import configure_environment

    parser = argparse.ArgumentParser(description=batch_predict.__doc__)
    parser.add_argument("input_dir")
    parser.add_argument("--task", required=True)
    parser.add_argument("--out")
    parser.add_argument("--model")
    args = parser.parse_args()
    configure_environment()
    batch_predict(task=args.task, input_dir=args.input_dir, out=args.out, model=args.model)


if __name__ == "__main__":
    main()
