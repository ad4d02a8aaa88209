"""asr's lexicon search: vocabulary words read with the model's probabilities, the same whether a recording is
pushed at once or window by window, and a clip read the same alone or in a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_asr import asr_task, frames, logits_for

from lifecycle.tasks.asr.lexicon import LexiconSearch, read_batch, word_loop

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh", "off", "up"]
CHARSET = " " + "".join(sorted({c for w in WORDS for c in w}))


def soft_logits(outputs, frame_probs: list[dict[str, float]]) -> dict[str, torch.Tensor]:
    """Logits whose frames give the characters named the probabilities given ('' for blank), the rest a little."""
    charset = outputs.codec.charset
    probs = torch.full((len(frame_probs), len(charset) + 1), 1e-4)
    for t, given in enumerate(frame_probs):
        for c, p in given.items():
            probs[t, 0 if c == "" else charset.index(c) + 1] = p
    return {"logits": probs.log()[None], "lengths": torch.tensor([len(frame_probs)])}


def test_the_search_reads_vocabulary_words_with_the_models_probabilities():
    lexicon = asr_task(model={"vocabulary_decoding": "lexicon"}).outputs
    nearest = asr_task(model={"vocabulary_decoding": "nearest_word"}).outputs
    # the best path spells "nive", as near "five" as "nine"; the model all but ruled out an f in the first frame,
    # and gave the third frame an n as its second choice
    unsure = soft_logits(
        lexicon,
        [{"n": 0.9}, {"": 0.9}, {"i": 0.9}, {"v": 0.55, "n": 0.4}, {"": 0.9}, {"e": 0.9}],
    )
    assert nearest.read(unsure)[0][0] == "five", "the nearest word, the first of the two in the vocabulary"
    assert lexicon.read(unsure)[0][0] == "nine", "weighed with the probabilities"
    assert lexicon.read(logits_for(lexicon, frames("nineone.stup")))[0][0] == "nine one stop", "a missed pause"
    assert lexicon.read(logits_for(lexicon, frames("t_hh_rr_ee_e")))[0][0] == "three"
    assert lexicon.read(logits_for(lexicon, frames("oneone")))[0][0] == "one one", "a repeated word"
    text, confidence = lexicon.read(logits_for(lexicon, frames("____")))[0]
    assert text == "" and 0.99 < confidence <= 1.0, "silence reads as nothing"
    text, confidence = lexicon.read(logits_for(lexicon, frames("__ss_ee_vv_ee_nn__")))[0]
    assert text == "seven" and confidence == pytest.approx(
        nearest.read(logits_for(nearest, frames("__ss_ee_vv_ee_nn__")))[0][1]
    ), "on an unambiguous path, the confidence of the best path"


def test_a_clip_reads_the_same_in_windows_alone_or_in_a_batch():
    loop = word_loop(CHARSET, WORDS)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5, 60, len(CHARSET) + 1))
    logits[:, :, 0] += 2  # blank most often, as a trained model has it
    log_probs = torch.from_numpy(logits).log_softmax(-1).numpy()
    lengths = [37, 60, 0, 12, 51]  # any order; padding past each length must not change its words
    batched = read_batch(loop, log_probs, lengths)
    for i, n in enumerate(lengths):
        alone = LexiconSearch(loop)
        alone.push(log_probs[i : i + 1, :n])
        windowed = LexiconSearch(loop)
        for start in range(0, n, 7):
            windowed.push(log_probs[i : i + 1, start : min(start + 7, n)])
            windowed.text()  # the words after every window, as streaming shows them
        assert alone.read() == windowed.read() == batched[i]
        assert windowed.text() == batched[i][0]
        assert batched[i][0] or n == 0, "random frames read as some words"
    assert batched[2] == ("", 0.0)


def test_clips_must_come_longest_first():
    search = LexiconSearch(word_loop(CHARSET, WORDS), batch=2)
    with pytest.raises(ValueError, match="longest first"):
        search.push(np.zeros((2, 5, len(CHARSET) + 1)), [3, 5])


def test_a_word_ending_in_the_letter_the_next_begins_with_needs_a_blank_between():
    """CTC merges two o's that no blank separates: a path spelling "twoh" is not "two oh"."""
    loop = word_loop(CHARSET, WORDS)
    charset_index = {c: CHARSET.index(c) + 1 for c in CHARSET}
    merged = np.full((1, 4, len(CHARSET) + 1), np.log(1e-6))
    for t, c in enumerate("two"):
        merged[0, t, charset_index[c]] = 0.0
    merged[0, 3, charset_index["h"]] = 0.0
    search = LexiconSearch(loop)
    search.push(merged)
    assert search.read()[0] != "two oh"
