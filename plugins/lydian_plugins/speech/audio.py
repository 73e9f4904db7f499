"""Audio in any common container and codec, decoded with PyAV to 16 kHz mono float32.

PyAV (``av``) comes with faster-whisper and bundles FFmpeg's decoders: WAV, OGG (Opus,
Vorbis), WebM (Opus), MP3, M4A (AAC), FLAC. Limits are checked twice: the container's
declared duration before decoding anything, then the samples actually decoded (a header
can lie), so a two-hour file costs no more than ``max_seconds`` of decoding.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import BadAudio, ProviderUnavailable, TooLong

RATE = 16_000
"""Samples per second of decoded audio (what Whisper models take)."""
SILENCE_DBFS = -55.0
"""Audio whose RMS level is below this is silence: an empty transcript, not an error."""
TRUNCATED_SHARE = 0.9
"""A file that decodes to less than this share of its declared duration is truncated."""


@dataclass
class Decoded:
    samples: Any  # numpy float32 array, mono, RATE Hz
    duration: float
    codec: str
    container: str
    declared: float | None

    @property
    def dbfs(self) -> float:
        """RMS level in dB relative to full scale (-inf for digital silence)."""
        if not len(self.samples):
            return -math.inf
        import numpy as np

        rms = float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))
        return 20 * math.log10(rms) if rms > 0 else -math.inf

    @property
    def silent(self) -> bool:
        return self.dbfs < SILENCE_DBFS


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise ProviderUnavailable(
            "audio decoding needs the speech extra (pip install 'lydian-hub[speech]')"
        ) from None
    return av


def decode(data: bytes, *, max_seconds: float) -> Decoded:
    """Decode ``data`` to 16 kHz mono float32; :class:`BadAudio` or :class:`TooLong`."""
    av = _av()
    import numpy as np

    if not data:
        raise BadAudio("the file is empty")
    _check_wav(data)
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise BadAudio(f"not a decodable audio file ({_reason(exc)})") from None
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise BadAudio("the file has no audio stream")
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        declared = _declared(container, stream)
        if declared is not None and declared > max_seconds:
            raise TooLong(
                f"the audio is {_clock(declared)} long; the limit is {_clock(max_seconds)}"
            )
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        chunks: list[Any] = []
        count = 0
        limit = int(max_seconds * RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    count += len(chunk)
                if count > limit:
                    raise TooLong(f"the audio is longer than the limit of {_clock(max_seconds)}")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError, EOFError) as exc:
            if not chunks:
                raise BadAudio(f"the {codec} audio cannot be decoded ({_reason(exc)})") from None
            raise BadAudio(
                f"the {codec} audio breaks off after {_clock(count / RATE)} "
                f"(truncated or damaged: {_reason(exc)})"
            ) from None
    samples = (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)).astype(np.float32)
    samples /= 32768.0
    duration = len(samples) / RATE
    if not len(samples):
        raise BadAudio(f"the {codec} audio has no samples (truncated or empty)")
    if declared is not None and declared > 1.0 and duration < TRUNCATED_SHARE * declared:
        raise BadAudio(
            f"the file is truncated: its header says {_clock(declared)} of audio, "
            f"only {_clock(duration)} could be decoded"
        )
    fmt = container.format.name if container.format else "unknown"
    return Decoded(samples, duration, codec, fmt, declared)


def probe_seconds(data: bytes) -> float | None:
    """The declared duration of ``data`` (None when PyAV is missing or cannot tell)."""
    try:
        av = _av()
    except ProviderUnavailable:
        return None
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise BadAudio("the file has no audio stream")
            return _declared(container, stream)
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise BadAudio(f"not a decodable audio file ({_reason(exc)})") from None


def _check_wav(data: bytes) -> None:
    """A WAV file whose ``data`` chunk claims more bytes than the file holds was cut off
    (FFmpeg would decode what is there and say nothing)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if kind == b"data":
            have = len(data) - at - 8
            if size not in (0, 0xFFFFFFFF) and have < size * TRUNCATED_SHARE:
                raise BadAudio(
                    f"the WAV file is truncated: {have:,} of its {size:,} bytes of audio are there"
                )
            return
        at += 8 + size + (size & 1)


def _declared(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _reason(exc: BaseException) -> str:
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc).strip()) or type(exc).__name__
    return text.split(": '<", 1)[0][:200]


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


# ------------------------------------------------------------------ encoding (text-to-speech)

PCM_RATE = 24_000
"""The rate of ``pcm`` output (OpenAI's: raw 16-bit little-endian mono, no header)."""


@dataclass(frozen=True)
class Encoding:
    container: str
    codec: str
    rate: int
    media_type: str


FORMATS = {
    "mp3": Encoding("mp3", "libmp3lame", PCM_RATE, "audio/mpeg"),
    "opus": Encoding("ogg", "libopus", 48_000, "audio/ogg"),
    "aac": Encoding("adts", "aac", PCM_RATE, "audio/aac"),
    "flac": Encoding("flac", "flac", PCM_RATE, "audio/flac"),
    "wav": Encoding("wav", "pcm_s16le", PCM_RATE, "audio/wav"),
    "pcm": Encoding("s16le", "pcm_s16le", PCM_RATE, "audio/pcm"),
}
"""The formats speech can be had in (OpenAI's ``response_format`` values)."""


def encode(wav: bytes, fmt: str) -> bytes:
    """WAV bytes re-encoded with PyAV as ``fmt`` (a key of :data:`FORMATS`), mono."""
    av = _av()
    spec = FORMATS[fmt]
    out = io.BytesIO()
    try:
        with (
            av.open(io.BytesIO(wav), mode="r") as src,
            av.open(out, mode="w", format=spec.container) as dst,
        ):
            stream = dst.add_stream(spec.codec, rate=spec.rate)
            stream.layout = "mono"
            sample_format = stream.codec_context.format
            resampler = av.AudioResampler(
                format=sample_format.name if sample_format else "s16", layout="mono", rate=spec.rate
            )
            for frame in src.decode(audio=0):
                for piece in resampler.resample(frame):
                    for packet in stream.encode(piece):
                        dst.mux(packet)
            for piece in resampler.resample(None):
                for packet in stream.encode(piece):
                    dst.mux(packet)
            for packet in stream.encode(None):
                dst.mux(packet)
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise BadAudio(f"the speech could not be encoded as {fmt} ({_reason(exc)})") from None
    return out.getvalue()


def fix_wav(data: bytes) -> bytes:
    """A WAV written to a pipe (espeak-ng ``--stdout``) says "as long as it goes"
    (0x7ffff000 bytes) in its RIFF and data sizes: set the real ones."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if kind == b"data":
            have = len(data) - at - 8
            fixed = bytearray(data)
            fixed[4:8] = (len(data) - 8).to_bytes(4, "little")
            fixed[at + 4 : at + 8] = have.to_bytes(4, "little")
            return bytes(fixed)
        at += 8 + size + (size & 1)
    return data


def wav_of_pcm(pcm: bytes, rate: int) -> bytes:
    """Raw 16-bit little-endian mono samples as WAV bytes."""
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) - len(pcm) % 2])
    return out.getvalue()
