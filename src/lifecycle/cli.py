"""`lifecycle STAGE --task T`: the command line dvc.yaml runs. Exit code 2 for bad configuration or data."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, cast

from lifecycle.pipeline import STAGE_NAMES, get_stage
from lifecycle.runtime import configure_environment, configure_logging


def run_stage(stage: str, task_name: str, params_path: Path, root: Path) -> Any:
    """Load params, validating only this task's section, then run one stage for one task."""
    from lifecycle.params import load_params
    from lifecycle.paths import TaskPaths
    from lifecycle.tasks import build_task

    params = load_params(params_path, only=[task_name])
    return get_stage(stage).run(build_task(task_name, params.task(task_name)), TaskPaths(root, task_name))


def dvc_yaml_command(args: argparse.Namespace) -> int:
    """Write dvc.yaml from the pipeline definition for params.yaml's tasks, or with --check say whether it is
    current."""
    from lifecycle.pipeline import dvc_yaml_text, tasks_in

    tasks = tasks_in(args.params)
    text = dvc_yaml_text(tasks, args.root.resolve() / "src")
    target = args.root / "dvc.yaml"
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{target} is out of date: run `lifecycle dvc-yaml` and commit it", file=sys.stderr)
            return 1
        print(f"{target}: up to date")
        return 0
    from lifecycle.atomic import write_text

    write_text(target, text)
    print(f"{target}: {len(tasks) * len(STAGE_NAMES)} stages for {', '.join(t.name for t in tasks)}")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from lifecycle.batch import predict_folder, production_or
    from lifecycle.params import load_params
    from lifecycle.serving import Predictor

    params = load_params(args.params, only=[args.task])
    stored = production_or(args.task, args.model)
    serve = params.task(args.task).serve
    predictor = Predictor.from_store(stored, serve.device)
    result = predict_folder(predictor, args.input_dir, args.out, args.batch_size or params.serving.batch_size)
    print(
        f"{args.out}: {result.predicted} predictions by {result.model}, {len(result.failed)} unreadable inputs"
        + "".join(f"\n  {f['input']}: {f['error']}" for f in result.failed),
        file=sys.stderr,
    )
    return 0


def transcribe_command(args: argparse.Namespace) -> int:
    """A recording's transcript by the asr model: whole (as the service decodes it), or with --stream chunk by
    chunk from the file, printing the transcript so far after each chunk."""
    from lifecycle.batch import production_or
    from lifecycle.params import load_params
    from lifecycle.serving import Predictor
    from lifecycle.tasks.parts import StreamingOutputs

    if not args.file.is_file():
        raise FileNotFoundError(f"{args.file}: no such audio file")
    stored = production_or("asr", args.model)
    predictor = Predictor.from_store(stored, load_params(args.params, only=["asr"]).task("asr").serve.device)
    task = predictor.task
    outputs = task.outputs
    if "streaming" not in task.spec.capabilities or not isinstance(outputs, StreamingOutputs):
        raise ValueError(f"model {stored.tag} is a '{task.name}' model, which cannot transcribe a recording")
    if not args.stream:
        prediction = predictor.predict([task.codec.load_input(args.file)])[0]
        print(json.dumps({**prediction, "model": stored.tag}))
        return 0
    import soundfile as sf

    text = ""
    try:
        for seconds, text in outputs.stream_file(predictor.model, args.file):
            print(f"[{seconds:8.1f} s] {text}", flush=True)
    except sf.LibsndfileError as e:
        raise ValueError(f"{args.file}: unreadable audio: {e}") from None
    print(text)
    return 0


def label_command(args: argparse.Namespace) -> int:
    from lifecycle.batch import production_or
    from lifecycle.labeling import NoLabeling, export_for_review, import_reviewed
    from lifecycle.models import load_task
    from lifecycle.params import load_params
    from lifecycle.paths import TaskPaths
    from lifecycle.serving import Predictor
    from lifecycle.tasks import get_task

    if "labeling" not in get_task(args.task).capabilities:
        raise NoLabeling(
            f"task {args.task} has no Label Studio interface: `lifecycle tasks` lists what each task can do"
        )
    root = args.root.resolve()
    params = load_params(args.params, only=[args.task])
    stored = production_or(args.task, None)
    captured = root / params.monitoring.capture_dir / args.task
    if args.export_file:
        incoming = TaskPaths(root, args.task).incoming
        done = import_reviewed(load_task(stored.model_file), args.export_file, captured, incoming)
        print(
            f"{args.export_file}: {done.reviewed} reviewed samples imported into {incoming} ({len(done.written)} "
            f"files written), {done.cancelled} cancelled skipped (their captures kept), "
            f"{done.captures_removed} captures removed"
        )
        return 0
    predictor = Predictor.from_store(stored, params.task(args.task).serve.device)
    out = export_for_review(
        predictor,
        captured,
        root / "reports" / "labeling" / args.task,
        params.monitoring.label_below,
        params.serving.batch_size,
    )
    print(
        f"{out.import_file}: {out.for_review} of {out.captured} captured inputs below confidence "
        f"{params.monitoring.label_below} for review (Label Studio interface: {out.config_file})"
        + "".join(f"\n  unreadable {line}" for line in out.unreadable)
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifecycle", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGE_NAMES:
        sub = commands.add_parser(stage, help=f"run the {stage} stage")
        sub.add_argument("--task", required=True, help="a registered task, e.g. classify")
        sub.add_argument("--params", type=Path, default=Path("params.yaml"))
        sub.add_argument("--root", type=Path, default=Path("."), help="project root (default: current directory)")
        if stage == "promote":
            sub.add_argument(
                "--candidate", help="a stored candidate's tag (from `lifecycle import`), evaluated on the test split"
            )
    predict = commands.add_parser("predict", help="batch inference: predict every file of a folder")
    predict.add_argument("input_dir", type=Path)
    predict.add_argument("--task", required=True)
    predict.add_argument("--out", type=Path, required=True, help="output file, .jsonl or .csv")
    predict.add_argument("--model", help="a model tag from `lifecycle models` (default: the production model)")
    predict.add_argument("--params", type=Path, default=Path("params.yaml"))
    predict.add_argument("--batch-size", type=int, help="default: serving.batch_size in params.yaml")
    transcribe = commands.add_parser("transcribe", help="transcribe a recording with the asr model")
    transcribe.add_argument("file", type=Path, help="an audio file (WAV, FLAC, OGG: any rate, any channels)")
    transcribe.add_argument(
        "--stream",
        action="store_true",
        help="decode chunk by chunk from the file, printing partial transcripts (any length)",
    )
    transcribe.add_argument("--model", help="a model tag from `lifecycle models --task asr` (default: production)")
    transcribe.add_argument("--params", type=Path, default=Path("params.yaml"))
    monitor = commands.add_parser("monitor", help="drift report: the request log against the production reference")
    monitor.add_argument("--task", required=True)
    monitor.add_argument("--params", type=Path, default=Path("params.yaml"))
    monitor.add_argument("--root", type=Path, default=Path("."))
    traffic = commands.add_parser("traffic", help="send test-split requests, optionally shifted, to the service")
    traffic.add_argument("--task", required=True)
    traffic.add_argument(
        "--shift",
        default="none",
        help="image tasks: none, noise, blur, invert, rotate, scale; asr: none, noise, quiet, fast, telephone",
    )
    traffic.add_argument("--count", type=int, help="requests to send (default: the whole test split once)")
    traffic.add_argument("--url", default="http://127.0.0.1:3000")
    traffic.add_argument("--seed", type=int, default=0)
    traffic.add_argument("--params", type=Path, default=Path("params.yaml"))
    traffic.add_argument("--root", type=Path, default=Path("."))
    label = commands.add_parser(
        "label", help="export unsure captured inputs for Label Studio, or import reviewed labels"
    )
    label.add_argument("--task", required=True)
    label.add_argument("--import", dest="export_file", type=Path, help="a Label Studio JSON export of reviewed tasks")
    label.add_argument("--params", type=Path, default=Path("params.yaml"))
    label.add_argument("--root", type=Path, default=Path("."))
    rollback = commands.add_parser("rollback", help="make the previous production model production again")
    rollback.add_argument("--task", required=True)
    listing = commands.add_parser("models", help="list a task's versions in the BentoML model store")
    listing.add_argument("--task", required=True)
    commands.add_parser("tasks", help="list the registered tasks and what each can do")
    generate = commands.add_parser("dvc-yaml", help="write dvc.yaml from the pipeline definition (--check: compare)")
    generate.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml is not what would be written")
    generate.add_argument("--params", type=Path, default=Path("params.yaml"))
    generate.add_argument("--root", type=Path, default=Path("."))
    report = commands.add_parser("report", help="rebuild the report site reports/index.html from the reports on disk")
    report.add_argument("--task", help="only this task (default: every task in params.yaml)")
    report.add_argument("--params", type=Path, default=Path("params.yaml"))
    report.add_argument("--root", type=Path, default=Path("."))
    exporting = commands.add_parser("export", help="write a model as ONNX or a torch.export program, with its contract")
    exporting.add_argument("--task", required=True)
    exporting.add_argument("--model", help="a model tag from `lifecycle models` (default: the production model)")
    exporting.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    exporting.add_argument("--out", type=Path, required=True, help="the exported file; its contract goes beside it")
    exporting.add_argument("--root", type=Path, default=Path("."), help="project root (its test split is the example)")
    importing = commands.add_parser("import", help="store an existing model (its head kept) as the task's candidate")
    importing.add_argument("--task", required=True)
    importing.add_argument("--arch", required=True, help="builtin or a torchvision builder of the task's kind")
    importing.add_argument("--weights", required=True, help="a weights file, or a torchvision weights name")
    importing.add_argument("--params", type=Path, default=Path("params.yaml"))
    importing.add_argument("--root", type=Path, default=Path("."))
    check = commands.add_parser("check-params", help="validate params.yaml and exit")
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_environment(getattr(args, "root", None))
    configure_logging(args.log_level)
    from lifecycle.config import ConfigError
    from lifecycle.params import load_params
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.split import SplitLeakError
    from lifecycle.stages.validate import DataValidationError
    from lifecycle.tasks import build_task, capabilities

    try:
        if args.command == "tasks":
            for name, can in capabilities().items():
                print(f"{name:<10} {', '.join(can) or '-'}")
        elif args.command == "dvc-yaml":
            return dvc_yaml_command(args)
        elif args.command == "rollback":
            from lifecycle.registry import rollback

            restored, demoted = rollback(args.task)
            print(f"{args.task}: {restored.tag} is production again; {demoted.tag} is labeled rolled_back")
        elif args.command == "models":
            from lifecycle.registry import versions

            for m in versions(args.task):
                print(f"{m.tag}  {m.stage:<12} {m.created:%Y-%m-%d %H:%M}  {m.metadata.get('metrics', {})}")
        elif args.command == "predict":
            return predict_command(args)
        elif args.command == "monitor":
            from lifecycle.monitoring import monitor_task
            from lifecycle.site import rebuild

            decision = monitor_task(args.task, args.params, args.root.resolve())
            print(f"{args.task}: {decision['status']}: {decision['reason']}; reports: {rebuild(args.root.resolve())}")
        elif args.command == "report":
            from lifecycle.site import build_site

            tasks = [args.task] if args.task else list(load_params(args.params, only=[]).tasks)
            print(build_site(args.root.resolve(), tasks))
        elif args.command == "label":
            return label_command(args)
        elif args.command == "transcribe":
            return transcribe_command(args)
        elif args.command == "traffic":
            from lifecycle.traffic import send_traffic

            task = build_task(args.task, load_params(args.params, only=[args.task]).task(args.task))
            answered = send_traffic(
                task, TaskPaths(args.root.resolve(), args.task), args.url, args.shift, args.count, seed=args.seed
            )
            print(
                f"{args.task}: sent {sum(answered.values())} '{args.shift}' requests to {args.url}; statuses {answered}"
            )
        elif args.command == "export":
            from lifecycle.batch import production_or
            from lifecycle.export import export

            stored = production_or(args.task, args.model)
            written = export(stored.model_file, TaskPaths(args.root.resolve(), args.task), args.format, args.out)
            print(f"{args.task}: {stored.tag} written to {args.out}, its contract to {written}")
        elif args.command == "import":
            from lifecycle.importing import import_model

            task = build_task(args.task, load_params(args.params, only=[args.task]).task(args.task))
            result = import_model(task, TaskPaths(args.root.resolve(), args.task), args.arch, args.weights)
            print(json.dumps(result, indent=2))
            print(f"next: lifecycle promote --task {args.task} --candidate {result['candidate']}")
        elif args.command == "promote" and args.candidate:
            from lifecycle.stages.promote import promote

            task = build_task(args.task, load_params(args.params, only=[args.task]).task(args.task))
            decision = promote(task, TaskPaths(args.root.resolve(), args.task), candidate=args.candidate)
            print(json.dumps(decision, indent=2, default=str))
        elif args.command == "check-params":
            print(f"{args.params}: ok, tasks {load_params(args.params).tasks}")
        else:
            result = run_stage(args.command, args.task, args.params, args.root.resolve())
            print(json.dumps(asdict(cast(Any, result)) if is_dataclass(result) else result, indent=2, default=str))
    except (ConfigError, DataValidationError, SplitLeakError, LookupError, FileNotFoundError, ValueError) as e:
        # Bad configuration or bad data: a one-line answer naming what is wrong, not a traceback.
        print(f"lifecycle {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
