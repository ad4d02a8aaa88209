"""asr's decoding: a CTC best path to a transcript (each word mapped into the vocabulary when so configured)
and its confidence; the word error rate between two transcripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lifecycle.sequence import emitting_frames


def charset_of(vocabulary: Sequence[str]) -> str:
    """The characters a transcript is spelled with: the space, then the vocabulary's letters sorted (class i + 1)."""
    return " " + "".join(sorted({c for word in vocabulary for c in word}))


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def nearest_words(token: str, vocabulary: Sequence[str]) -> list[str]:
    """The vocabulary word closest to a decoded token, or two words when the token reads as two run together
    (a missed pause: `nineone`) clearly better than as one. Tokens longer than any two words (noise read as
    letters) are not cut: trying every cut would cost the square of their length."""
    one = min(vocabulary, key=lambda w: edit_distance(token, w))
    best = [one], edit_distance(token, one)
    longest = max(map(len, vocabulary))
    for cut in range(1, len(token) if len(token) <= 2 * longest + 1 else 0):
        left = min(vocabulary, key=lambda w: edit_distance(token[:cut], w))
        right = min(vocabulary, key=lambda w: edit_distance(token[cut:], w))
        cost = edit_distance(token[:cut], left) + edit_distance(token[cut:], right) + 1
        if cost < best[1]:
            best = [left, right], cost
    return best[0]


def constrain(text: str, vocabulary: Sequence[str]) -> str:
    return " ".join(
        w for token in text.split() for w in ([token] if token in vocabulary else nearest_words(token, vocabulary))
    )


def emitted_confidence(path: list[int], probs: list[float]) -> float:
    """The geometric mean of the probabilities of the frames that emit a character (a clip's confidence that
    does not shrink with its length); for a path that emits nothing, of its blank frames."""
    chosen = [probs[j] for j in emitting_frames(path)] or probs
    return float(np.exp(np.mean(np.log(np.maximum(chosen, 1e-12))))) if chosen else 0.0


def transcript(
    path: list[int], probs: list[float], charset: str, vocabulary: Sequence[str] | None
) -> tuple[str, float]:
    """A clip's transcript from its best CTC path (repeats collapsed, blanks dropped, then each word mapped
    into `vocabulary` when one is given) and its confidence (`emitted_confidence`)."""
    text = " ".join("".join(charset[path[j] - 1] for j in emitting_frames(path)).split())
    if vocabulary is not None and text:
        text = constrain(text, vocabulary)
    return text, emitted_confidence(path, probs)


def word_error_rate(heard: str, reference: str) -> float:
    """torchmetrics' WER; against an empty reference (where it is undefined), 0 when nothing is heard either, else 1."""
    from torchmetrics.functional.text import word_error_rate as wer

    return float(wer(heard, reference)) if reference.split() else float(bool(heard.split()))
