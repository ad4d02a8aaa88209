"""Where asr's clips come from: utterances synthesized with eSpeak NG (the test split in voices training never
hears), a user folder and the landing zone, each a folder of audio files with a `labels.tsv` of transcripts; which
transcripts it takes: vocabulary words, or with an open vocabulary (`collect.alphabet`) words of its characters."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifecycle.audio import SILENCE_DBFS, audio_info, decode_audio, frame_levels_db
from lifecycle.samples import InvalidInput, InvalidSample, Label, RawSample, Rejected
from lifecycle.sequence import STRIDE
from lifecycle.tasks.asr.features import spectrogram_frames
from lifecycle.tasks.parts import Checks, Source


class AsrSource(Source):
    reads = ("collect", "validation", "split")

    @property
    def vocabulary(self) -> list[str]:
        return self.cfg.collect.vocabulary

    def collect(self, incoming: Path) -> Iterator[RawSample | Rejected]:
        from lifecycle.sources.folders import tsv_labeled_files
        from lifecycle.sources.speech import synthesized_utterances

        c = self.cfg.collect
        if incoming.is_dir():
            yield from tsv_labeled_files(incoming, "incoming")
        if c.folder is not None:
            yield from tsv_labeled_files(Path(c.folder), "folder")
        if c.embedded:
            yield from synthesized_utterances(
                c.utterances, c.voices, self.cfg.split.model_dump(), c.seed, c.prosody(), c.workers, c.vocabulary
            )

    @property
    def alphabet(self) -> str | None:
        return self.cfg.collect.alphabet

    def label_set(self) -> list[str] | None:
        """The vocabulary; none for an open vocabulary, whose words are not classes."""
        return None if self.alphabet else list(self.vocabulary)

    def groupings(self, row: dict[str, Any]) -> dict[str, str]:
        """The voice (accent+variant) and the accent alone: a test voice can be new while its accent is not."""
        voice = row.get("group")
        return {"voice": voice, "accent": voice.split("+")[0]} if isinstance(voice, str) and voice else {}

    def classes_of(self, label: Label) -> list[str]:
        return label.split() if isinstance(label, str) and not self.alphabet else []

    def transcript_problem(self, transcript: str) -> str | None:
        """Why a transcript cannot be learned (characters outside the alphabet, or words outside the vocabulary,
        naming them and the key that admits them); None when it can."""
        if self.alphabet:
            if unknown := sorted(set(transcript.replace(" ", "")) - set(self.alphabet)):
                return f"characters outside asr.collect.alphabet: {unknown} in {transcript!r}"
            return None
        if unknown := sorted({w for w in transcript.split() if w not in self.vocabulary}):
            return (
                f"words outside the vocabulary: {unknown} in {transcript!r}; add them to asr.collect.vocabulary, or "
                "for an open vocabulary set asr.collect.alphabet (the characters words are spelled with) and "
                "asr.model.constrain_to_vocabulary: false"
            )
        return None

    def inspect(self, data: bytes, label: Label) -> dict[str, Any]:
        v = self.cfg.validation
        if not isinstance(label, str) or not label.split():
            raise InvalidSample("empty transcript: a clip needs the words it says")
        if problem := self.transcript_problem(" ".join(label.split())):
            raise InvalidSample(problem)
        try:
            info = audio_info(data)
            if info["duration"] > v.max_seconds:
                raise InvalidSample(
                    f"clip is {info['duration']:.1f} s long, over validate.max_seconds ({v.max_seconds:g} s)"
                )
            if info["duration"] < v.min_seconds:
                raise InvalidSample(
                    f"clip is {info['duration']:.3f} s long, under validate.min_seconds ({v.min_seconds:g} s)"
                )
            waveform = decode_audio(data, v.max_seconds)
        except InvalidInput as e:
            raise InvalidSample(str(e)) from None
        loudest = float(frame_levels_db(waveform).max())
        if loudest < SILENCE_DBFS:
            raise InvalidSample(f"silence: the loudest 20 ms is at {loudest:.0f} dBFS")
        text = " ".join(label.split())
        frames = spectrogram_frames(waveform.shape[-1]) // STRIDE
        if frames < len(text):
            raise InvalidSample(
                f"too fast to learn: {info['duration']:.2f} s give {frames} frames of {STRIDE * 10} ms for the "
                f"{len(text)} characters of {text!r} (CTC emits at most one character per frame)"
            )
        return {
            "duration": info["duration"],
            "sample_rate": info["sample_rate"],
            "channels": info["channels"],
            "words": len(label.split()),
            "chars": len(text),
            "frames": frames,
        }

    def data_checks(self, rows: list[dict[str, Any]]) -> Checks:
        """Clip lengths within the validation bounds, transcripts only of vocabulary words (open vocabulary: of the
        alphabet's characters), and at least as many encoder frames as characters (CTC emits at most one character
        per frame)."""
        import great_expectations.expectations as gxe
        import pandas as pd

        v = self.cfg.validation
        words = rf"[{re.escape(self.alphabet)}]+" if self.alphabet else "|".join(map(re.escape, self.vocabulary))
        clips = pd.DataFrame.from_records(
            [
                {
                    "sample_id": r["sample_id"],
                    "transcript": r["label"],
                    "duration": r.get("duration"),
                    "chars": r.get("chars"),
                    "frames": r.get("frames"),
                }
                for r in rows
            ],
            columns=["sample_id", "transcript", "duration", "chars", "frames"],
        )
        return {
            "clips": (
                clips,
                [
                    gxe.ExpectColumnValuesToMatchRegex(column="transcript", regex=rf"^(?:{words})(?: (?:{words}))*$"),
                    gxe.ExpectColumnValuesToBeBetween(
                        column="duration", min_value=v.min_seconds, max_value=v.max_seconds
                    ),
                    gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="frames", column_B="chars", or_equal=True),
                ],
            )
        }
