"""Streaming speech decoding: time and peak memory of `lifecycle transcribe --stream`'s path (a file read and decoded
a chunk at a time) against full-context decoding of the same file (the baseline: the whole recording decoded
in one pass), for recordings of 1, 10 and 30 minutes. Each measurement runs in a fresh process, so its peak RSS
is its own; the model is params.yaml's asr model (its architecture, features and decoding; untrained: the cost does
not depend on the weights), and both sides include reading the transcript (streaming: after every window).

    python bench/asr_streaming.py                     # 1, 10 and 30 minutes
    python bench/asr_streaming.py --minutes 2 10
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_recording(path: Path, minutes: float) -> None:
    """Synthesized utterances (digits and commands, several voices) repeated to `minutes`, 16 kHz mono WAV."""
    import soundfile as sf

    from lifecycle.audio import SAMPLE_RATE, decode_audio
    from lifecycle.sources.speech import Synthesizer, plan_utterances, synthesize

    synthesizer = Synthesizer()
    plans = plan_utterances(40, ["en-us+m1", "en+f1", "en-029+m7", "en-gb-scotland+f2"], seed=0)
    speech = np.concatenate([decode_audio(synthesize(p, synthesizer), 30)[0].numpy() for p in plans])
    repeats = int(np.ceil(minutes * 60 * SAMPLE_RATE / len(speech)))
    sf.write(path, np.tile(speech, repeats)[: int(minutes * 60 * SAMPLE_RATE)], SAMPLE_RATE, subtype="PCM_16")


def measure(mode: str, recording: str) -> dict:
    """Run in a child process: decode `recording` fully or streaming; time, peak RSS and the word count."""
    import torch

    from lifecycle.audio import decode_audio
    from lifecycle.params import load_params
    from lifecycle.tasks import build_task

    torch.set_num_threads(2)
    task = build_task("asr", load_params("params.yaml", only=["asr"]).task("asr"))  # its features and decoding
    torch.manual_seed(0)
    model = task.network.build().eval()
    started = time.perf_counter()
    with torch.no_grad():
        if mode == "full":
            spec = task.codec.prepare(decode_audio(Path(recording).read_bytes(), max_seconds=float("inf")))
            text, _ = task.outputs.read(model(spec[None], torch.tensor([spec.shape[-1]])))[0]
        else:  # the transcript read after every window, as `lifecycle transcribe --stream` prints it
            text = ""
            for _, shown in task.outputs.stream_file(model, Path(recording)):
                text = shown
    return {
        "seconds": time.perf_counter() - started,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "words": len(text.split()),
    }


def in_child(mode: str, recording: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(recording)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    print(
        f"{'minutes':>8} {'full s':>8} {'stream s':>9} {'time ratio':>10} {'full MB':>8} {'stream MB':>10} {'memory ratio':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            recording = Path(tmp) / f"{minutes:g}min.wav"
            write_recording(recording, minutes)
            full, stream = in_child("full", recording), in_child("stream", recording)
            print(
                f"{minutes:>8g} {full['seconds']:>8.1f} {stream['seconds']:>9.1f} {stream['seconds'] / full['seconds']:>9.2f}x"
                f" {full['peak_mb']:>8.0f} {stream['peak_mb']:>10.0f} {stream['peak_mb'] / full['peak_mb']:>11.2f}x"
            )


if __name__ == "__main__":
    main()
