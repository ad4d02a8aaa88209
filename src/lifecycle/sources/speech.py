"""Spoken utterances synthesized with eSpeak NG, from the library inside the `espeakng-loader` wheel (no system
package) through ctypes: digit strings (PINs, phone numbers) and command words, 1-6 words each, in many voices.

A voice (the split's group) is an English accent plus a voice variant, e.g. `en-gb-scotland+f2`; each utterance
also draws its speaking rate and pitch. eSpeak keeps global state, so synthesis runs in worker processes, one
synthesizer each."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from lifecycle.samples import RawSample

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOCABULARY = DIGITS + COMMANDS
ESPEAK_RATE = 22_050  # what eSpeak NG synthesizes at
_RATE, _PITCH = 1, 3  # espeak_PARAMETER: espeakRATE (words per minute), espeakPITCH (0-100)
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: the callback receives every sample before espeak_Synth returns


@dataclass(frozen=True)
class Prosody:
    """Ranges each utterance's speaking rate and pitch are drawn from, its length in words, and the silence
    around the speech."""

    min_words: int = 1
    max_words: int = 6
    min_rate: int = 130  # words per minute
    max_rate: int = 230
    min_pitch: int = 25  # eSpeak's 0-100 scale (50 is the voice's own)
    max_pitch: int = 75
    max_pad_s: float = 0.3  # leading and trailing silence, each drawn up to this


@cache
def english_accents() -> tuple[str, ...]:
    """The English accents eSpeak NG's data has (en-us, en-gb, en-gb-scotland, ...), lower case."""
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "lang" / "gmw"
    return tuple(sorted(p.name.lower() for p in folder.iterdir() if p.name.lower().startswith("en")))


@cache
def voice_variants() -> tuple[str, ...]:
    import espeakng_loader

    return tuple(sorted(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir()))


def voice_problem(voice: str) -> str | None:
    """Why `voice` (accent+variant) is not a voice eSpeak NG has, or None."""
    accent, plus, variant = voice.partition("+")
    if accent not in english_accents():
        return f"'{voice}': no English accent '{accent}' (have {', '.join(english_accents())})"
    if not plus or variant not in voice_variants():
        return f"'{voice}': give a variant after '+', one of {', '.join(voice_variants())}"
    return None


class Synthesizer:
    """One eSpeak NG instance (the library is global: one per process)."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        # Without the data path libespeak-ng calls exit(1), killing the process with no exception.
        rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"eSpeak NG failed to initialise (returned {rate})")
        self.chunks: list[np.ndarray] = []
        callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self.callback = callback(self._receive)  # kept referenced: the library calls it
        self.lib.espeak_SetSynthCallback(self.callback)

    def _receive(self, wav: ctypes.Array, count: int, events: int) -> int:
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def say(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples at ESPEAK_RATE."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice '{voice}'")
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        self.chunks = []
        data = text.encode() + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, 1, 0, 1, None, None)  # position type 1: characters
        self.lib.espeak_Synchronize()
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


def random_words(
    rng: np.random.Generator, vocabulary: Sequence[str] = VOCABULARY, prosody: Prosody = Prosody()
) -> list[str]:
    """1-6 words of `vocabulary`: a digit string (a PIN, a phone number, `oh` for zero now and then) 40 % of the
    time, commands 30 %, a mix 30 %."""
    n = int(rng.integers(prosody.min_words, prosody.max_words + 1))
    kinds = [
        (0.4, [w for w in vocabulary if w in DIGITS]),
        (0.3, [w for w in vocabulary if w not in DIGITS]),
        (0.3, list(vocabulary)),
    ]
    kinds = [(weight, pool) for weight, pool in kinds if pool]
    weights = np.array([weight for weight, _ in kinds])
    pool = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))][1]
    return [str(rng.choice(pool)) for _ in range(n)]


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    rate: int
    pitch: int
    lead_s: float
    tail_s: float


def plan_utterances(
    count: int, voices: Sequence[str], seed: int, prosody: Prosody = Prosody(), vocabulary: Sequence[str] = VOCABULARY
) -> list[Utterance]:
    """`count` utterances spread evenly over `voices`, everything else drawn from `seed`."""
    rng = np.random.default_rng(seed)
    return [
        Utterance(
            " ".join(random_words(rng, vocabulary, prosody)),
            voices[i % len(voices)],
            int(rng.integers(prosody.min_rate, prosody.max_rate + 1)),
            int(rng.integers(prosody.min_pitch, prosody.max_pitch + 1)),
            float(rng.uniform(0.05, prosody.max_pad_s)),
            float(rng.uniform(0.05, prosody.max_pad_s)),
        )
        for i in range(count)
    ]


_WORKER: Synthesizer | None = None


def _start_worker() -> None:
    global _WORKER
    _WORKER = Synthesizer()


def synthesize(utterance: Utterance, synthesizer: Synthesizer | None = None) -> bytes:
    """The utterance as mono 16-bit WAV bytes at eSpeak's own rate, its samples as synthesized (eSpeak's silence
    trimmed, the planned silence added); decoding converts to 16 kHz. Not bit-reproducible: eSpeak's voice
    flutter carries state from one utterance to the next (no seed or re-initialisation resets it), so the same
    plan gives slightly different samples on every run; collection knows a planned sample by its origin."""
    from lifecycle.audio import encode_wav

    synth = synthesizer or _WORKER or Synthesizer()
    samples = synth.say(utterance.text, utterance.voice, utterance.rate, utterance.pitch)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 64)  # about -54 dBFS
    speech = samples[loud[0] : loud[-1] + 1] if len(loud) else samples
    lead, tail = (np.zeros(round(s * ESPEAK_RATE), np.int16) for s in (utterance.lead_s, utterance.tail_s))
    return encode_wav(np.concatenate([lead, speech, tail]), ESPEAK_RATE)


def synthesized_utterances(
    count: int,
    voices: Mapping[str, Sequence[str]],
    shares: Mapping[str, float],
    seed: int,
    prosody: Prosody = Prosody(),
    workers: int = 0,
    vocabulary: Sequence[str] = VOCABULARY,
) -> Iterator[RawSample]:
    """`count` utterances, each split's share spoken by that split's voices, the voice as the sample's group and
    its split decided here. `workers` processes synthesize (0: one per CPU core); the result does not depend on
    how many."""
    plans = []
    for k, (split, names) in enumerate(sorted(voices.items())):
        for i, u in enumerate(
            plan_utterances(round(count * shares[split]), names, seed * 1000 + k, prosody, vocabulary)
        ):
            plans.append((split, i, u))
    processes = workers or len(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")  # forking a process that has started torch's threads can hang
    with context.Pool(processes, initializer=_start_worker) as pool:
        audio = pool.imap(synthesize, [u for _, _, u in plans], chunksize=16)
        for (split, i, u), data in zip(plans, audio):
            yield RawSample(
                data=data,
                suffix=".wav",
                label=u.text,
                source="embedded",
                group=u.voice,
                split=split,
                origin=f"synthesized:{split}:{i}:{u.voice}:rate={u.rate}:pitch={u.pitch}",
            )
