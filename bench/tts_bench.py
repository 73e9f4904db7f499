"""Text-to-speech benchmark: time to first audio and total synthesis time per sentence of
the offline default (espeak-ng in a child process).

The six sentences of ``tests/speech_support.py``, voice en-us, each timed as:

- **baseline**: ``espeak-ng -w out.wav TEXT``, espeak-ng writing the WAV file itself (what
  a shell script would do; no Python in the way but the process start).
- **pipe**: the provider's command (``espeak-ng --stdin --stdout``): time to the first audio
  bytes on the pipe (what a streaming answer could send first) and to the end.
- **wav / mp3 / opus**: ``EspeakNG.synthesize`` whole (voice lookup, process, header fix,
  PyAV encoding for mp3 and opus): what ``POST /v1/audio/speech`` costs before the network.

Medians over the rounds, in milliseconds, and the audio length for scale.

    python bench/tts_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from lydian_plugins.speech.audio import decode  # noqa: E402
from lydian_plugins.speech.tts import EspeakNG  # noqa: E402
from tests.speech_support import SENTENCES  # noqa: E402


def baseline(text: str, folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-w", str(folder / "out.wav"), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return time.perf_counter() - started


def pipe(tts: EspeakNG, text: str) -> tuple[float, float]:
    """(time to the first audio bytes, time to the end) of the provider's command."""
    started = time.perf_counter()
    process = subprocess.Popen(tts.command("en-us"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(text.encode())
    process.stdin.close()
    first = None
    while True:
        chunk = process.stdout.read1(65536)
        if not chunk:
            break
        if first is None and len(chunk) > 44:  # past the WAV header: samples
            first = time.perf_counter() - started
    process.wait(60)
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tts = EspeakNG()
    tts.voices()  # the voice list is read once per process; not part of a request
    columns = ["baseline", "pipe first", "pipe total", "wav", "mp3", "opus"]
    results: dict[str, list[float]] = {c: [] for c in columns}
    audio_seconds = []
    with tempfile.TemporaryDirectory() as folder:
        for sentence in SENTENCES:
            per: dict[str, list[float]] = {c: [] for c in columns}
            for _ in range(args.rounds):
                per["baseline"].append(baseline(sentence, Path(folder)))
                first, total = pipe(tts, sentence)
                per["pipe first"].append(first)
                per["pipe total"].append(total)
                for fmt in ("wav", "mp3", "opus"):
                    started = time.perf_counter()
                    spoken = tts.synthesize(sentence, voice="en-us", format=fmt)
                    per[fmt].append(time.perf_counter() - started)
            audio_seconds.append(decode(spoken.audio, max_seconds=60).duration)
            for column in columns:
                results[column].append(statistics.median(per[column]))
    print(f"espeak-ng, en-us, {len(SENTENCES)} sentences, median of {args.rounds} rounds (ms)")
    print("| sentence | audio s | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for index, seconds in enumerate(audio_seconds):
        row = [f"{results[c][index] * 1000:.0f}" for c in columns]
        print(f"| {index + 1} | {seconds:.1f} | " + " | ".join(row) + " |")
    medians = [f"{statistics.median(results[c]) * 1000:.0f}" for c in columns]
    print(f"| median | {statistics.median(audio_seconds):.1f} | " + " | ".join(medians) + " |")


if __name__ == "__main__":
    main()
