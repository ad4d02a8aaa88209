import os
import stat

import pytest

from lifecycle.atomic import atomic_dir, atomic_path, read_jsonl, write_json, write_jsonl


def test_failed_write_leaves_the_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_failed_directory_write_keeps_the_previous_directory(tmp_path):
    target = tmp_path / "docs"
    target.mkdir()
    (target / "index.html").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "index.html").write_text("new")
        raise RuntimeError("crash")
    assert (target / "index.html").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "index.html").write_text("new")
    assert (target / "index.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_json_round_trip(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1})
    assert (tmp_path / "a.json").read_text().strip() == '{\n  "b": 1\n}'
    write_jsonl(tmp_path / "rows.jsonl", [{"x": 1}, {"x": [2]}])
    assert read_jsonl(tmp_path / "rows.jsonl") == [{"x": 1}, {"x": [2]}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_and_directories_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"b": 1})
        with atomic_dir(tmp_path / "docs") as tmp:
            (tmp / "index.html").write_text("page")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "docs").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "docs" / "index.html").stat().st_mode) == 0o666 & ~umask
