import io

import numpy as np
from PIL import Image

from conftest import make_task
from lifecycle.atomic import read_jsonl
from lifecycle.paths import TaskPaths
from lifecycle.stages.collect import run as collect


def png(value: int, size: int = 28) -> bytes:
    """A distinct, noisy (so incompressible) grayscale image."""
    pixels = np.random.default_rng(value).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_embedded_collect_is_content_addressed_and_idempotent(tmp_path, tiny_params):
    task, paths = make_task(tiny_params), TaskPaths(tmp_path, "classify")
    first = collect(task, paths)
    rows = read_jsonl(paths.raw_manifest)
    assert first.new == first.samples == len(rows) == 200
    assert {r["label"] for r in rows} == {str(d) for d in range(10)}
    for row in rows[:5]:
        stored = paths.raw / row["path"]
        assert row["sample_id"] in stored.name and (row["width"], row["height"]) == (28, 28)
    before = {p: p.stat().st_mtime_ns for p in paths.raw.rglob("samples/*/*")}
    second = collect(task, paths)
    assert second.new == 0 and read_jsonl(paths.raw_manifest) == rows
    assert {p: p.stat().st_mtime_ns for p in paths.raw.rglob("samples/*/*")} == before, "raw files never rewritten"


def test_bad_files_are_quarantined_with_reasons_and_nothing_else_is_lost(tmp_path, tiny_params):
    folder = tmp_path / "user-images"
    for label, value in (("3", 10), ("3", 20), ("7", 30)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{value}.png").write_bytes(png(value))
    (folder / "7" / "corrupt.png").write_bytes(png(40)[:400])  # truncated mid-pixels
    (folder / "cat").mkdir()
    (folder / "cat" / "whiskers.png").write_bytes(png(50))  # mislabeled folder
    (folder / "loose.png").write_bytes(png(60))  # no class folder
    (folder / "3" / "notes.txt").write_text("hello")
    tiny_params["classify"]["collect"].update(embedded=False, folder=str(folder))
    task, paths = make_task(tiny_params), TaskPaths(tmp_path, "classify")

    summary = collect(task, paths)

    rows = read_jsonl(paths.raw_manifest)
    assert sorted((r["label"], r["origin"].rsplit("/", 1)[1]) for r in rows) == [
        ("3", "10.png"),
        ("3", "20.png"),
        ("7", "30.png"),
    ]
    reasons = {q["origin"].rsplit("/", 1)[1]: q["reason"] for q in read_jsonl(paths.quarantine)}
    assert reasons["corrupt.png"].startswith("unreadable image")
    assert reasons["whiskers.png"].startswith("unknown class folder 'cat'")
    assert reasons["loose.png"].startswith("unlabeled")
    assert reasons["notes.txt"].startswith("unsupported file type")
    assert summary.quarantined == 4
    for q in read_jsonl(paths.quarantine):  # the bytes are kept, so a person can fix and re-collect
        assert (paths.raw / q["path"]).exists()
    assert collect(task, paths).new_quarantined == 0, "rerunning does not duplicate quarantine entries"


def test_landing_zone_is_collected_and_conflicting_labels_quarantined(tmp_path, tiny_params):
    tiny_params["classify"]["collect"].update(embedded=False)
    paths = TaskPaths(tmp_path, "classify")
    (paths.incoming / "1").mkdir(parents=True)
    (paths.incoming / "1" / "a.png").write_bytes(png(99))
    task = make_task(tiny_params)
    assert collect(task, paths).new == 1
    (paths.incoming / "2").mkdir()
    (paths.incoming / "2" / "same-pixels.png").write_bytes(png(99))
    summary = collect(task, paths)
    assert summary.samples == 1 and summary.new == 0
    [entry] = read_jsonl(paths.quarantine)
    assert "conflicting label '2'" in entry["reason"]
