"""Speech for the speech tests and the benchmark: known sentences spoken by espeak-ng and
flite, converted to the containers people send (PyAV), and word error rate."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path

SENTENCES = [
    "Please send the quarterly report to the finance team by Friday.",
    "The meeting has been moved to three o'clock in the afternoon.",
    "Can you restart the database server after the backup finishes?",
    "We need two more volunteers for the charity run next weekend.",
    "The new office opens on Monday, and everyone gets a parking space.",
    "Remember to water the plants while I am away on holiday.",
]
"""Known text: read by a synthetic voice, transcribed, compared word by word."""

FORMATS = {
    # name: (container, codec, sample rate, filename, media type the hub should sniff)
    "wav": ("wav", "pcm_s16le", 16000, "voice.wav", "audio/wav"),
    "ogg": ("ogg", "libopus", 48000, "voice.ogg", "audio/ogg"),
    "webm": ("webm", "libopus", 48000, "voice.webm", "audio/webm"),
    "mp3": ("mp3", "libmp3lame", 22050, "voice.mp3", "audio/mpeg"),
    "m4a": ("ipod", "aac", 22050, "voice.m4a", "audio/mp4"),
}


def speak(text: str, engine: str = "espeak-ng") -> bytes:
    """``text`` read by ``espeak-ng`` or ``flite``, as WAV bytes."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "speech.wav"
        if engine == "espeak-ng":
            command = ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out), text]
        elif engine == "flite":
            command = ["flite", "-t", text, "-o", str(out)]
        else:
            raise ValueError(engine)
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        return out.read_bytes()


def have(engine: str) -> bool:
    return shutil.which(engine) is not None


def convert(data: bytes, fmt: str) -> bytes:
    """WAV bytes in another container and codec (:data:`FORMATS`)."""
    import av

    container, codec, rate, _, _ = FORMATS[fmt]
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(out, "w", format=container) as dst:
        stream = dst.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt_name = stream.codec_context.format.name if stream.codec_context.format else "s16"
        resampler = av.AudioResampler(format=fmt_name, layout="mono", rate=rate)
        for frame in src.decode(audio=0):
            for piece in resampler.resample(frame):
                for packet in stream.encode(piece):
                    dst.mux(packet)
        for piece in resampler.resample(None):
            for packet in stream.encode(piece):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def pcm_wav(samples: object, rate: int = 16000) -> bytes:
    """Float samples in -1..1 (a numpy array) as 16-bit mono WAV bytes."""
    import numpy as np

    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1, 1) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


_NUMBERS = {"3": "three", "2": "two", "o'clock": "oclock"}


def words(text: str) -> list[str]:
    """Lower case, no punctuation, a few spellings made one (3 = three)."""
    out = []
    for word in re.findall(r"[a-z0-9']+", text.lower().replace(":00", "")):
        word = _NUMBERS.get(word, word).replace("'", "")
        out.append(word)
    return out


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / len(ref)


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """WER over several sentences: errors summed over reference words summed."""
    errors = sum(wer(ref, hyp) * len(words(ref)) for ref, hyp in pairs)
    return errors / sum(len(words(ref)) for ref, _ in pairs)


@contextlib.contextmanager
def speech_entry_point() -> Iterator[None]:
    """Check that the installed metadata names the ``speech`` entry point (an editable
    install made before pyproject.toml named it does not: ``pip install -e .`` again)."""
    found = importlib.metadata.entry_points(group="lydian.plugins", name="speech")
    assert found, "no 'speech' entry point installed: run pip install -e '.[test]'"
    yield
