"""Folders of labeled files (user data sets and the landing zone): class folders, `root/<label>/<file>`, and files
listed with their texts in a `labels.tsv`."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from lifecycle.samples import RawSample, Rejected


def class_folders(
    root: Path, source: str, classes: Collection[str], suffixes: Collection[str]
) -> Iterator[RawSample | Rejected]:
    """Every file below `root`, labeled by its class folder; anything else is rejected with the reason."""
    if not root.is_dir():
        raise FileNotFoundError(f"{source} folder {root} does not exist or is not a directory")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(root)
        origin = str(path)
        data = path.read_bytes()
        suffix = path.suffix.lower()
        if len(relative.parts) != 2:
            reason = "unlabeled: not directly inside a class folder (expected root/<class>/<file>)"
            yield Rejected(source, origin, reason, data, suffix)
        elif relative.parts[0] not in classes:
            reason = f"unknown class folder '{relative.parts[0]}' (expected one of {sorted(classes)})"
            yield Rejected(source, origin, reason, data, suffix)
        elif suffix not in suffixes:
            yield Rejected(
                source, origin, f"unsupported file type '{suffix}' (expected {sorted(suffixes)})", data, suffix
            )
        else:
            yield RawSample(data=data, suffix=suffix, label=relative.parts[0], source=source, origin=origin)


LABELS_FILE = "labels.tsv"


def tsv_labeled_files(root: Path, source: str) -> Iterator[RawSample | Rejected]:
    """Files under `root` with their texts in `root/labels.tsv` (`path<TAB>text`, paths relative to root): text
    line images, speech clips. A row without a tab, a listed file that is missing and a file no row lists are
    rejected with the reason; the task's inspection quarantines unreadable files and texts it cannot learn."""
    if not root.is_dir():
        raise FileNotFoundError(f"{source} folder {root} does not exist or is not a directory")
    labels_file = root / LABELS_FILE
    listed: set[Path] = {labels_file.resolve()}
    if labels_file.is_file():
        text = labels_file.read_bytes().decode("utf-8", errors="replace")
        for number, row in enumerate(text.splitlines(), start=1):
            if not row.strip():
                continue
            origin = f"{labels_file}:{number}"
            name, tab, label = row.partition("\t")
            path = (root / name).resolve()
            if not tab:
                yield Rejected(source, origin, f"no tab in row {number} of {LABELS_FILE} (expected path<TAB>text)")
            elif root.resolve() not in path.parents or not path.is_file():
                yield Rejected(
                    source, origin, f"{LABELS_FILE} row {number} names '{name}', which is not a file under {root}"
                )
            else:
                listed.add(path)
                yield RawSample(
                    data=path.read_bytes(), suffix=path.suffix.lower(), label=label, source=source, origin=str(path)
                )
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.resolve() not in listed:
            reason = (
                f"unlabeled: not listed in {labels_file}"
                if labels_file.is_file()
                else f"unlabeled: no {LABELS_FILE} in {root}"
            )
            yield Rejected(source, str(path), reason, path.read_bytes(), path.suffix.lower())


def write_tsv_labeled_files(root: Path, files: Sequence[tuple[str, bytes, str]]) -> None:
    """Write (file name, bytes, text) files in the layout `tsv_labeled_files` reads."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data, _ in files:
        (root / name).write_bytes(data)
    (root / LABELS_FILE).write_text("".join(f"{name}\t{text}\n" for name, _, text in files), encoding="utf-8")


def add_tsv_labeled_files(root: Path, files: Sequence[tuple[str, bytes, str]]) -> list[Path]:
    """Add (path under `root`, bytes, text) files to the layout `tsv_labeled_files` reads: each file written unless
    it is there, its row appended to `labels.tsv` (rewritten whole, atomically) unless the file is listed already.
    Nothing is overwritten or lost. Returns the files written."""
    from lifecycle.atomic import write_bytes, write_text

    labels_file = root / LABELS_FILE
    existing = labels_file.read_text(encoding="utf-8") if labels_file.is_file() else ""
    listed = {row.partition("\t")[0] for row in existing.splitlines()}
    rows, written = [], []
    for name, data, text in files:
        if name in listed:
            continue
        if not (root / name).exists():
            write_bytes(root / name, data)
            written.append(root / name)
        rows.append(f"{name}\t{text}\n")
        listed.add(name)
    if rows:
        write_text(labels_file, existing + ("\n" if existing and not existing.endswith("\n") else "") + "".join(rows))
    return written
