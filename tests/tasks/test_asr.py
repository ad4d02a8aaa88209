"""Task `asr`: synthesized speech that is audible and timed for every word and voice, held-out voices that never
reach training, any audio converted to 16 kHz mono, CTC decoding on known paths, streaming that equals full
decoding, answers independent of batching, bad audio quarantined, and the lifecycle end to end."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TINY_ASR, make_task
from lifecycle.atomic import read_jsonl
from lifecycle.audio import SAMPLE_RATE, decode_audio
from lifecycle.config import ConfigError
from lifecycle.params import parse_params
from lifecycle.samples import InvalidInput
from lifecycle.sources.speech import ESPEAK_RATE, VOCABULARY, Synthesizer, Utterance, synthesize
from lifecycle.tasks import Task, build_task
from lifecycle.tasks.asr.config import DEFAULT_VOICES
from lifecycle.tasks.asr.streaming import chunks, file_chunks, streamed_outputs, transcribe_stream


def asr_params(**sections) -> dict:
    params = {"tasks": ["asr"], "asr": copy.deepcopy(TINY_ASR)}
    for name, values in sections.items():
        params["asr"][name] = {**params["asr"].get(name, {}), **values}
    return params


def asr_task(**sections) -> Task:
    return build_task("asr", asr_params(**sections)["asr"])


def wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module")
def synthesizer() -> Synthesizer:
    return Synthesizer()


def speech_seconds(samples: np.ndarray) -> float:
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 64)
    return (loud[-1] - loud[0] + 1) / ESPEAK_RATE if len(loud) else 0.0


def test_every_word_is_audible_and_timed_in_every_voice(synthesizer):
    """Each vocabulary word, in each default voice, a Klatt one and foreign accents, is speech-length and loud; more
    words and slower speech take longer."""
    voices = [v for names in DEFAULT_VOICES.values() for v in names]
    quieter = ["en-us+klatt", "de+m3", "fr+f2", "hi+klatt4"]  # Klatt voices come out a few dB lower
    for voice in voices + quieter:
        for word in VOCABULARY:
            samples = synthesizer.say(word, voice, 175, 50)
            seconds = speech_seconds(samples)
            rms_db = 10 * np.log10(np.mean((samples / 32768.0) ** 2) + 1e-12)
            assert 0.1 < seconds < 1.2, (voice, word, seconds)
            assert rms_db > (-35 if voice in voices else -40), (voice, word, rms_db)
    one = speech_seconds(synthesizer.say("seven", "en-us+m1", 175, 50))
    six = speech_seconds(synthesizer.say("seven seven seven seven seven seven", "en-us+m1", 175, 50))
    slow = speech_seconds(synthesizer.say("seven seven seven seven seven seven", "en-us+m1", 130, 50))
    fast = speech_seconds(synthesizer.say("seven seven seven seven seven seven", "en-us+m1", 230, 50))
    assert 4 * one < six < 8 * one
    assert slow > 1.3 * fast


def test_a_synthesized_clip_is_espeaks_own_samples_with_its_silence(synthesizer):
    """Stored at eSpeak's rate as it made it, decoded to 16 kHz mono."""
    utterance = Utterance("nine one one", "en+f1", 175, 50, lead_s=0.25, tail_s=0.1)
    data = synthesize(utterance, synthesizer)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype) == (ESPEAK_RATE, 1, "PCM_16")
    speech = speech_seconds(synthesizer.say("nine one one", "en+f1", 175, 50))
    assert info.duration == pytest.approx(0.35 + speech, abs=0.01)
    waveform = decode_audio(data, 30)[0]
    assert len(waveform) == pytest.approx(info.duration * SAMPLE_RATE, abs=2)
    assert float(waveform[: int(0.2 * SAMPLE_RATE)].abs().max()) < 1e-3, "the lead is silent"
    assert float(waveform[int(0.3 * SAMPLE_RATE) :].abs().max()) > 0.1, "then speech"


def test_held_out_voices_never_reach_training(tmp_path):
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.split import run as split

    params = asr_params()
    voices = params["asr"]["collect"]["voices"]
    paths = TaskPaths(tmp_path, "asr")
    collect(make_task(params, "asr"), paths)
    split(make_task(params, "asr"), paths)
    rows = read_jsonl(paths.split_manifest)
    by_split = {s: {r["group"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    for s, heard in by_split.items():
        assert heard == set(voices[s]), s
    assert all(set(r["label"].split()) <= set(VOCABULARY) for r in rows)
    assert {len(r["label"].split()) for r in rows} == {1, 2, 3}, "utterances of 1 to max_words words"
    again = collect(make_task(params, "asr"), paths)
    assert again.new == 0 and again.samples == len(rows), "re-synthesized plans are the samples already collected"


def test_utterances_use_the_configured_vocabulary():
    from lifecycle.sources.speech import random_words

    rng = np.random.default_rng(0)
    for vocabulary in (["yes", "no"], ["one", "two", "oh"], list(VOCABULARY)):
        said = {w for _ in range(300) for w in random_words(rng, vocabulary)}
        assert said == set(vocabulary)


@pytest.mark.parametrize("voices, message", [
    ({"train": ["en-us+m1"], "val": ["en-us+m1"], "test": ["en+f1"]}, "heard in training"),
    ({"train": ["en-au+m1"], "val": ["en-us+m3"], "test": ["en+f1"]}, "no language 'en-au'"),
    ({"train": ["en-us+*"], "val": ["en-us+*"], "test": ["en+f1"]}, "heard in training"),
    ({"train": ["en-us+robotic"], "val": ["en-us+m3"], "test": ["en+f1"]}, "give a variant"),
    ({"train": ["en-us+m1"], "test": ["en+f1"]}, "each of"),
])  # fmt: skip
def test_bad_voices_are_refused_naming_the_key(voices, message):
    with pytest.raises(ConfigError) as err:
        parse_params(asr_params(collect={"voices": voices}))
    assert "asr.collect" in str(err.value) and message in str(err.value)


def test_every_variant_of_an_accent_except_the_held_out_voices():
    """`accent+*` is each variant eSpeak ships (the Klatt ones too) that no split names; entries interleave so that
    utterances dealt out in order reach every accent."""
    from lifecycle.sources.speech import expand_voices, voice_variants

    voices = expand_voices({"train": ["en-us+*", "de+*"], "val": ["en-us+m3"], "test": ["de+f1"]})
    assert voices["val"] == ["en-us+m3"] and voices["test"] == ["de+f1"]
    assert len(voices["train"]) == 2 * len(voice_variants()) - 2
    assert {"en-us+klatt", "de+klatt4", "de+m3"} <= set(voices["train"])
    assert not {"en-us+m3", "de+f1"} & set(voices["train"])
    assert [v.split("+")[0] for v in voices["train"][:4]] == ["en-us", "de", "en-us", "de"]
    parse_params(asr_params(collect={"voices": {"train": ["en-us+*", "de+*"], "val": ["en+m3"], "test": ["fr+f1"]}}))


def test_joined_phrases_are_separated_by_their_pauses(synthesizer):
    """A joined clip is its phrases with the planned pauses between (the transcript is all of their words), and
    a wider word gap makes the same words longer."""
    from lifecycle.sources.speech import Prosody, plan_utterances

    plans = plan_utterances(20, ["en-us+m1"], 0, Prosody(max_words=2, joined_share=1.0, max_joined=3))
    assert all(len(u.phrases) in (2, 3) and " ".join(u.phrases) == u.text for u in plans)
    joined = Utterance("one two", "en-us+m1", 175, 50, 0.1, 0.1, gaps_s=(0.8,), spoken="one,two")
    parts = [speech_seconds(synthesizer.say(w, "en-us+m1", 175, 50)) for w in ("one", "two")]
    waveform = decode_audio(synthesize(joined, synthesizer), 30)[0].numpy()
    assert len(waveform) / SAMPLE_RATE == pytest.approx(0.2 + 0.8 + sum(parts), abs=0.02)
    gap = slice(int((0.1 + parts[0] + 0.05) * SAMPLE_RATE), int((0.1 + parts[0] + 0.75) * SAMPLE_RATE))
    assert np.abs(waveform[gap]).max() < 1e-3, "silence between the phrases"
    words = "seven seven seven"
    tight, spaced = (speech_seconds(synthesizer.say(words, "en-us+m1", 175, 50, 50, g)) for g in (0, 30))
    assert spaced > tight + 0.3


def test_yaml_booleans_in_the_vocabulary_get_a_hint():
    with pytest.raises(ConfigError) as err:
        parse_params(asr_params(collect={"vocabulary": ["zero", True, False]}))
    assert "asr.collect.vocabulary" in str(err.value) and "quote" in str(err.value)
    assert "true/false" in str(err.value), "the words YAML 1.2 still reads as booleans"


def test_any_rate_and_channel_count_becomes_16k_mono():
    t = np.arange(44_100) / 44_100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, np.zeros_like(tone)], axis=1)  # the tone on the left only: mixing halves it
    waveform = decode_audio(wav(stereo, 44_100), 30)
    assert waveform.shape == (1, SAMPLE_RATE) and waveform.dtype == torch.float32
    spectrum = torch.fft.rfft(waveform[0]).abs()
    assert int(spectrum.argmax()) == pytest.approx(440, abs=1), "the pitch survives resampling"
    assert float(waveform.abs().max()) == pytest.approx(0.25, abs=0.01)
    low = decode_audio(wav((tone[::5] * 32767).astype(np.int16), 8_820), 30)  # 8.82 kHz int16 mono
    assert low.shape[-1] == pytest.approx(SAMPLE_RATE, abs=2)
    flac = decode_audio(wav(np.repeat(tone[:, None], 4, axis=1), 44_100, "PCM_24", "FLAC"), 30)  # 4 channels
    assert float(flac.abs().max()) == pytest.approx(0.5, abs=0.01), "identical channels average to themselves"


def test_bad_audio_is_a_clear_4xx():
    silence = wav(np.zeros(16_000 * 3), 16_000)
    for data, status, words in [(b"", 400, "empty"), (b"RIFF but not really a wave file", 415, "not audio"),
                                (silence, 413, "longest accepted is 2 s")]:  # fmt: skip
        with pytest.raises(InvalidInput) as err:
            decode_audio(data, 2)
        assert err.value.status == status and words in str(err.value), str(err.value)


def logits_for(outputs, text_frames: list[str]) -> dict[str, torch.Tensor]:
    """Logits whose best path spells the frames given ('' for a blank frame)."""
    charset = outputs.codec.charset
    path = [0 if f == "" else charset.index(f) + 1 for f in text_frames]
    logits = torch.full((len(path), len(charset) + 1), -5.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 5.0
    return {"logits": logits[None], "lengths": torch.tensor([len(path)])}


def frames(spelled: str) -> list[str]:
    """'nn_ii' -> ['n', 'n', '', 'i', 'i']; '_' is a blank frame, '.' a space character."""
    return ["" if c == "_" else " " if c == "." else c for c in spelled]


def test_ctc_decoding_on_known_sequences():
    outputs = asr_task(model={"vocabulary_decoding": "nearest_word"}).outputs
    raw = asr_task(model={"constrain_to_vocabulary": False}).outputs
    cases = {
        "nnn_ii_nn_ee..oo_nn_e": "nine one",  # repeats collapse, blanks separate
        "__ss_ee_vv_ee_nn__": "seven",
        "o_o": "oo",  # a blank between repeats keeps both
        "t_hh_rr_ee_e": "three",
        "t_hh_rr_eee": "thre",  # without a blank between them, the double e collapses
    }
    for spelled, expected in cases.items():
        assert raw.read(logits_for(raw, frames(spelled)))[0][0] == expected, spelled
    assert outputs.read(logits_for(outputs, frames("nire")))[0][0] == "nine", "the nearest vocabulary word"
    assert outputs.read(logits_for(outputs, frames("nineone.stup")))[0][0] == "nine one stop", "a missed pause"
    assert outputs.read(logits_for(outputs, frames("t_hh_rr_eee")))[0][0] == "three"
    noise = outputs.read(logits_for(outputs, frames("nsvt" * 2000)))[0][0]  # every cut tried would take hours
    assert noise in VOCABULARY, "a token longer than two words (noise read as letters) maps to one word"
    text, confidence = outputs.read(logits_for(outputs, frames("____")))[0]
    assert text == "" and 0.99 < confidence <= 1.0


def trained_looking(task) -> torch.nn.Module:
    """A random model with non-trivial normalisation statistics, in eval mode."""
    torch.manual_seed(0)
    model = task.network.build().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def clip(text: str, voice: str = "en-us+m1", seconds: float = 0.2) -> bytes:
    return synthesize(Utterance(text, voice, 175, 50, seconds, seconds))


def test_streaming_equals_full_decoding_on_a_short_clip(tmp_path):
    """Chunks that see the whole clip as context give exactly the full-context outputs, stitched in order, from
    memory and from a file at another rate; the streamed transcript grows to the full one."""
    task = asr_task()
    model = trained_looking(task)
    data = clip("one two three four five six")
    spec = task.codec.prepare(task.codec.decode(data))
    with torch.no_grad():
        full = model(spec[None], torch.tensor([spec.shape[-1]]))
        streamed = streamed_outputs(model, chunks(spec, chunk_frames=7, context_frames=1000))
    assert streamed["logits"].shape == full["logits"].shape
    assert torch.allclose(streamed["logits"], full["logits"], atol=1e-4)
    assert torch.allclose(streamed["features"], full["features"], atol=1e-4)

    waveform = task.codec.decode(data)[0].numpy()
    stereo_44k = tmp_path / "clip.wav"
    from torchaudio.functional import resample

    upsampled = resample(torch.from_numpy(waveform), SAMPLE_RATE, 44_100).numpy()
    sf.write(stereo_44k, np.stack([upsampled, upsampled], 1), 44_100)
    streaming = task.cfg.model.streaming.model_copy(update={"chunk_seconds": 0.28, "context_seconds": 60})
    pieces = list(file_chunks(stereo_44k, task.codec.features, streaming))
    assert len(pieces) > 3
    with torch.no_grad():
        from_file = streamed_outputs(model, iter(pieces))
    assert from_file["logits"].shape == full["logits"].shape
    assert torch.allclose(from_file["logits"], full["logits"], atol=0.05), "resampled per window, the same audio"
    partial = [text for _, text in transcribe_stream(task.outputs, model, iter(pieces))]
    assert partial[-1] == task.outputs.read(full)[0][0]
    configured = file_chunks(stereo_44k, task.codec.features, task.cfg.model.streaming)
    assert list(task.outputs.stream_file(model, stereo_44k)) == list(transcribe_stream(task.outputs, model, configured))


def test_a_clip_reads_the_same_alone_or_batched_with_longer_and_streamed_ones():
    task = asr_task()
    codec, network, outputs = task.codec, task.network, task.outputs
    model = trained_looking(task)
    above = task.cfg.model.streaming.above_seconds
    long_clip = torch.cat([codec.decode(clip("one two three four five six seven eight nine"))] * 3, -1)
    assert long_clip.shape[-1] > above * SAMPLE_RATE, "long enough to be streamed"
    inputs = [codec.decode(clip("go")), codec.decode(clip("one two three four five")), long_clip]
    prepared = [codec.prepare(x) for x in inputs]
    with torch.no_grad():
        together = network.forward(model, codec.batch_inputs(prepared))
        alone = [network.forward(model, codec.batch_inputs([x])) for x in prepared]
    assert together.features is together.outputs["features"]
    batched = outputs.predict(together.outputs)
    for i, single in enumerate(alone):
        assert outputs.predict(single.outputs)[0]["text"] == batched[i]["text"]
        assert outputs.predict(single.outputs)[0]["confidence"] == pytest.approx(batched[i]["confidence"], abs=1e-5)
        assert torch.allclose(single.features[0], together.features[i], atol=1e-5)


def test_bad_clips_are_quarantined_with_reasons(tmp_path):
    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect

    folder = tmp_path / "clips"
    folder.mkdir()
    good = clip("yes")
    files = {
        "good.wav": (good, "yes"),
        "stereo.wav": (wav(np.stack([decode_audio(good, 30)[0].numpy()] * 2, 1), 16_000), "yes"),  # converted
        "hello.wav": (clip("no", "en+f1"), "hello no"),
        "empty.wav": (clip("up", "en+m3"), ""),
        "silent.wav": (wav(np.zeros(16_000), 16_000), "stop"),
        "rushed.wav": (clip("go", "en+f1"), "seven seven seven seven seven seven"),  # too few frames
        "long.wav": (wav(np.random.default_rng(0).normal(0, 0.1, 8_000 * 31), 8_000), "go"),
        "broken.wav": (good[:30], "yes"),
        "text.wav": (b"this is not audio at all", "yes"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    (folder / "labels.tsv").write_text("".join(f"{n}\t{t}\n" for n, (_, t) in files.items()) + "ghost.wav\tgo\n")
    params = asr_params(collect={"embedded": False, "folder": str(folder)})
    paths = TaskPaths(tmp_path / "project", "asr")
    collect(make_task(params, "asr"), paths)
    kept = {Path(r["origin"]).name: r for r in read_jsonl(paths.raw_manifest)}
    assert sorted(kept) == ["good.wav", "stereo.wav"] and kept["stereo.wav"]["channels"] == 2
    reasons = {Path(q["origin"]).name: q["reason"] for q in read_jsonl(paths.quarantine)}
    assert "outside the vocabulary" in reasons["hello.wav"] and "hello" in reasons["hello.wav"]
    assert "empty transcript" in reasons["empty.wav"]
    assert "silence" in reasons["silent.wav"]
    assert "too fast to learn" in reasons["rushed.wav"] and "35 characters" in reasons["rushed.wav"]
    assert "31.0 s" in reasons["long.wav"] and "max_seconds" in reasons["long.wav"]
    assert "not audio" in reasons["broken.wav"] or "corrupt" in reasons["broken.wav"]
    assert "not audio" in reasons["text.wav"]
    assert any("not a file under" in r for r in reasons.values()), "a listed file that does not exist"


def test_lifecycle_end_to_end(tmp_path):
    """Collect, validate, split, train, evaluate and promote a tiny model: the metrics agree with the predictions
    file; the pictures, the error list and the streaming-vs-full figures exist."""
    import torchmetrics.functional.text as T

    from lifecycle.paths import TaskPaths
    from lifecycle.stages.collect import run as collect
    from lifecycle.stages.evaluate import run as evaluate
    from lifecycle.stages.promote import run as promote
    from lifecycle.stages.split import run as split
    from lifecycle.stages.train import run as train
    from lifecycle.stages.validate import run as validate

    params = asr_params()
    paths = TaskPaths(tmp_path, "asr")
    for stage in (collect, validate, split, train):
        stage(make_task(params, "asr"), paths)
    metrics = evaluate(make_task(params, "asr"), paths)
    predictions = read_jsonl(paths.reports("evaluate") / "predictions.jsonl")
    heard, truth = [p["prediction"]["text"] for p in predictions], [p["truth"] for p in predictions]
    assert metrics["primary_metric"] == "wer"
    assert metrics["wer"] == pytest.approx(float(T.word_error_rate(heard, truth)), abs=1e-6)
    assert metrics["cer"] == pytest.approx(float(T.char_error_rate(heard, truth)), abs=1e-6)
    assert 0 <= metrics["streaming_vs_full_wer"] <= 1 and metrics["long_recording_seconds"] > 5
    figures = paths.reports("evaluate") / "figures"
    assert (figures / "test_spectrograms.png").stat().st_size > 0
    assert (figures / "errors.csv").read_text().startswith("input,truth,transcript,confidence")
    assert (paths.reports("train") / "augmented.png").stat().st_size > 0
    decision = promote(make_task(params, "asr"), paths)
    assert decision["promoted"] or decision["reasons"], decision
    json.dumps(decision)


def test_image_augmentation_is_refused_for_audio():
    with pytest.raises(ConfigError, match="asr.model.augment"):
        make_task(asr_params(train={"augment": [{"name": "RandomAffine", "args": {"degrees": 5}}]}), "asr")


SHIFTS_SEEN = ("noise", "fast", "quiet", "telephone")


def test_descriptors_see_noise_level_and_speed():
    task = asr_task()
    codec, monitoring = task.codec, task.monitoring
    data = clip("one two three four five six")
    rng = np.random.default_rng(0)
    plain, noisy, fast, quiet, telephone = monitoring.descriptors(
        [codec.decode(data)] + [codec.decode(monitoring.shift(data, kind, rng)) for kind in SHIFTS_SEEN]
    )
    assert noisy["snr_db"] < plain["snr_db"] - 10
    assert fast["duration"] == pytest.approx(plain["duration"] / 1.4, rel=0.01)
    assert quiet["rms_db"] == pytest.approx(plain["rms_db"] - 30, abs=0.5)
    assert telephone["spectral_centroid"] != pytest.approx(plain["spectral_centroid"], rel=0.05)
    assert 1 < plain["speech_rate"] < 8, "syllable-like peaks per second of speech"


def test_transcribe_command_streams_a_file_and_prints_partial_transcripts(promoted_all, tmp_path, capsys):
    """`lifecycle transcribe --stream` prints the transcript so far after each chunk of a file read a window at a
    time; without --stream it prints the production model's answer as JSON."""
    from lifecycle.cli import main
    from lifecycle.serving import Predictor

    paths, params, stored = promoted_all["asr"]
    clips = [decode_audio(clip(text), 30)[0].numpy() for text in ("one two three", "stop go", "nine one one")]
    recording = tmp_path / "talk.wav"
    sf.write(recording, np.tile(np.concatenate(clips), (2, 1)).T, 22_050)  # stereo, another rate
    params_file = paths.root / "params.yaml"

    assert main(["transcribe", str(recording), "--stream", "--params", str(params_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    partial = [line for line in lines if line.startswith("[")]
    seconds = [float(line[1:].split(" s]")[0]) for line in partial]
    assert len(partial) >= 3 and seconds == sorted(seconds)
    assert seconds[-1] == pytest.approx(sf.info(recording).duration, abs=0.05)
    assert lines[-1] == partial[-1].split(" s] ", 1)[1], "the last line is the final transcript"

    assert main(["transcribe", str(recording), "--params", str(params_file)]) == 0
    answer = json.loads(capsys.readouterr().out)
    expected = Predictor.from_store(stored, "cpu").predict([decode_audio(recording.read_bytes(), 300)])[0]
    assert answer == {**expected, "model": stored.tag}

    assert main(["transcribe", str(tmp_path / "missing.wav"), "--params", str(params_file)]) == 2
    assert "no such audio file" in capsys.readouterr().err
