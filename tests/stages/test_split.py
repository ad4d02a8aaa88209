import pytest

from conftest import make_task
from lifecycle.atomic import read_jsonl, write_jsonl
from lifecycle.config import SplitConfig
from lifecycle.paths import TaskPaths
from lifecycle.stages.collect import run as collect
from lifecycle.stages.split import SplitLeakError, assign_splits, check_no_leak
from lifecycle.stages.split import run as split


def test_ratios_are_respected_on_many_keys():
    rows = [{"sample_id": f"{i:064x}"} for i in range(20_000)]
    counts = {}
    for row in assign_splits(rows, SplitConfig(train=0.7, val=0.2, test=0.1)):
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    assert counts["train"] / 20_000 == pytest.approx(0.7, abs=0.02)
    assert counts["test"] / 20_000 == pytest.approx(0.1, abs=0.02)


def test_adding_data_never_moves_an_existing_sample(tmp_path, tiny_params):
    paths = TaskPaths(tmp_path, "classify")
    tiny_params["classify"]["collect"]["limit"] = 100
    collect(make_task(tiny_params), paths)
    split(make_task(tiny_params), paths)
    before = {r["sample_id"]: r["split"] for r in read_jsonl(paths.split_manifest)}
    tiny_params["classify"]["collect"]["limit"] = 300
    collect(make_task(tiny_params), paths)
    split(make_task(tiny_params), paths)
    after = {r["sample_id"]: r["split"] for r in read_jsonl(paths.split_manifest)}
    assert len(after) == 300
    assert {k: after[k] for k in before} == before


def test_groups_stay_on_one_side_and_leaks_fail():
    rows = [{"sample_id": f"{i:064x}", "group": f"speaker-{i % 7}"} for i in range(200)]
    assigned = assign_splits(rows, SplitConfig())
    check_no_leak(assigned)
    by_group = {}
    for row in assigned:
        by_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in by_group.values())
    leaked = assigned + [{**assigned[0], "split": "test" if assigned[0]["split"] != "test" else "train"}]
    with pytest.raises(SplitLeakError, match="landed in more than one split"):
        check_no_leak(leaked)


def test_empty_split_is_a_clear_error(tmp_path, tiny_params):
    paths = TaskPaths(tmp_path, "classify")
    write_jsonl(paths.raw_manifest, [{"sample_id": "a" * 64, "label": "1", "group": None}])
    with pytest.raises(ValueError, match="would be empty"):
        split(make_task(tiny_params), paths)


def test_captured_samples_split_by_content_and_are_reported_as_their_group(tmp_path, tiny_params):
    """Reviewed production inputs have no font, voice or source digit: group `captured`, each split by its own
    hash (so they spread over the splits without a leak error), counted in the summary as their own group."""
    from lifecycle.splitting import CAPTURED, split_of

    own = [{"sample_id": f"{i:064x}", "label": "1", "group": None} for i in range(60)]
    captured = [{"sample_id": f"{i + 1000:064x}", "label": "2", "group": CAPTURED} for i in range(60)]
    paths = TaskPaths(tmp_path, "classify")
    write_jsonl(paths.raw_manifest, own + captured)
    summary = split(make_task(tiny_params), paths)
    rows = read_jsonl(paths.split_manifest)
    cfg = SplitConfig(**tiny_params["classify"]["split"])
    assert all(r["split"] == split_of(r["sample_id"], cfg) for r in rows if r["group"] == CAPTURED), "content hash"
    group = summary["groups"][CAPTURED]
    assert group["samples"] == 60 and all(group[s] > 0 for s in ("train", "val", "test"))
    assert sum(group[s] for s in ("train", "val", "test")) == 60
