from pathlib import Path

import pytest
import yaml

from lifecycle.config import ConfigError
from lifecycle.params import load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.tasks == ["classify", "detect", "ocr", "asr"]
    assert all(params.task(name).train.epochs >= 1 for name in params.tasks)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["classify"]["train"].update(lr=-1), "classify.train.lr: Input should be greater than 0"),
        (lambda p: p["classify"]["train"].update(learning_rate=0.1), "classify.train.learning_rate: Extra inputs"),
        (lambda p: p.update(classfy={}), "classfy: not a registered task or a known section"),
        (
            lambda p: p["classify"]["split"].update(train=0.9),
            "classify.split: Value error, train + val + test must be 1",
        ),
        (lambda p: p["classify"]["train"].update(precision="fp8"), "classify.train.precision: Input should be"),
        (lambda p: p["classify"]["validate"].update(min_class_share=2), "classify.validate.min_class_share"),
        (lambda p: p.update(tasks=["classify", "segment"]), "tasks: Value error, unknown task(s) ['segment']"),
        (
            lambda p: p["classify"]["train"].update(augment=[{"name": "RandomWobble"}]),
            "classify.train.augment[0]: Value error, 'RandomWobble' is not a transform",
        ),
        (
            lambda p: p["classify"]["train"].update(augment=[{"name": "RandomAffine", "args": {"degree": 3}}]),
            "classify.train.augment[0]: Value error, RandomAffine({'degree': 3}) cannot be built",
        ),
        (lambda p: p["classify"]["split"].update(robustness="wobble"), "classify.split.robustness: Input should be"),
        (lambda p: p["classify"]["model"].update(augment={"blur": 2}), "classify.model.augment.blur: Input should be"),
        (
            lambda p: p["classify"].update(split={"robustness": "blur"}, model={"augment": {"blur": 0.5}}),
            "classify: Value error, split.robustness: 'blur' is applied in training by model.augment.blur",
        ),
        (
            lambda p: p["classify"].update(
                split={"robustness": "blur"}, train={"augment": [{"name": "GaussianBlur", "args": {"kernel_size": 3}}]}
            ),
            "split.robustness: 'blur' is applied in training by train.augment[0] (GaussianBlur)",
        ),
        (
            lambda p: p["classify"]["train"].update(distributed={"nproc_per_node": 0}),
            "classify.train.distributed.nproc_per_node: Input should be greater than or equal to 1",
        ),
        (
            lambda p: p["classify"]["train"].update(distributed={"nnodes": 2}),
            "classify.train.distributed: Value error, rdzv_endpoint (host:port of one machine) is needed",
        ),
        (
            lambda p: p["classify"]["train"].update(distributed={"nnodes": 2, "rdzv_endpoint": "node0"}),
            "classify.train.distributed.rdzv_endpoint: String should match pattern",
        ),
        (
            lambda p: p["classify"]["train"].update(distributed={"backend": "mpi"}),
            "classify.train.distributed.backend: Input should be 'auto', 'gloo' or 'nccl'",
        ),
        (
            lambda p: p["classify"]["train"].update(batch_size=30, distributed={"nproc_per_node": 4}),
            "classify.train: Value error, batch_size (30) is the global batch and must divide evenly",
        ),
        (
            lambda p: p["classify"]["train"].update(device="cuda:1", distributed={"nproc_per_node": 2}),
            "classify.train: Value error, device 'cuda:1' names one GPU",
        ),
    ],
)
def test_bad_values_name_the_key(tiny_params, edit, expected):
    edit(tiny_params)
    with pytest.raises(ConfigError) as info:
        parse_params(tiny_params)
    assert expected in str(info.value)


def test_listed_task_needs_a_section(tiny_params):
    del tiny_params["classify"]
    with pytest.raises(ConfigError, match="no section for task"):
        parse_params(tiny_params)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("tasks: [classify\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(broken)
    broken.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(broken)


def test_defaults_fill_missing_sections():
    params = parse_params({"tasks": ["classify"], "classify": {}})
    assert params.task("classify").split.train == pytest.approx(0.8)
    assert params.task("classify").validation.min_samples >= 1


def test_overrides_replace_values_at_key_paths_and_revalidate(tiny_params):
    from lifecycle.config import ConfigError, with_overrides
    from lifecycle.params import parse_params

    section = parse_params(tiny_params).task("classify")
    tuned = with_overrides(section, {"train.lr": 0.003, "train.augment.0.args.degrees": 3, "model.width": 8})
    assert (tuned.train.lr, tuned.train.augment[0].args["degrees"], tuned.model.width) == (0.003, 3, 8)
    assert section.train.lr == 0.01, "the original section is untouched"
    with pytest.raises(ConfigError, match=r"train.lr: Input should be greater than 0"):
        with_overrides(section, {"train.lr": -1})


def test_only_the_asked_sections_are_validated(tiny_params):
    """`lifecycle split --task classify` validates classify's section, not another task's."""
    tiny_params["tasks"] = ["classify", "asr"]
    tiny_params["asr"] = {"collect": {"voices": {"train": ["xx-no-such+m1"], "val": ["en+m1"], "test": ["en+f1"]}}}
    params = parse_params(tiny_params, only=["classify"])
    assert params.task("classify").train.epochs == 2
    with pytest.raises(ConfigError, match="asr.collect"):
        params.task("asr")
    with pytest.raises(ConfigError, match="asr.collect"):
        parse_params(tiny_params)


def test_params_are_read_as_yaml_1_2(tmp_path):
    """As DVC writes params.yaml for `dvc exp run -S`: bare yes/no/on/off are words, not booleans."""
    path = tmp_path / "params.yaml"
    path.write_text("tasks: [asr]\nasr:\n  collect:\n    embedded: false\n    vocabulary: [yes, no, on, off, go]\n")
    params = load_params(path)
    assert params.task("asr").collect.vocabulary == ["yes", "no", "on", "off", "go"]


def test_label_on_a_task_without_labeling_says_so_before_any_work(tmp_path, capsys, monkeypatch):
    import dataclasses

    import lifecycle.tasks as registry
    from lifecycle.cli import main
    from lifecycle.tasks.classify import SPEC, parts
    from lifecycle.tasks.parts import TaskSpec

    toy = TaskSpec("toy", "toy", SPEC.goal, SPEC.schemas, lambda cfg: dataclasses.replace(parts(cfg), labeling=None))
    monkeypatch.setitem(registry._REGISTRY, "toy", toy)
    assert registry.capabilities()["toy"] == []
    code = main(["label", "--task", "toy", "--root", str(tmp_path), "--params", str(tmp_path / "no-params.yaml")])
    assert code == 2 and "toy has no Label Studio interface" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing was read or written"
