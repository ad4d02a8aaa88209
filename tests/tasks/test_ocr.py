"""Task `ocr`: fonts from installed Python distributions only, every training family rendering the whole
charset, held-out families that never reach training, CTC and attention decoding, answers independent of
batching, bad labels quarantined, and the lifecycle end to end for each decoder."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_OCR, make_task
from lifecycle.atomic import read_jsonl
from lifecycle.config import ConfigError
from lifecycle.params import parse_params
from lifecycle.sequence import BLANK, greedy_ctc
from lifecycle.sources.folders import write_tsv_labeled_files
from lifecycle.sources.fonts import missing_characters, text_faces
from lifecycle.sources.textlines import DEFAULT_CHARSET, LineStyle, random_text, render_line
from lifecycle.tasks import build_task
from lifecycle.tasks.ocr.attention import greedy_attention
from lifecycle.tasks.ocr.config import DEFAULT_FAMILIES


def ocr_params(**sections) -> dict:
    return {"tasks": ["ocr"], "ocr": {**copy.deepcopy(TINY_OCR), **sections}}


def ocr_task(**sections):
    return build_task("ocr", ocr_params(**sections)["ocr"])


def test_training_fonts_come_from_installed_distributions_only():
    """Every face of every default family is a file an installed distribution lists (matplotlib, Great
    Expectations, Prefect, ...), never a system font, also when the machine has the same families installed."""
    import sys
    from importlib.metadata import distribution

    faces = [face for names in DEFAULT_FAMILIES.values() for name in names for face in text_faces()[name]]
    roots = [Path(p).resolve() for p in sys.path if p and Path(p).is_dir()]
    by_package: dict[str, set[Path]] = {}
    for face in faces:
        if face.path is None:  # Pillow's built-in font: inside the Pillow wheel's code
            continue
        root = max((r for r in roots if r in face.path.parents), key=lambda r: len(r.parts))  # site-packages
        by_package.setdefault(face.path.relative_to(root).parts[0], set()).add(face.path)
    for package, paths in by_package.items():
        dist = distribution(package)
        listed = {Path(str(dist.locate_file(f))).resolve() for f in dist.files or ()}
        assert paths <= listed, f"not shipped by {package}: {paths - listed}"
    assert {"matplotlib", "great_expectations", "prefect"} <= set(by_package), "fonts from several wheels"
    assert not {"cmsy10", "cmex10", "cmmi10", "Material Icons"} & set(text_faces()), "math and icon fonts are not text"
    assert [f.variation for f in text_faces()["Geist"]].count("Bold") == 1, "a variable font's named instances"


def test_every_training_family_renders_the_whole_charset():
    """Each character has a glyph in every face of every training family, and rendered alone it leaves ink;
    the text generator draws every character of the charset."""
    for name in DEFAULT_FAMILIES["train"]:
        for face in text_faces()[name]:
            assert missing_characters(face, DEFAULT_CHARSET) == "", face
            font = face.load(24)
            for char in DEFAULT_CHARSET.replace(" ", ""):
                assert font.getmask(char).getbbox() is not None, (face, char)
    rng = np.random.default_rng(0)
    drawn = set("".join(random_text(rng, DEFAULT_CHARSET, LineStyle()) for _ in range(3000)))
    assert drawn == set(DEFAULT_CHARSET)


def test_rendered_lines_are_readable_sized_and_degraded():
    rng = np.random.default_rng(1)
    face = text_faces()["DejaVu Sans"][0]
    sizes = []
    for _ in range(30):
        pixels = render_line("Invoice 2024-03-01", face, rng)
        assert pixels.dtype == np.uint8 and pixels.ndim == 2
        assert pixels.shape[1] > 3 * pixels.shape[0], "a line is wide"
        assert pixels.std() > 10, "the text stands out from the paper"
        sizes.append(pixels.shape[0])
    assert len(set(sizes)) > 5, "font sizes vary"


def test_held_out_families_never_reach_training(tmp_path):
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.split import run as split

    params = ocr_params()
    paths = TaskPaths(tmp_path, "ocr")
    collect(make_task(params, "ocr"), paths)
    split(make_task(params, "ocr"), paths)
    rows = read_jsonl(paths.split_manifest)
    by_split = {s: {r["group"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    for s, families in by_split.items():
        assert families and families <= set(DEFAULT_FAMILIES[s]), s
    assert not by_split["train"] & (set(DEFAULT_FAMILIES["val"]) | set(DEFAULT_FAMILIES["test"]))


@pytest.mark.parametrize(
    "families, message",
    [
        ({"train": ["DejaVu Sans"], "val": ["DejaVu Sans"], "test": ["DejaVu Serif"]}, "leaks"),
        ({"train": ["Comic Sans"], "val": ["cmss10"], "test": ["DejaVu Serif"]}, "no text font family 'Comic Sans'"),
        ({"train": ["cmsy10"], "val": ["cmss10"], "test": ["DejaVu Serif"]}, "no text font family 'cmsy10'"),
        ({"train": ["STIXSizeOneSym"], "val": ["cmss10"], "test": ["DejaVu Serif"]}, "cannot render"),
        ({"train": ["DejaVu Sans"], "test": ["DejaVu Serif"]}, "each of"),
    ],
)
def test_bad_families_are_refused_naming_the_key(families, message):
    with pytest.raises(ConfigError) as err:
        parse_params(ocr_params(collect={"families": families}))
    assert "ocr.collect" in str(err.value) and message in str(err.value)


def one_hot(path: list[int], classes: int = 5, p: float = 0.9) -> torch.Tensor:
    logits = torch.full((len(path), classes), np.log((1 - p) / (classes - 1)))
    logits[torch.arange(len(path)), torch.tensor(path)] = float(np.log(p))
    return logits


def test_ctc_greedy_decoding_collapses_repeats_and_drops_blanks():
    paths = [[1, 1, BLANK, 1, 2, 2, BLANK], [BLANK, 3, BLANK, BLANK, 4, 4, 4]]
    logits = torch.stack([one_hot(p) for p in paths])
    decoded = greedy_ctc({"logits": logits, "lengths": torch.tensor([7, 4])})
    assert [chars for chars, _ in decoded] == [[1, 1, 2], [3]], "frames past a line's length are not read"
    assert decoded[0][1] == pytest.approx(0.9**7, rel=1e-4) and decoded[1][1] == pytest.approx(0.9**4, rel=1e-4)


def test_attention_greedy_decoding_stops_at_the_end_of_text():
    paths = [[2, 1, 3, BLANK, 4], [4, 4, 4, 4, 4]]
    logits = torch.stack([one_hot(p) for p in paths])
    decoded = greedy_attention({"logits": logits, "lengths": torch.tensor([4, 5])})
    assert [chars for chars, _ in decoded] == [[2, 1, 3], [4, 4, 4, 4, 4]], "repeats are kept: no collapsing"
    assert decoded[0][1] == pytest.approx(0.9**4, rel=1e-4), "the end of text is part of the reading's probability"


def test_paper_beside_the_text_reads_as_no_space():
    """Spaces in a reading are normalised as a label's: none leading or trailing, one between words."""
    space, a, b = (DEFAULT_CHARSET.index(c) + 1 for c in " ab")
    path = [space, BLANK, a, space, BLANK, space, b, b, space]
    logits = one_hot(path, classes=len(DEFAULT_CHARSET) + 1)[None]
    [(text, confidence)] = ocr_task().outputs.read({"logits": logits, "lengths": torch.tensor([len(path)])})
    assert text == "a b" and confidence == pytest.approx(0.9 ** len(path), rel=1e-4)


@pytest.mark.parametrize("decoder", ["ctc", "attention"])
def test_a_line_reads_the_same_alone_or_batched_with_wider_lines(decoder):
    task = ocr_task(model={**TINY_OCR["model"], "decoder": decoder})
    torch.manual_seed(0)
    model = task.network.build().eval()
    with torch.no_grad():  # random weights, with non-trivial normalisation statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(0)
    face = text_faces()["DejaVu Sans"][0]
    lines = [torch.from_numpy(render_line(text, face, rng))[None] for text in ("ab", "a much longer line", "mid 42")]
    prepared = [task.codec.prepare(x) for x in lines]
    with torch.no_grad():
        batched = task.network.forward(model, task.codec.batch_inputs(prepared))
        alone = [task.network.forward(model, task.codec.batch_inputs([x])) for x in prepared]
    together = task.outputs.predict(batched.outputs)
    for i, single in enumerate(alone):
        alone_prediction = task.outputs.predict(single.outputs)[0]
        assert alone_prediction["text"] == together[i]["text"]
        assert alone_prediction["confidence"] == pytest.approx(together[i]["confidence"], abs=1e-5)
        assert torch.allclose(single.outputs["features"][0], batched.outputs["features"][i], atol=1e-5)
        assert torch.equal(single.features, single.outputs["features"]), "the features are the pooled frames"


def test_too_wide_lines_are_a_clear_4xx():
    from lifecycle.imaging import encode_png
    from lifecycle.samples import InvalidInput

    task = ocr_task()
    with pytest.raises(InvalidInput) as err:
        task.codec.decode(encode_png(np.full((10, 2000), 255, np.uint8)))
    assert err.value.status == 400 and "max_width" not in str(err.value) and "wide" in str(err.value)


def png_line(text: str, seed: int = 0) -> bytes:
    pixels = render_line(text, text_faces()["DejaVu Sans"][0], np.random.default_rng(seed))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_labels_and_files_are_quarantined_with_reasons(tmp_path):
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect

    folder = tmp_path / "lines"
    write_tsv_labeled_files(
        folder,
        [
            ("good.png", png_line("Total 42"), "Total 42"),
            ("empty.png", png_line("x", 1), ""),
            ("accent.png", png_line("cafe", 2), "café"),
            ("broken.png", png_line("cut", 3)[:60], "cut"),
            ("wide.png", _png(3000, 10), "wide"),
        ],
    )
    with (folder / "labels.tsv").open("a", encoding="utf-8") as f:
        f.write("no tab here\nmissing.png\tghost\n../outside.png\tescape\n")
    (folder / "unlisted.png").write_bytes(png_line("stray", 4))

    params = ocr_params(collect={**TINY_OCR["collect"], "embedded": False, "folder": str(folder)})
    params["ocr"]["validate"] = {"min_samples": 1}
    paths = TaskPaths(tmp_path / "project", "ocr")
    collect(make_task(params, "ocr"), paths)
    kept = read_jsonl(paths.raw_manifest)
    assert [r["label"] for r in kept] == ["Total 42"]
    reasons = {Path(q["origin"]).name: q["reason"] for q in read_jsonl(paths.quarantine)}
    assert "empty label" in reasons["empty.png"]
    assert "outside the charset" in reasons["accent.png"] and "é" in reasons["accent.png"]
    assert "unreadable" in reasons["broken.png"] or "truncated" in reasons["broken.png"]
    assert "too wide" in reasons["wide.png"]
    assert "not listed" in reasons["unlisted.png"]
    assert any("no tab" in r for r in reasons.values())
    assert sum("not a file under" in r for r in reasons.values()) == 2, "missing and outside-the-folder files"


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("decoder", ["ctc", "attention"])
def test_lifecycle_end_to_end(tmp_path, decoder):
    """Collect, validate, split, train, evaluate and promote a tiny model with each decoder; the metrics agree
    with the predictions file, and the evaluation pictures exist."""
    import torchmetrics.functional.text as T

    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.evaluate import run as evaluate
    from lifecycle.stages.promote import run as promote
    from lifecycle.stages.split import run as split
    from lifecycle.stages.train import run as train
    from lifecycle.stages.validate import run as validate

    params = ocr_params(model={**TINY_OCR["model"], "decoder": decoder})
    paths = TaskPaths(tmp_path, "ocr")
    for stage in (collect, validate, split, train):
        stage(make_task(params, "ocr"), paths)
    metrics = evaluate(make_task(params, "ocr"), paths)
    predictions = read_jsonl(paths.reports("evaluate") / "predictions.jsonl")
    read, truth = [p["prediction"]["text"] for p in predictions], [p["truth"] for p in predictions]
    assert metrics["primary_metric"] == "cer"
    assert metrics["cer"] == pytest.approx(float(T.char_error_rate(read, truth)), abs=1e-6)
    exact = np.mean([r == t for r, t in zip(read, truth, strict=True)])
    assert metrics["exact_match"] == pytest.approx(exact, abs=1e-6)
    assert 0 <= metrics["wer"]
    figures = paths.reports("evaluate") / "figures"
    assert (figures / "test_lines.png").stat().st_size > 0
    assert (figures / "errors.csv").read_text().startswith("input,truth,read,confidence,edits")
    assert (paths.reports("train") / "augmented.png").stat().st_size > 0
    decision = promote(make_task(params, "ocr"), paths)
    assert decision["promoted"] or decision["reasons"], decision
    json.dumps(decision)
