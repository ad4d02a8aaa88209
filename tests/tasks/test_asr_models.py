"""asr's architectures and vocabularies: the Conformer encoder (its frames and lengths, one training step, answers
independent of batching and of streaming, sizes refused naming the key), and an open vocabulary: a folder of clips
saying words outside the default vocabulary collects, trains, scores a WER and answers; a closed vocabulary
quarantines those words naming them and the keys that admit them."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from test_asr import asr_params, asr_task, clip

from conftest import make_task
from lifecycle.atomic import read_jsonl
from lifecycle.audio import SAMPLE_RATE, decode_audio
from lifecycle.config import ConfigError
from lifecycle.params import parse_params
from lifecycle.paths import TaskPaths
from lifecycle.sources.speech import VOCABULARY, Synthesizer, Utterance, synthesize
from lifecycle.tasks.asr.streaming import chunks, streamed_outputs
from lifecycle.trainer import AmpStep, build_optimizer

CONFORMER = {
    "arch": "conformer",
    "conformer": {"dim": 32, "layers": 2, "heads": 2, "ffn_dim": 64, "kernel_size": 7, "subsampling_channels": 8},
}
ALPHABET = "abcdefghijklmnopqrstuvwxyz'"
OPEN = {"collect": {"embedded": False, "alphabet": ALPHABET}, "model": {**CONFORMER, "constrain_to_vocabulary": False}}
NEW_WORDS = ["red", "blue", "green", "cat", "dog", "hello", "purple", "banana", "don't"]


def test_conformer_frames_lengths_and_one_training_step():
    """Frames are 40 ms (the spectrogram's widths / 4), each input's length is its own frames, and a training step
    of the AMP trainer gives a finite CTC loss and changes the weights."""
    torch.manual_seed(0)
    task = asr_task(model=CONFORMER)
    codec, network = task.codec, task.network
    model = network.build()
    texts = ["go", "one two three"]
    items = [codec.transform(train=True)(codec.decode(clip(t)), codec.encode_target(t)) for t in texts]
    inputs, targets = codec.collate(items)
    widths = inputs["widths"].tolist()
    assert widths[0] < widths[1]
    amp = AmpStep(torch.device("cpu"), "bf16")
    optimizer = build_optimizer(model, task.cfg.train)
    before = [p.detach().clone() for p in model.parameters()]
    with amp.autocast():
        outputs = network.forward(model.train(), inputs).outputs
        loss = network.loss(outputs, targets)
    assert outputs["lengths"].tolist() == [w // 4 for w in widths]
    assert outputs["logits"].shape == (2, max(widths) // 4, len(codec.charset) + 1)
    assert all(n >= len(t) for n, t in zip(outputs["lengths"].tolist(), targets)), "CTC needs a frame per character"
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    amp.step(loss, optimizer, model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_conformer_answers_alone_batched_and_streamed_alike():
    """Padding is masked in the subsampling, attention and depthwise convolutions, so a clip's outputs do not depend
    on a longer clip in its batch; chunks that see the whole clip give the full-context outputs."""
    task = asr_task(model=CONFORMER)
    codec, network = task.codec, task.network
    torch.manual_seed(0)
    model = network.build().eval()
    prepared = [codec.prepare(codec.decode(clip(t))) for t in ("go", "one two three four five")]
    with torch.no_grad():
        together = network.forward(model, codec.batch_inputs(prepared)).outputs
        alone = network.forward(model, codec.batch_inputs(prepared[:1])).outputs
        streamed = streamed_outputs(model, chunks(prepared[0], chunk_frames=5, context_frames=1000))
    frames = int(alone["lengths"][0])
    assert int(together["lengths"][0]) == frames
    assert torch.allclose(together["logits"][0, :frames], alone["logits"][0], atol=1e-4)
    assert torch.allclose(together["features"][0], alone["features"][0], atol=1e-4)
    assert torch.allclose(streamed["logits"], alone["logits"], atol=1e-4)
    assert task.outputs.predict(together)[0] == pytest.approx(task.outputs.predict(alone)[0])


@pytest.mark.parametrize("section, key, words", [
    ({"model": {"conformer": {"dim": 30, "heads": 4}}}, "asr.model.conformer", "multiple of heads"),
    ({"model": {"conformer": {"kernel_size": 8}}}, "asr.model.conformer", "odd"),
    ({"model": {"arch": "transformer"}}, "asr.model.arch", "conformer"),
    ({"collect": {"alphabet": "ab cd"}}, "asr.collect.alphabet", "no spaces"),
    ({"collect": {"alphabet": "abc"}}, "asr.collect", "alphabet lacks"),
    ({"collect": {"embedded": False, "alphabet": ALPHABET}}, "model.constrain_to_vocabulary", "open vocabulary"),
])  # fmt: skip
def test_bad_model_and_vocabulary_settings_are_refused_naming_the_key(section, key, words):
    with pytest.raises(ConfigError) as err:
        parse_params(asr_params(**section))
    assert key in str(err.value) and words in str(err.value), str(err.value)


@pytest.fixture(scope="module")
def new_words_folder(tmp_path_factory) -> Path:
    """Clips of one or two words outside the default vocabulary in three voices (stored at the model's rate: no
    resampling in every epoch), listed in labels.tsv; and one whose transcript has a capital, outside the alphabet."""
    folder = tmp_path_factory.mktemp("new_words")
    synthesizer = Synthesizer()
    voices = ["en-us+m1", "en+f1", "en-029+m7"]
    said = {
        f"clip{i:02d}.wav": " ".join([NEW_WORDS[i % 9]] + ([NEW_WORDS[(4 * i + 1) % 9]] if i % 3 else []))
        for i in range(27)
    }
    rows = []
    for i, (name, text) in enumerate([*said.items(), ("shout.wav", "Hello")]):
        utterance = Utterance(text.lower(), voices[i % 3], 175, 50, 0.1, 0.1)
        waveform = decode_audio(synthesize(utterance, synthesizer), 30)[0].numpy()
        sf.write(folder / name, waveform, SAMPLE_RATE, subtype="PCM_16")
        rows.append(f"{name}\t{text}\n")
    (folder / "labels.tsv").write_text("".join(rows))
    assert not {w for row in rows for w in row.split("\t")[1].split()} & set(VOCABULARY)
    return folder


def test_a_closed_vocabulary_quarantines_new_words_naming_them_and_the_keys(new_words_folder, tmp_path):
    from lifecycle.stages.collect import run as collect

    params = asr_params(collect={"embedded": False, "folder": str(new_words_folder)})
    paths = TaskPaths(tmp_path, "asr")
    collect(make_task(params, "asr"), paths)
    assert read_jsonl(paths.raw_manifest) == []
    reasons = {Path(q["origin"]).name: q["reason"] for q in read_jsonl(paths.quarantine)}
    assert len(reasons) == 28
    said = dict(row.split("\t") for row in (new_words_folder / "labels.tsv").read_text().splitlines())
    for name, reason in reasons.items():
        assert f"outside the vocabulary: {sorted(set(said[name].split()))}" in reason, reason
    for key in ("asr.collect.vocabulary", "asr.collect.alphabet", "asr.model.constrain_to_vocabulary: false"):
        assert key in reasons["clip07.wav"]


def test_an_open_vocabulary_collects_trains_scores_and_answers(new_words_folder, tmp_path):
    """With an alphabet and constrain_to_vocabulary false: every clip of new words is collected (the one with a
    capital quarantined naming it) and passes the data checks, split, trained with the Conformer, scored by WER over
    the spelled transcripts, and `lifecycle predict`'s path answers each test clip with a string, as evaluation did;
    export refuses the model's batches naming why, as it refuses the CRNN's."""
    import torchmetrics.functional.text as T

    from lifecycle.batch import predict_folder
    from lifecycle.export import NotExportable, export
    from lifecycle.models import save_model
    from lifecycle.serving import Predictor
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.evaluate import run as evaluate
    from lifecycle.stages.split import run as split
    from lifecycle.stages.train import run as train

    params = asr_params(**copy.deepcopy(OPEN))
    params["asr"]["collect"]["folder"] = str(new_words_folder)
    params["asr"]["train"].update(epochs=2, batch_size=4, precision="fp32")
    paths = TaskPaths(tmp_path, "asr")
    task = make_task(params, "asr")
    collect(task, paths)
    [shout] = read_jsonl(paths.quarantine)
    assert "characters outside asr.collect.alphabet: ['H']" in shout["reason"]
    assert_transcripts_pass_the_data_checks(task, read_jsonl(paths.raw_manifest))
    for stage in (split, train):
        stage(task, paths)
    rows = read_jsonl(paths.split_manifest)
    assert len(rows) == 27 and {w for r in rows for w in r["label"].split()} == set(NEW_WORDS)

    metrics = evaluate(make_task(params, "asr"), paths)
    predictions = read_jsonl(paths.reports("evaluate") / "predictions.jsonl")
    heard, truth = [p["prediction"]["text"] for p in predictions], [p["truth"] for p in predictions]
    assert metrics["primary_metric"] == "wer" and 0 <= metrics["wer"]
    assert metrics["wer"] == pytest.approx(float(T.word_error_rate(heard, truth)), abs=1e-6)

    clips = tmp_path / "test_clips"
    clips.mkdir()
    test_rows = {r["sample_id"]: r for r in rows if r["split"] == "test"}
    for sample_id, row in test_rows.items():
        shutil.copy(paths.raw / row["path"], clips / f"{sample_id}.wav")
    predictor = Predictor.from_file(paths.model, "candidate", "cpu")
    result = predict_folder(predictor, clips, tmp_path / "answers.jsonl", batch_size=4, progress=False)
    answers = {Path(a["input"]).stem: a for a in read_jsonl(tmp_path / "answers.jsonl")}
    assert result.predicted == len(test_rows) == len(predictions) and not result.failed
    for p in predictions:
        answer = answers[p["sample_id"]]
        assert isinstance(answer["text"], str) and answer["text"] == p["prediction"]["text"]
        assert answer["confidence"] == pytest.approx(p["prediction"]["confidence"], abs=1e-5)

    params["asr"]["model"]["arch"] = "crnn"
    crnn = make_task(params, "asr")
    save_model(tmp_path / "crnn.pt", crnn, crnn.network.build().state_dict(), {})
    for model_file in (paths.model, tmp_path / "crnn.pt"):
        with pytest.raises(NotExportable, match="Python values besides tensors"):
            export(model_file, paths, "pt2", tmp_path / "model.pt2")
    json.dumps(metrics)


def assert_transcripts_pass_the_data_checks(task, rows: list[dict]) -> None:
    """The validate stage's transcript expectation (a regex) holds for every collected transcript and fails one
    with a character outside the alphabet; the words are no classes (no per-word balance)."""
    import re

    table, expectations = task.source.data_checks(rows)["clips"]
    [regex] = [e.regex for e in expectations if type(e).__name__ == "ExpectColumnValuesToMatchRegex"]
    assert all(re.search(regex, t) for t in table["transcript"])
    assert not re.search(regex, "hello World") and not re.search(regex, "two  spaces")
    assert task.source.label_set() is None and task.source.classes_of("red cat") == []
