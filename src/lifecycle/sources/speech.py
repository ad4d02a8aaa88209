"""Spoken utterances synthesized with eSpeak NG, from the library inside the `espeakng-loader` wheel (no system
package) through ctypes: digit strings (PINs, phone numbers) and command words, 1-6 words each, in many voices.

A voice (the split's group) is an accent plus a voice variant, e.g. `en-gb-scotland+f2`: the accent is any language
eSpeak NG speaks (a non-English one reads the English text with its own sounds: a foreign accent), the variant one
of the ~100 it ships (formant sets, Klatt voices, whisper ...); `accent+*` stands for every variant no other split
names. Each utterance also draws its speaking rate, pitch, intonation range and gap between words, and some are
several phrases joined by pauses (as in a longer recording). eSpeak keeps global state, so synthesis runs in worker
processes, one synthesizer each."""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from lifecycle.samples import RawSample

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOCABULARY = DIGITS + COMMANDS
ESPEAK_RATE = 22_050  # what eSpeak NG synthesizes at
# espeak_PARAMETER: espeakRATE (words per minute), espeakPITCH (0-100), espeakRANGE (intonation, 0-100),
# espeakWORDGAP (pause between words, 10 ms units at the normal rate)
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: the callback receives every sample before espeak_Synth returns


@dataclass(frozen=True)
class Prosody:
    """Ranges each utterance's speaking rate, pitch, intonation range and word gap are drawn from, its length in
    words, the silence around the speech, and how often (and how many) phrases are joined into one clip."""

    min_words: int = 1
    max_words: int = 6
    min_rate: int = 130  # words per minute
    max_rate: int = 230
    min_pitch: int = 25  # eSpeak's 0-100 scale (50 is the voice's own)
    max_pitch: int = 75
    max_pad_s: float = 0.3  # leading and trailing silence, each drawn up to this
    min_range: int = 50  # intonation: eSpeak's 0-100 pitch range (0 monotone, 50 the voice's own)
    max_range: int = 50
    max_word_gap: int = 0  # extra pause between words, 10 ms units
    joined_share: float = 0.0  # share of clips that are 2..max_joined phrases with pauses between
    max_joined: int = 4
    max_join_gap_s: float = 1.5


@cache
def accents() -> tuple[str, ...]:
    """Every language eSpeak NG's data has (en-us, en-gb-scotland, de, fr, hi, ...), lower case."""
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "lang"
    return tuple(sorted(p.name.lower() for p in folder.rglob("*") if p.is_file()))


def english_accents() -> tuple[str, ...]:
    """The English accents eSpeak NG's data has (en-us, en-gb, en-gb-scotland, ...)."""
    return tuple(a for a in accents() if a == "en" or a.startswith("en-"))


# libespeak-ng 1.52 crashes (SIGSEGV) speaking this variant at a low pitch with a wide intonation range
UNSTABLE_VARIANTS = frozenset({"Demonic"})


@cache
def voice_variants() -> tuple[str, ...]:
    """The voice variants eSpeak NG ships, less those that crash it."""
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.name not in UNSTABLE_VARIANTS))


def voice_problem(voice: str) -> str | None:
    """Why `voice` (accent+variant, or accent+* for every variant) is not a voice eSpeak NG has, or None."""
    accent, plus, variant = voice.partition("+")
    if accent not in accents():
        return f"'{voice}': eSpeak NG has no language '{accent}' (have {', '.join(accents())})"
    if not plus or (variant != "*" and variant not in voice_variants()):
        return f"'{voice}': give a variant after '+' (or * for all), one of {', '.join(voice_variants())}"
    return None


def expand_voices(voices: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Each split's voices with every `accent+*` replaced by that accent with each variant that no split names
    explicitly (so the splits stay disjoint), interleaved (one voice of each entry in turn) so that utterances
    dealt out in order reach every accent."""
    named = {v for names in voices.values() for v in names if not v.endswith("+*")}
    expanded: dict[str, list[str]] = {}
    for split, names in voices.items():
        entries = [
            [f"{accent}+{v}" for v in voice_variants() if f"{accent}+{v}" not in named] if variant == "*" else [voice]
            for voice, (accent, _, variant) in ((v, v.partition("+")) for v in names)
        ]
        turns = itertools.zip_longest(*entries)
        expanded[split] = list(dict.fromkeys(v for turn in turns for v in turn if v is not None))
    return expanded


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

    def say(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int = 50, word_gap: int = 0) -> np.ndarray:
        """int16 samples at ESPEAK_RATE."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice '{voice}'")
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_WORDGAP, word_gap)):
            self.lib.espeak_SetParameter(parameter, value, 0)
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
    text: str  # the phrases, joined by spaces
    voice: str
    rate: int
    pitch: int
    lead_s: float
    tail_s: float
    pitch_range: int = 50
    word_gap: int = 0
    gaps_s: tuple[float, ...] = ()  # pauses between the phrases; a phrase ends at each comma of `spoken`
    spoken: str = ""  # what eSpeak reads when it differs from `text`: phrases separated by commas

    @property
    def phrases(self) -> list[str]:
        return (self.spoken or self.text).split(",")


def plan_utterances(
    count: int, voices: Sequence[str], seed: int, prosody: Prosody = Prosody(), vocabulary: Sequence[str] = VOCABULARY
) -> list[Utterance]:
    """`count` utterances spread evenly over `voices`, everything else drawn from `seed`."""
    rng = np.random.default_rng(seed)
    return [_plan(rng, voices[i % len(voices)], prosody, vocabulary) for i in range(count)]


def _plan(rng: np.random.Generator, voice: str, prosody: Prosody, vocabulary: Sequence[str]) -> Utterance:
    joined = prosody.max_joined > 1 and float(rng.uniform()) < prosody.joined_share
    phrases = [
        " ".join(random_words(rng, vocabulary, prosody))
        for _ in range(int(rng.integers(2, prosody.max_joined + 1)) if joined else 1)
    ]
    return Utterance(
        " ".join(phrases),
        voice,
        int(rng.integers(prosody.min_rate, prosody.max_rate + 1)),
        int(rng.integers(prosody.min_pitch, prosody.max_pitch + 1)),
        float(rng.uniform(0.05, prosody.max_pad_s)),
        float(rng.uniform(0.05, prosody.max_pad_s)),
        int(rng.integers(prosody.min_range, prosody.max_range + 1)),
        int(rng.integers(0, prosody.max_word_gap + 1)),
        tuple(float(rng.uniform(0.1, prosody.max_join_gap_s)) for _ in phrases[1:]),
        ",".join(phrases) if joined else "",
    )


_WORKER: Synthesizer | None = None


def _crash_named(audio: Iterator[bytes]) -> Iterator[bytes]:
    """A synthesis process that dies (libespeak-ng can crash on some variants and prosody) fails collect with a
    message; a multiprocessing.Pool would instead wait forever for the lost utterances."""
    try:
        yield from audio
    except BrokenProcessPool as e:
        raise RuntimeError(
            "an eSpeak NG synthesis process died (a crash inside libespeak-ng, e.g. a voice variant it cannot render "
            "at this pitch and intonation); remove the variant from asr.collect.voices or narrow the prosody ranges"
        ) from e


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
    u = utterance
    pieces = [np.zeros(round(u.lead_s * ESPEAK_RATE), np.int16)]
    for k, phrase in enumerate(u.phrases):
        if k:
            pieces.append(np.zeros(round(u.gaps_s[k - 1] * ESPEAK_RATE), np.int16))
        pieces.append(_trimmed(synth.say(phrase, u.voice, u.rate, u.pitch, u.pitch_range, u.word_gap)))
    pieces.append(np.zeros(round(u.tail_s * ESPEAK_RATE), np.int16))
    return encode_wav(np.concatenate(pieces), ESPEAK_RATE)


def _trimmed(samples: np.ndarray) -> np.ndarray:
    """Samples without eSpeak's own leading and trailing silence."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 64)  # about -54 dBFS
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


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
    for k, (split, names) in enumerate(sorted(expand_voices(voices).items())):
        for i, u in enumerate(
            plan_utterances(round(count * shares[split]), names, seed * 1000 + k, prosody, vocabulary)
        ):
            plans.append((split, i, u))
    processes = workers or len(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")  # forking a process that has started torch's threads can hang
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker)
    try:
        audio = _crash_named(pool.map(synthesize, [u for _, _, u in plans], chunksize=16))
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
    finally:  # stopped early (an error downstream): drop the utterances not started yet
        pool.shutdown(cancel_futures=True)
