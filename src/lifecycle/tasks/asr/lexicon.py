"""asr's lexicon search: the most probable sequence of vocabulary words under a clip's CTC outputs. A Viterbi
search over a loop of the vocabulary's words (CTC's blank and repeat rules inside each word, the space between
words optional), instead of the best path's letters mapped to the nearest words afterwards: a letter the model
is unsure of is weighed against every word it could belong to, with the probabilities the model gave."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lifecycle.tasks.asr.decoding import emitted_confidence

IMPOSSIBLE = -1e30  # the log score of a state the search cannot be in
GAP_BEFORE, GAP, SPACE = 0, 1, 2  # the states outside words: blank before the first word, blank between, the space


@dataclass(frozen=True)
class WordLoop:
    """The search graph. States 0-2 are GAP_BEFORE, GAP and SPACE; then, for each word, a state per letter, each
    followed by a blank state. A letter is entered from itself, the blank before it or (when they differ) the
    letter before it; a blank from itself or its letter. A word's first letter is entered from the states outside
    words or from any word's end (its last letter or that letter's blank), but not from a last letter equal to
    its own (CTC would merge the two: a blank must separate them). GAP and SPACE are entered from each other and
    from word ends. Predecessors are index arrays padded with `size` (an impossible score appended)."""

    words: tuple[str, ...]
    labels: np.ndarray  # the class each state emits (0: blank)
    word_of: np.ndarray  # the word a state belongs to (-1 outside words)
    inside: np.ndarray  # 3 x states: each state itself, and its predecessors inside its word
    joints: np.ndarray  # GAP, SPACE and each word's first letter: the states entered from outside their word
    joint_sources: np.ndarray  # joints x k: their predecessors (themselves included)
    finals: np.ndarray  # the states a clip may end in: outside words or at a word's end

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def firsts(self) -> np.ndarray:
        """Each word's first-letter state: a word begins where the path enters one."""
        return self.joints[2:]


def word_loop(charset: str, vocabulary: Sequence[str]) -> WordLoop:
    """The search graph of `vocabulary`'s words spelled in `charset` (class = index in charset + 1)."""
    labels, word_of = [0, 0, charset.index(" ") + 1], [-1, -1, -1]
    advance, skip = [-1, -1, -1], [-1, -1, -1]
    firsts, ends, end_letters = [], [], []
    for w, word in enumerate(vocabulary):
        for i, letter in enumerate(word):
            letter_state = len(labels)
            labels += [charset.index(letter) + 1, 0]
            word_of += [w, w]
            advance += [letter_state - 1 if i else -1, letter_state]
            skip += [letter_state - 2 if i and word[i - 1] != letter else -1, -1]
        firsts.append(len(labels) - 2 * len(word))
        ends += [len(labels) - 2, len(labels) - 1]
        end_letters += [word[-1], None]
    none = len(labels)
    sources = [
        [GAP, SPACE, *ends],
        [SPACE, GAP, *ends],
        *(
            [first, GAP_BEFORE, GAP, SPACE, *(e for e, last in zip(ends, end_letters) if last != word[0])]
            for first, word in zip(firsts, vocabulary)
        ),
    ]
    width = max(map(len, sources))
    return WordLoop(
        words=tuple(vocabulary),
        labels=np.array(labels),
        word_of=np.array(word_of),
        inside=np.array([range(none), [none if s < 0 else s for s in advance], [none if s < 0 else s for s in skip]]),
        joints=np.array([GAP, SPACE, *firsts]),
        joint_sources=np.array([row + [none] * (width - len(row)) for row in sources]),
        finals=np.array([GAP_BEFORE, GAP, SPACE, *ends]),
    )


class LexiconSearch:
    """A Viterbi search over a batch of clips' CTC log-probabilities, frame by frame: `push` frames as they come
    (a batch's whole outputs at once, or a recording window by window), then `read` a clip's words. Memory grows
    with the frames pushed: a byte per state and frame (the choice it took), and the log-probabilities."""

    def __init__(self, loop: WordLoop, batch: int = 1) -> None:
        self.loop = loop
        self.scores = np.full((batch, loop.size + 1), IMPOSSIBLE)  # the last column stays impossible: padding
        self.scores[:, GAP_BEFORE] = 0.0
        self.frames = np.zeros(batch, dtype=np.int64)  # each clip's frames pushed
        self.back: list[np.ndarray] = []  # per frame: the choice each state of each live clip took
        self.pushed: list[np.ndarray] = []  # the log-probabilities pushed: batch x frames x classes each
        self._choice_type = np.uint8 if loop.joint_sources.shape[1] < 256 else np.int32
        self._joint_of = dict(zip(loop.joints.tolist(), range(len(loop.joints))))
        self._inside, self._joint_sources = loop.inside.tolist(), loop.joint_sources.tolist()
        self._paths: dict[int, list[int]] = {}  # the path last traced for each clip
        self._firsts = set(loop.firsts.tolist())

    def push(self, log_probs: np.ndarray, lengths: Sequence[int] | None = None) -> None:
        """Advance by batch x frames x classes log-probabilities, of which clip i has `lengths[i]` (all, by
        default; the rest is padding). Clips must come longest first: a clip that has ended leaves the search."""
        loop, n = self.loop, self.loop.size
        counts = np.full(len(log_probs), log_probs.shape[1]) if lengths is None else np.asarray(lengths)
        if np.any(np.diff(counts) > 0) or len(set(self.frames.tolist())) > 1:
            raise ValueError("a lexicon search takes its clips longest first, each pushed until it ends")
        self.pushed.append(log_probs)
        for t in range(int(counts.max(initial=0))):
            live = int(np.count_nonzero(counts > t))
            scores = self.scores[:live]
            # inside words: stay, advance or skip; numpy's argmax over a short middle axis is slow, so compared pairwise
            stay, advance, skip = scores[:, :n], scores[:, loop.inside[1]], scores[:, loop.inside[2]]
            best = np.maximum(stay, advance)
            choice = (advance > stay).astype(self._choice_type)
            choice[skip > best] = 2
            best = np.maximum(best, skip)
            joined = np.take(scores, loop.joint_sources, axis=1)  # clips x joints x k
            pick = joined.argmax(2)
            best[:, loop.joints] = np.take_along_axis(joined, pick[..., None], 2)[..., 0]
            choice[:, loop.joints] = pick
            scores[:, :n] = best + log_probs[:live, t, loop.labels]
            self.back.append(choice)
        self.frames += counts

    def text(self, clip: int = 0) -> str:
        """Clip `clip`'s words over the frames pushed (what streaming shows after each window)."""
        return " ".join(self._words(self._trace(clip))) if self.frames[clip] else ""

    def read(self, clip: int = 0) -> tuple[str, float]:
        """Clip `clip`'s words over the frames pushed and their confidence: the geometric mean of the probabilities
        of the frames that emit a character on the words' path."""
        frames = int(self.frames[clip])
        if frames == 0:
            return "", 0.0
        path = self._trace(clip)
        labels = self.loop.labels[path]
        log_probs, start = [], 0
        for pushed in self.pushed:
            end = min(start + pushed.shape[1], frames)
            log_probs.append(pushed[clip, np.arange(end - start), labels[start:end]])
            start = end
        probs = np.exp(np.concatenate(log_probs))
        return " ".join(self._words(path)), emitted_confidence(labels.tolist(), probs.tolist())

    def _words(self, path: list[int]) -> list[str]:
        """The words a path spells: one wherever it enters a word's first letter."""
        loop, starts = self.loop, self._firsts
        return [loop.words[loop.word_of[s]] for t, s in enumerate(path) if s in starts and (t == 0 or path[t - 1] != s)]

    def _trace(self, clip: int) -> list[int]:
        """The clip's best path: its state at each frame, traced back from the best state to end in. Once it meets
        the path traced at an earlier read, the rest is that path (the choices before are fixed), so reading a
        recording after each window costs the frames since, not the whole recording each time."""
        state = int(self.loop.finals[self.scores[clip, self.loop.finals].argmax()])
        earlier = self._paths.get(clip, [])
        tail = [state]
        for t in range(int(self.frames[clip]) - 1, 0, -1):
            if t < len(earlier) and earlier[t] == state:
                path = earlier[:t] + tail[::-1]
                break
            choice = int(self.back[t][clip, state])
            joint = self._joint_of.get(state)
            state = self._inside[choice][state] if joint is None else self._joint_sources[joint][choice]
            tail.append(state)
        else:
            path = tail[::-1]
        self._paths[clip] = path
        return path


def read_batch(loop: WordLoop, log_probs: np.ndarray, lengths: Sequence[int]) -> list[tuple[str, float]]:
    """Each clip's words and confidence from a batch of padded log-probabilities (batch x frames x classes)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    search = LexiconSearch(loop, len(order))
    search.push(log_probs[order], [lengths[i] for i in order])
    read: list[tuple[str, float]] = [("", 0.0)] * len(order)
    for row, clip in enumerate(order):
        read[clip] = search.read(row)
    return read
