"""Captured production inputs stay within monitoring.capture_max_mb, oldest dropped first, also with several
service workers (processes) writing one folder at once."""

import subprocess
import sys

from lifecycle.capture import capture_input, capture_stats

WRITER = """
import sys
from pathlib import Path
from lifecycle.capture import capture_input
folder, worker, count, max_mb = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
for i in range(count):
    capture_input(folder, f"w{worker}-{i:04d}", "upload.png", bytes([i % 256]) * 10_000, max_mb)
"""


def test_several_workers_stay_within_the_bound_dropping_the_oldest(tmp_path):
    folder, workers, count, max_mb = tmp_path / "captured" / "classify", 4, 40, 0.2
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(w), str(count), str(max_mb)])
        for w in range(workers)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    kept = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    stats = capture_stats(folder)
    assert stats["files"] == len(kept) and stats["mb"] <= max_mb and len(kept) * 10_000 <= max_mb * 2**20
    assert stats["dropped"] == workers * count - len(kept), "every dropped capture counted once"
    assert len(kept) >= 0.8 * max_mb * 2**20 // 10_000, "pruned only down to the low-water mark"
    for w in range(workers):
        own = sorted(int(name.split("-")[1].split(".")[0]) for name in kept if name.startswith(f"w{w}-"))
        assert own == list(range(count - len(own), count)), f"worker {w}: its newest captures kept, oldest dropped"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], "no half-written capture left"


def test_a_capture_is_named_by_its_content_type_else_its_upload_suffix_and_under_the_bound_nothing_is_dropped(
    tmp_path,
):
    folder = tmp_path / "captured"
    assert capture_input(folder, "abc", "scan.JPEG", b"x" * 100, 1.0).name == "abc.jpeg"
    assert capture_input(folder, "def", "../odd name.p/ng", b"y" * 100, 1.0).name == "def"
    png, wav = b"\x89PNG\r\n\x1a\n" + b"z" * 92, b"RIFF\x00\x00\x00\x00WAVEfmt " + b"w" * 84
    assert capture_input(folder, "ghi", "blob", png, 1.0).name == "ghi.png", "the content's type, not the name's"
    assert capture_input(folder, "jkl", "speech.png", wav, 1.0).name == "jkl.wav"
    assert capture_stats(folder) == {"files": 4, "mb": round(400 / 2**20, 3), "dropped": 0}
    assert capture_stats(tmp_path / "none") == {"files": 0, "mb": 0.0, "dropped": 0}
