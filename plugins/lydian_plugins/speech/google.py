"""Google Cloud Speech-to-Text (v1) through the ``google-cloud-speech`` client (Apache-2.0).

:class:`GoogleSpeech` implements the provider interface of :mod:`.providers`
(``transcribe(bytes, filename, language) -> Transcript``) and streams
(:meth:`GoogleSpeech.stream`: PCM chunks in, interim and final :class:`Hypothesis` out).

- Audio in any container PyAV decodes is sent as **LINEAR16, 16 kHz, mono** (the
  decoding and the limits of :mod:`.audio`); silence is an empty transcript without a call.
- Up to :data:`SYNC_SECONDS` of audio: one ``Recognize`` call; longer audio (up to
  :data:`STREAM_SECONDS`, Google's limit for one stream) goes through
  ``StreamingRecognize`` and its final results are the transcript. Longer still needs
  ``LongRunningRecognize`` with Cloud Storage, which is not done: :class:`TooLong`.
- Automatic punctuation, word time offsets, language hints (``alternative_language_codes``)
  and speaker diarization (segments per speaker turn, with ``speaker``) are settings.
- Connection: ``endpoint`` (``host:port``); ``credentials_file`` (a service-account JSON
  key), else Application Default Credentials; ``insecure`` for a plaintext channel without
  credentials (emulators and the tests' fake server).
- No retries: every call has ``timeout`` seconds; gRPC errors become the typed errors of
  :mod:`.errors` (INVALID_ARGUMENT: :class:`BadAudio`; the rest: :class:`ProviderFailed`).

No hub imports: it runs in the attachment pipeline's child processes and worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .audio import RATE, Decoded, decode
from .errors import BadAudio, NoSpeech, ProviderFailed, ProviderUnavailable, TooLong
from .providers import Limits, Segment, Transcript, check_size

DEFAULT_ENDPOINT = "speech.googleapis.com:443"
SYNC_SECONDS = 59.0
"""Google's ``Recognize`` takes at most a minute of audio."""
STREAM_SECONDS = 300.0
"""Google's ``StreamingRecognize`` stops a stream after about five minutes."""
CHUNK_BYTES = 16_000
"""Half a second of LINEAR16 at 16 kHz per streaming request (Google's limit: 25 KB)."""


class Hypothesis(msgspec.Struct, kw_only=True):
    """One streaming result: interim (``final`` False, may still change) or final."""

    text: str
    final: bool
    start: float
    end: float
    confidence: float | None = None
    stability: float | None = None
    """Google's estimate (0..1) that an interim result will not change."""
    language: str | None = None
    segments: list[Segment] = []
    """For a final result with diarization on: the speaker turns."""


def pcm16(audio: Decoded) -> bytes:
    """Decoded float32 samples as LINEAR16 (little-endian signed 16-bit) bytes."""
    import numpy as np

    clipped = np.clip(audio.samples, -1.0, 1.0)
    return bytes((clipped * 32767.0).astype("<i2").tobytes())


def _seconds(value: Any) -> float:
    """A proto ``Duration`` (a ``timedelta`` in proto-plus) in seconds."""
    if value is None:
        return 0.0
    if hasattr(value, "total_seconds"):
        return round(float(value.total_seconds()), 3)
    return round(float(getattr(value, "seconds", 0)) + getattr(value, "nanos", 0) / 1e9, 3)


def _speaker(word: Any) -> str | None:
    label = getattr(word, "speaker_label", "") or ""
    if label:
        return str(label)
    tag = int(getattr(word, "speaker_tag", 0) or 0)
    return str(tag) if tag else None


def speaker_turns(words: Iterable[Any], confidence: float | None) -> list[Segment]:
    """Consecutive words of one speaker as one segment each."""
    turns: list[Segment] = []
    for word in words:
        speaker = _speaker(word)
        start, end, text = _seconds(word.start_time), _seconds(word.end_time), word.word
        if turns and turns[-1].speaker == speaker:
            turns[-1].text += " " + text
            turns[-1].end = end
        else:
            turns.append(
                Segment(start=start, end=end, text=text, confidence=confidence, speaker=speaker)
            )
    return turns


def _confidence(alternative: Any) -> float | None:
    value = float(getattr(alternative, "confidence", 0.0) or 0.0)
    return round(value, 4) if value > 0 else None


def _is_summary(result: Any) -> bool:
    """Google's diarization answer: the last result repeats every word of the audio with its
    speaker, whatever its own transcript says."""
    if not result.alternatives:
        return False
    alternative = result.alternatives[0]
    words = list(alternative.words)
    return (
        bool(words)
        and all(_speaker(w) for w in words)
        and len(words) > len(alternative.transcript.split())
    )


def segments_of(results: list[Any], diarization: bool) -> tuple[str, list[Segment]]:
    """Final results as (text, segments): one segment per result, or per speaker turn."""
    summary = results[-1] if diarization and results and _is_summary(results[-1]) else None
    spoken = [r for r in results if r is not summary and r.alternatives]
    segments: list[Segment] = []
    previous_end = 0.0
    for result in spoken:
        alternative = result.alternatives[0]
        text = alternative.transcript.strip()
        end = _seconds(result.result_end_time)
        if not text:
            previous_end = end or previous_end
            continue
        words = list(alternative.words)
        start = _seconds(words[0].start_time) if words else previous_end
        if diarization and summary is None and words and all(_speaker(w) for w in words):
            segments.extend(speaker_turns(words, _confidence(alternative)))
        else:
            segments.append(
                Segment(
                    start=start,
                    end=end or (_seconds(words[-1].end_time) if words else start),
                    text=text,
                    confidence=_confidence(alternative),
                )
            )
        previous_end = end or previous_end
    text = " ".join(s.text for s in segments)
    if summary is not None:
        alternative = summary.alternatives[0]
        confidences = [s.confidence for s in segments if s.confidence]
        mean = round(sum(confidences) / len(confidences), 4) if confidences else None
        segments = speaker_turns(alternative.words, _confidence(alternative) or mean)
        if not text:
            text = " ".join(s.text for s in segments)
    return text, segments


def _language(results: list[Any], asked: str) -> str:
    for result in results:
        code = getattr(result, "language_code", "") or ""
        if code:
            return str(code)
    return asked


@dataclass
class GoogleSpeech:
    """Google Cloud Speech-to-Text v1 (``Recognize`` and ``StreamingRecognize``)."""

    endpoint: str = DEFAULT_ENDPOINT
    """``host:port`` of the service (a regional endpoint, an emulator, a fake)."""
    credentials_file: str = ""
    """A service-account JSON key file; empty: Application Default Credentials."""
    insecure: bool = False
    """A plaintext channel without credentials (emulators, tests): never for Google itself."""
    language: str = "en-US"
    """BCP-47 code of the main language when a request names none."""
    alternative_languages: list[str] = field(default_factory=list)
    """Language hints: up to three other languages the audio may be in."""
    model: str = ""
    """Google's model (``latest_long``, ``latest_short``, ``phone_call``…); empty: default."""
    punctuation: bool = True
    diarization: bool = False
    min_speakers: int = 2
    max_speakers: int = 6
    timeout: float = 120.0
    """Seconds a call may take (a whole stream, for :meth:`stream`)."""
    limits: Limits = field(default_factory=Limits)
    name: str = "google"

    # ------------------------------------------------------------------ the client

    def client(self) -> Any:
        """A ``SpeechClient`` on :attr:`endpoint` (close its ``transport`` after use)."""
        try:
            from google.cloud import speech_v1
            from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport
        except ImportError:
            raise ProviderUnavailable(
                "Google Speech needs the google extra (pip install 'lydian-hub[google]')"
            ) from None
        endpoint = self.endpoint or DEFAULT_ENDPOINT
        if self.insecure:
            import grpc

            channel = grpc.insecure_channel(endpoint)
            transport = SpeechGrpcTransport(host=endpoint, channel=channel)
            return speech_v1.SpeechClient(
                transport=transport, client_options={"api_endpoint": endpoint}
            )
        credentials = None
        if self.credentials_file:
            from google.oauth2 import service_account

            try:
                credentials = service_account.Credentials.from_service_account_file(
                    self.credentials_file,
                    scopes=["https://www.googleapis.com/auth/cloud-platform"],
                )
            except (OSError, ValueError) as exc:
                raise ProviderUnavailable(
                    f"the Google credentials file {self.credentials_file!r} cannot be used: {exc}"
                ) from None
        import google.auth.exceptions

        try:
            return speech_v1.SpeechClient(
                credentials=credentials, client_options={"api_endpoint": endpoint}
            )
        except google.auth.exceptions.DefaultCredentialsError:
            raise ProviderUnavailable(
                "Google Speech has no credentials: set [plugins.speech] "
                "google_credentials_file to a service-account JSON key file"
            ) from None

    def config(self, language: str | None = None) -> Any:
        from google.cloud import speech_v1

        extra: dict[str, Any] = {}
        if self.model:
            extra["model"] = self.model
        if self.diarization:
            extra["diarization_config"] = speech_v1.SpeakerDiarizationConfig(
                enable_speaker_diarization=True,
                min_speaker_count=self.min_speakers,
                max_speaker_count=self.max_speakers,
            )
        return speech_v1.RecognitionConfig(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=RATE,
            audio_channel_count=1,
            language_code=language or self.language,
            alternative_language_codes=[
                code for code in self.alternative_languages if code != (language or self.language)
            ][:3],
            enable_automatic_punctuation=self.punctuation,
            enable_word_time_offsets=True,
            **extra,
        )

    def failure(self, exc: Exception) -> Exception:
        """A gRPC/API error as one of our typed errors, with a message for people."""
        from google.api_core import exceptions as api

        message = getattr(exc, "message", None) or str(exc)
        message = str(message)[:300]
        if isinstance(exc, api.InvalidArgument):
            return BadAudio(f"Google Speech refused the request: {message}")
        if isinstance(exc, api.DeadlineExceeded):
            return ProviderFailed(f"Google Speech did not answer within {self.timeout:g} s")
        if isinstance(exc, api.ServiceUnavailable):
            return ProviderFailed(
                f"Google Speech is unavailable at {self.endpoint or DEFAULT_ENDPOINT}: {message}"
            )
        if isinstance(exc, api.Unauthenticated | api.PermissionDenied):
            return ProviderFailed(f"Google Speech refused the credentials: {message}")
        if isinstance(exc, api.ResourceExhausted):
            return ProviderFailed(f"Google Speech quota exhausted: {message}")
        code = getattr(exc, "code", None)
        name = getattr(code, "name", None) or type(exc).__name__
        return ProviderFailed(f"Google Speech failed ({name}): {message}")

    # ------------------------------------------------------------------ batch

    def transcribe(
        self, data: bytes, *, filename: str = "audio", language: str | None = None
    ) -> Transcript:
        check_size(data, self.limits)
        started = time.monotonic()
        audio = decode(data, max_seconds=min(self.limits.max_seconds, STREAM_SECONDS))
        return self.transcribe_samples(audio, language=language, started=started)

    def transcribe_samples(
        self, audio: Decoded, *, language: str | None = None, started: float | None = None
    ) -> Transcript:
        started = time.monotonic() if started is None else started
        asked = language or self.language
        if audio.duration > STREAM_SECONDS:
            raise TooLong(
                f"Google Speech transcribes at most {STREAM_SECONDS:.0f} s here; the audio is "
                f"{audio.duration:.0f} s"
            )
        if audio.silent:
            return Transcript(
                text="",
                language=None,
                duration=round(audio.duration, 3),
                provider=self.name,
                model=self.model or "default",
                seconds=round(time.monotonic() - started, 3),
                silent=True,
            )
        pcm = pcm16(audio)
        if audio.duration <= SYNC_SECONDS:
            results = self._recognize(pcm, asked)
        else:
            chunks = (pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES))
            results = [r for r in self._stream_results(chunks, asked, interim=False) if r.is_final]
        text, segments = segments_of(results, self.diarization)
        if not text:
            raise NoSpeech(
                f"Google Speech found no speech in {audio.duration:.1f} s of sound "
                f"({audio.dbfs:.0f} dBFS: noise, music or hum?)"
            )
        return Transcript(
            text=text,
            language=_language(results, asked),
            duration=round(audio.duration, 3),
            segments=segments,
            provider=self.name,
            model=self.model or "default",
            seconds=round(time.monotonic() - started, 3),
        )

    def _recognize(self, pcm: bytes, language: str) -> list[Any]:
        from google.api_core import exceptions as api
        from google.cloud import speech_v1

        client = self.client()
        try:
            response = client.recognize(
                config=self.config(language),
                audio=speech_v1.RecognitionAudio(content=pcm),
                retry=None,
                timeout=self.timeout,
            )
        except api.GoogleAPICallError as exc:
            raise self.failure(exc) from None
        finally:
            client.transport.close()
        return list(response.results)

    # ------------------------------------------------------------------ streaming

    def stream(
        self, chunks: Iterable[bytes], *, language: str | None = None, interim: bool = True
    ) -> Iterator[Hypothesis]:
        """Recognise LINEAR16 16 kHz mono ``chunks`` as they come (each at most 25 KB):
        interim hypotheses (when ``interim``) and final results, in Google's order."""
        asked = language or self.language
        previous_end = 0.0
        for result in self._stream_results(chunks, asked, interim=interim):
            if not result.alternatives:
                continue
            alternative = result.alternatives[0]
            text = alternative.transcript.strip()
            end = _seconds(result.result_end_time)
            words = list(alternative.words)
            segments: list[Segment] = []
            if result.is_final and self.diarization and words and all(map(_speaker, words)):
                segments = speaker_turns(words, _confidence(alternative))
            yield Hypothesis(
                text=text,
                final=bool(result.is_final),
                start=_seconds(words[0].start_time) if words else previous_end,
                end=end,
                confidence=_confidence(alternative) if result.is_final else None,
                stability=(
                    round(float(result.stability), 4)
                    if not result.is_final and result.stability
                    else None
                ),
                language=getattr(result, "language_code", "") or asked,
                segments=segments,
            )
            if result.is_final:
                previous_end = end or previous_end

    def _stream_results(
        self, chunks: Iterable[bytes], language: str, *, interim: bool
    ) -> Iterator[Any]:
        from google.api_core import exceptions as api
        from google.cloud import speech_v1

        streaming = speech_v1.StreamingRecognitionConfig(
            config=self.config(language), interim_results=interim
        )

        def requests() -> Iterator[Any]:
            for chunk in chunks:
                for i in range(0, len(chunk), CHUNK_BYTES):
                    yield speech_v1.StreamingRecognizeRequest(
                        audio_content=chunk[i : i + CHUNK_BYTES]
                    )

        client = self.client()
        try:
            responses = client.streaming_recognize(
                streaming, requests(), retry=None, timeout=self.timeout
            )
            for response in responses:
                if response.error and response.error.code:
                    raise ProviderFailed(
                        f"Google Speech stopped the stream (code {response.error.code}): "
                        f"{response.error.message[:300]}"
                    )
                yield from response.results
        except api.GoogleAPICallError as exc:
            raise self.failure(exc) from None
        finally:
            client.transport.close()


def google_of(settings: Any, limits: Limits) -> GoogleSpeech:
    """The provider ``[plugins.speech]`` configures (its ``google_*`` fields)."""
    return GoogleSpeech(
        endpoint=settings.google_endpoint,
        credentials_file=settings.google_credentials_file,
        insecure=settings.google_insecure,
        language=settings.google_language,
        alternative_languages=list(settings.google_alternative_languages),
        model=settings.google_model,
        punctuation=settings.google_punctuation,
        diarization=settings.google_diarization,
        min_speakers=settings.google_min_speakers,
        max_speakers=settings.google_max_speakers,
        timeout=settings.google_timeout,
        limits=limits,
    )


__all__ = ["GoogleSpeech", "Hypothesis", "google_of", "pcm16", "segments_of"]
