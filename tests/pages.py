"""Checks on the HTML pages the project writes: each must render with no network."""

from pathlib import Path

from lifecycle.html import external_references


def assert_offline(root: Path) -> list[Path]:
    """Every .html under `root` fetches nothing from the network; returns the pages checked."""
    pages = sorted(root.rglob("*.html"))
    remote = {str(p.relative_to(root)): refs for p in pages if (refs := external_references(p.read_text("utf-8")))}
    assert not remote, f"pages that need the network: {remote}"
    return pages
