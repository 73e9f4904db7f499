"""The speech plugin: voice messages transcribed as attachments, and
``POST /v1/audio/transcriptions`` (OpenAI's shape) on the hub.

Settings (``[plugins.speech]``; ``LYDIAN_PLUGIN_SPEECH_<FIELD>``):

- ``provider``: ``offline`` (default: faster-whisper, no network), ``openai`` (any
  OpenAI-compatible ``/audio/transcriptions``: ``openai_base_url``, ``openai_model`` and the
  secret ``openai_api_key``) or ``google`` (Google Cloud Speech, the ``google`` extra:
  ``google_endpoint`` host:port, ``google_credentials_file`` a service-account JSON key
  path or ``google_insecure`` for a plaintext channel without credentials, ``google_language``
  (BCP-47), ``google_alternative_languages`` (hints), ``google_model``,
  ``google_punctuation``, ``google_diarization`` with ``google_min_speakers``/
  ``google_max_speakers``, ``google_timeout``) for ``/v1/audio/transcriptions``. Voice
  messages use ``google`` too when it is the provider (the key is a file path, which their
  child processes get), else offline (children are not handed secrets such as the OpenAI
  key).
- ``model_path``: a CTranslate2 Whisper model directory (empty: the bundled tiny.en);
  ``threads`` (CPU threads per transcription) and ``beam_size``.
- ``language`` (per room; empty: the model decides, English for an English-only model),
  ``max_seconds`` (per room; 30 minutes) and ``max_bytes``.

- ``tts_provider`` for ``POST /v1/audio/speech`` and ``GET /v1/audio/voices``: ``espeak-ng``
  (default; offline, run as a separate process: it is GPL-3.0+), ``openai`` (the
  ``openai_*`` settings above and ``openai_tts_model``) or ``elevenlabs``
  (``elevenlabs_base_url``, ``elevenlabs_model``, the secret ``elevenlabs_api_key``; needs
  the ``elevenlabs`` extra); ``tts_voice`` (the default voice), ``tts_max_chars``,
  ``tts_timeout``, ``espeak_binary``.

Enable voice messages in a room with ``/plugins enable speech``: from then on every audio
file a message carries there (WAV, OGG, WebM, MP3, M4A, FLAC) is transcribed; the
``transcript`` result's markdown is the text agents read.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException, HTTPException

from hub.sdk import (
    NO_STORE,
    AttachmentHandler,
    AttachmentInfo,
    HandlerError,
    HandlerResult,
    ModelRefused,
    PerRoom,
    RouteHandler,
    Secret,
    hookimpl,
    hub_of,
    openai_error,
    retry_header,
    role_of,
)

from .audio import FORMATS
from .errors import (
    BadAudio,
    BadRequest,
    NoSpeech,
    ProviderFailed,
    ProviderUnavailable,
    SpeechError,
    TooLong,
    UnknownVoice,
)
from .google import google_of
from .providers import Limits, OfflineWhisper, OpenAITranscriptions, SpeechToText, Transcript
from .tts import (
    MAX_CHARS,
    ElevenLabsSpeech,
    EspeakNG,
    OpenAISpeech,
    TextToSpeech,
    TtsLimits,
)

PLUGIN = "speech"
LYDIAN_REQUIREMENTS = ["espeak-ng?"]
"""``lydian doctor``: espeak-ng is the offline text-to-speech (optional: a cloud provider
can be configured instead)."""
MAX_BYTES = 64 * 1024 * 1024
"""The most a voice message or a ``/v1/audio/transcriptions`` upload may have (bytes)."""
FORM_OVERHEAD = 64 * 1024
RESPONSE_FORMATS = ("json", "text", "verbose_json")


class SpeechSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[plugins.speech]``."""

    provider: Literal["offline", "openai", "google"] = "offline"
    model_path: str = ""
    threads: Annotated[int, msgspec.Meta(ge=1, le=16)] = 2
    beam_size: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    language: Annotated[str, msgspec.Meta(pattern=r"^([a-z]{2,3})?$"), PerRoom] = ""
    max_seconds: Annotated[float, msgspec.Meta(gt=0, le=4 * 3600), PerRoom] = 30 * 60.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=MAX_BYTES)] = MAX_BYTES
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "whisper-1"
    openai_api_key: Annotated[str, Secret] = ""
    openai_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 120.0
    google_endpoint: str = "speech.googleapis.com:443"
    google_credentials_file: str = ""
    """A service-account JSON key file (a path, not a secret: voice-message jobs need it)."""
    google_insecure: bool = False
    google_language: str = "en-US"
    google_alternative_languages: list[str] = []
    google_model: str = ""
    google_punctuation: bool = True
    google_diarization: bool = False
    google_min_speakers: Annotated[int, msgspec.Meta(ge=1, le=6)] = 2
    google_max_speakers: Annotated[int, msgspec.Meta(ge=1, le=6)] = 6
    google_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 120.0
    tts_provider: Literal["espeak-ng", "openai", "elevenlabs"] = "espeak-ng"
    """Who answers ``POST /v1/audio/speech``."""
    tts_voice: str = ""
    """The voice when a request names none (empty: en-us, alloy, the first ElevenLabs voice)."""
    tts_max_chars: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = MAX_CHARS
    tts_timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 60.0
    espeak_binary: str = "espeak-ng"
    openai_tts_model: str = "gpt-4o-mini-tts"
    elevenlabs_base_url: str = "https://api.elevenlabs.io"
    elevenlabs_model: str = "eleven_multilingual_v2"
    elevenlabs_api_key: Annotated[str, Secret] = ""


def limits_of(settings: SpeechSettings) -> Limits:
    return Limits(max_seconds=settings.max_seconds, max_bytes=settings.max_bytes)


def offline_of(settings: SpeechSettings) -> OfflineWhisper:
    return OfflineWhisper(
        model_path=settings.model_path,
        threads=settings.threads,
        beam_size=settings.beam_size,
        limits=limits_of(settings),
    )


def provider_of(settings: SpeechSettings) -> SpeechToText:
    """The provider ``settings`` configure."""
    if settings.provider == "openai":
        return OpenAITranscriptions(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            timeout=settings.openai_timeout,
            limits=limits_of(settings),
        )
    if settings.provider == "google":
        return google_of(settings, limits_of(settings))
    return offline_of(settings)


OPENAI_ALIASES = {
    "alloy": "en-us",
    "ash": "en-us+m3",
    "ballad": "en-gb-x-rp",
    "coral": "en-us+f2",
    "echo": "en-us+m2",
    "fable": "en-gb",
    "nova": "en-us+f3",
    "onyx": "en-us+m7",
    "sage": "en-us+f4",
    "shimmer": "en-us+f5",
    "verse": "en-us+m4",
}
"""OpenAI's voice names read by espeak-ng voices, so clients written for OpenAI work as they
are (the names say nothing about how the voices sound)."""


def tts_of(settings: SpeechSettings) -> TextToSpeech:
    """The text-to-speech provider ``settings`` configure."""
    limits = TtsLimits(max_chars=settings.tts_max_chars, timeout=settings.tts_timeout)
    if settings.tts_provider == "openai":
        return OpenAISpeech(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_tts_model,
            voice=settings.tts_voice or "alloy",
            limits=limits,
        )
    if settings.tts_provider == "elevenlabs":
        return ElevenLabsSpeech(
            api_key=settings.elevenlabs_api_key,
            base_url=settings.elevenlabs_base_url,
            model=settings.elevenlabs_model,
            voice=settings.tts_voice,
            limits=limits,
        )
    return EspeakNG(
        binary=settings.espeak_binary,
        voice=settings.tts_voice or "en-us",
        aliases=OPENAI_ALIASES,
        limits=limits,
    )


# ------------------------------------------------------------------ voice messages


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


CHUNK_SECONDS = 60.0
"""Transcript chunks (what agents cite: "voice.ogg, 0:00-1:00") span about this long."""


def chunks_of(transcript: Transcript, filename: str) -> list[dict[str, Any]]:
    """The segments grouped into chunks of about :data:`CHUNK_SECONDS`, in the shape the
    documents handler uses (``text``, ``citation``, ``filename``), so agents read both."""
    out: list[dict[str, Any]] = []
    group: list[Any] = []
    for segment in transcript.segments:
        group.append(segment)
        if segment.end - group[0].start >= CHUNK_SECONDS:
            out.append(_chunk(group, filename))
            group = []
    if group:
        out.append(_chunk(group, filename))
    return out


def _chunk(group: list[Any], filename: str) -> dict[str, Any]:
    span = f"{_clock(group[0].start)}-{_clock(group[-1].end)}"
    return {
        "text": " ".join(f"Speaker {s.speaker}: {s.text}" if s.speaker else s.text for s in group),
        "citation": f"{filename}, {span}",
        "filename": filename,
        "start": group[0].start,
        "end": group[-1].end,
    }


def result_of(transcript: Transcript, filename: str = "audio") -> HandlerResult:
    """A transcript as an attachment result: the text as markdown, the rest as data."""
    data: dict[str, Any] = msgspec.to_builtins(transcript)
    data["chunks"] = chunks_of(transcript, filename)
    confidence = transcript.confidence
    data["confidence"] = None if confidence is None else round(confidence, 4)
    data["words"] = len(transcript.text.split())
    speakers = sorted({s.speaker for s in transcript.segments if s.speaker})
    data["speakers"] = speakers
    markdown = transcript.text
    if speakers:  # diarization: who said what, turn by turn
        markdown = "\n".join(f"Speaker {s.speaker}: {s.text}" for s in transcript.segments)
    if transcript.silent:
        summary = f"Transcript ({_clock(transcript.duration)}): silence, no speech"
    else:
        parts = [transcript.language or "?", _clock(transcript.duration)]
        if confidence is not None:
            parts.append(f"{confidence:.0%} confidence")
        if speakers:
            parts.append(f"{len(speakers)} speaker{'s' if len(speakers) != 1 else ''}")
        summary = f"Transcript ({', '.join(parts)}): {data['words']} words"
    return HandlerResult(summary=summary, markdown=markdown, data=data)


def run_transcript(data: bytes, info: AttachmentInfo) -> HandlerResult:
    """Transcribe a voice message with the room's settings (a child process): offline, or
    with Google when it is the provider (its credentials are a file path, which the child
    gets; the ``openai`` provider's key is a secret, masked for children: offline then)."""
    try:
        settings = msgspec.convert(info.settings, SpeechSettings)
    except msgspec.ValidationError as exc:
        raise HandlerError(f"invalid speech settings: {exc}") from None
    try:
        provider: SpeechToText = (
            google_of(settings, limits_of(settings))
            if settings.provider == "google"
            else offline_of(settings)
        )
        transcript = provider.transcribe(
            data, filename=info.filename, language=settings.language or None
        )
    except SpeechError as exc:
        raise HandlerError(str(exc)) from None
    return result_of(transcript, info.filename)


# ------------------------------------------------------------------ /v1/audio/transcriptions

_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="v1-audio")
"""One transcription at a time per hub process, off the event loop (CTranslate2 and PyAV
release the GIL; the offline model uses ``threads`` cores of its own)."""


async def transcribe_or_error(
    provider: SpeechToText,
    data: bytes,
    filename: str,
    language: str | None,
    too_long: str = "",
) -> Transcript | Response[Any]:
    """``provider``'s transcript, on the transcription thread, or the error answer (OpenAI's
    shape) for what went wrong: 413 too long (``too_long`` added to the message), 400 no
    speech or bad audio, 501 provider unavailable, 502 provider failed."""
    kind = "invalid_request_error"
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            _pool, lambda: provider.transcribe(data, filename=filename, language=language)
        )
    except TooLong as exc:
        return openai_error(413, f"{exc}{too_long}", kind, "audio_too_long")
    except NoSpeech as exc:
        return openai_error(400, str(exc), kind, "no_speech")
    except BadAudio as exc:
        return openai_error(400, str(exc), kind, "invalid_audio")
    except ProviderUnavailable as exc:
        return openai_error(501, str(exc), "server_error", "speech_unavailable")
    except ProviderFailed as exc:
        return openai_error(502, str(exc), "upstream_error", "speech_failed")


def _client_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Malformed or too large requests in OpenAI's error shape."""
    kind = "invalid_request_error"
    if exc.status_code == 413:
        return openai_error(413, f"request too large: {exc.detail}", kind, "file_too_large")
    return openai_error(exc.status_code, f"invalid request: {exc.detail}", kind)


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def verbose(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's ``verbose_json``, with every field its client's types name."""
    return {
        "task": "transcribe",
        "language": transcript.language or "",
        "duration": transcript.duration or 0.0,
        "text": transcript.text,
        "segments": [
            {
                "id": index,
                "seek": 0,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": math.log(s.confidence) if s.confidence else 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": s.no_speech or 0.0,
            }
            for index, s in enumerate(transcript.segments)
        ],
        "lydian": {"provider": transcript.provider, "model": transcript.model},
    }


@post(
    "/v1/audio/transcriptions",
    tags=["openai"],
    status_code=200,
    request_max_body_size=MAX_BYTES + FORM_OVERHEAD,
    exception_handlers={ClientException: _client_error},
)
async def transcriptions(request: Request[Any, Any, Any]) -> Response[Any]:
    """Speech to text, like OpenAI's: multipart ``file`` and ``model`` (required; the hub's
    configured provider and model answer whatever it names), ``language``,
    ``response_format`` ``json`` (default), ``text`` or ``verbose_json``."""
    hub = hub_of(request)
    settings: SpeechSettings = hub.plugin_settings(PLUGIN) or SpeechSettings()
    form = await request.form()
    upload = form.get("file")
    kind = "invalid_request_error"
    if not isinstance(upload, UploadFile):
        return openai_error(
            400, "send the audio as multipart/form-data in a field named 'file'", kind
        )
    try:
        data = await upload.read(settings.max_bytes + 1)
    finally:
        await upload.close()
    if _field(form, "model") is None:
        return openai_error(400, "the 'model' field is required", kind, "missing_model")
    response_format = _field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        return openai_error(
            400,
            f"response_format {response_format!r} is not supported; use one of "
            + ", ".join(RESPONSE_FORMATS),
            kind,
            "unsupported_response_format",
        )
    language = _field(form, "language") or settings.language or None
    if len(data) > settings.max_bytes:
        return openai_error(
            413, f"the file is larger than {settings.max_bytes:,} bytes", kind, "file_too_large"
        )
    role = role_of(request.user)
    try:  # the same allowance as any other model use
        await hub.check_model(role, request.user.id)
    except ModelRefused as refused:
        if refused.retry_after is None:
            return openai_error(403, refused.detail, "permission_error", refused.code)
        wait = {"Retry-After": retry_header(refused.retry_after)}
        return openai_error(429, refused.detail, "rate_limit_error", "rate_limit_exceeded", wait)
    provider = provider_of(settings)
    filename = upload.filename or "audio"
    transcript = await transcribe_or_error(provider, data, filename, language)
    if isinstance(transcript, Response):
        return transcript
    if response_format == "text":
        return Response(transcript.text + "\n", media_type="text/plain", headers=NO_STORE)
    if response_format == "verbose_json":
        return Response(verbose(transcript), headers=NO_STORE)
    return Response({"text": transcript.text}, headers=NO_STORE)


# ------------------------------------------------------------------ /v1/audio/speech

_tts_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="v1-speech")
"""Syntheses off the event loop, apart from transcriptions (a long transcription does not
hold up a sentence to read aloud)."""
MAX_SPEECH_BODY = 1024 * 1024
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class SpeechRequest(msgspec.Struct, kw_only=True):
    """OpenAI's ``/audio/speech`` body; ``language`` is Lydian's (a voice for the language
    when ``voice`` is not given)."""

    model: str
    input: str
    voice: str | dict[str, Any] | None = None
    response_format: str = "mp3"
    speed: float = 1.0
    instructions: str | None = None
    stream_format: str | None = None
    language: str | None = None


async def _refused(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """The same allowance as any other model use: None, or the error to answer."""
    try:
        await hub_of(request).check_model(role_of(request.user), request.user.id)
    except ModelRefused as refused:
        if refused.retry_after is None:
            return openai_error(403, refused.detail, "permission_error", refused.code)
        wait = {"Retry-After": retry_header(refused.retry_after)}
        return openai_error(429, refused.detail, "rate_limit_error", "rate_limit_exceeded", wait)
    return None


def _provider_error(exc: SpeechError) -> Response[Any]:
    kind = "invalid_request_error"
    if isinstance(exc, TooLong):
        return openai_error(400, str(exc), kind, "input_too_long")
    if isinstance(exc, UnknownVoice):
        return openai_error(400, str(exc), kind, "unknown_voice")
    if isinstance(exc, BadRequest):
        return openai_error(400, str(exc), kind, "invalid_input")
    if isinstance(exc, ProviderUnavailable):
        return openai_error(501, str(exc), "server_error", "speech_unavailable")
    if isinstance(exc, ProviderFailed):
        return openai_error(502, str(exc), "upstream_error", "speech_failed")
    return openai_error(500, str(exc), "server_error", "speech_failed")


@post(
    "/v1/audio/speech",
    tags=["openai"],
    status_code=200,
    request_max_body_size=MAX_SPEECH_BODY,
    exception_handlers={ClientException: _client_error},
)
async def speech(request: Request[Any, Any, Any]) -> Response[Any]:
    """Text to speech, like OpenAI's: JSON ``model`` (required; the configured provider
    answers whatever it names), ``input``, ``voice`` (a voice of the configured provider or
    one of OpenAI's names), ``response_format`` ``mp3`` (default), ``opus``, ``aac``,
    ``flac``, ``wav`` or ``pcm``, ``speed`` 0.25-4; the audio bytes come back."""
    settings: SpeechSettings = hub_of(request).plugin_settings(PLUGIN) or SpeechSettings()
    kind = "invalid_request_error"
    try:
        body = msgspec.json.decode(await request.body(), type=SpeechRequest)
    except msgspec.ValidationError as exc:
        return openai_error(400, f"invalid request: {exc}", kind)
    except msgspec.DecodeError:
        return openai_error(400, "invalid request: the body is not JSON", kind)
    if not body.model.strip():
        return openai_error(400, "the 'model' field is required", kind, "missing_model")
    if body.response_format not in FORMATS:
        return openai_error(
            400,
            f"response_format {body.response_format!r} is not supported; use one of "
            + ", ".join(FORMATS),
            kind,
            "unsupported_response_format",
        )
    if body.stream_format not in (None, "audio"):
        return openai_error(
            400, "only stream_format 'audio' is supported", kind, "unsupported_stream_format"
        )
    if not MIN_SPEED <= body.speed <= MAX_SPEED:
        return openai_error(400, f"speed must be between {MIN_SPEED} and {MAX_SPEED}", kind)
    if not body.input.strip():
        return openai_error(400, "the input text is empty", kind, "empty_input")
    if len(body.input) > settings.tts_max_chars:
        return openai_error(
            400,
            f"the input has {len(body.input):,} characters; the limit is "
            f"{settings.tts_max_chars:,}",
            kind,
            "input_too_long",
        )
    voice = body.voice.get("id") if isinstance(body.voice, dict) else body.voice
    if refused := await _refused(request):
        return refused
    provider = tts_of(settings)
    loop = asyncio.get_running_loop()
    try:
        spoken = await loop.run_in_executor(
            _tts_pool,
            lambda: provider.synthesize(
                body.input,
                voice=str(voice) if voice else None,
                language=body.language,
                format=body.response_format,
                speed=body.speed,
            ),
        )
    except SpeechError as exc:
        return _provider_error(exc)
    headers = {**NO_STORE, "X-Lydian-Voice": spoken.voice, "X-Lydian-Provider": spoken.provider}
    return Response(spoken.audio, media_type=spoken.media_type, headers=headers)


@get("/v1/audio/voices", tags=["openai"])
async def voices(request: Request[Any, Any, Any]) -> Response[Any]:
    """The configured text-to-speech provider's voices (Lydian's; OpenAI has no such
    route): ``{"object": "list", "data": [{id, name, languages, gender, provider}]}``, and
    for espeak-ng the ``variants`` a voice takes after ``+``."""
    settings: SpeechSettings = hub_of(request).plugin_settings(PLUGIN) or SpeechSettings()
    provider = tts_of(settings)
    loop = asyncio.get_running_loop()
    try:
        listed = await loop.run_in_executor(_tts_pool, provider.voices)
        extra: dict[str, Any] = {}
        if isinstance(provider, EspeakNG):
            extra["variants"] = await loop.run_in_executor(_tts_pool, provider.variants)
            extra["aliases"] = OPENAI_ALIASES
    except SpeechError as exc:
        return _provider_error(exc)
    data = [msgspec.to_builtins(v) for v in listed]
    return Response({"object": "list", "data": data, **extra}, headers=NO_STORE)


# ------------------------------------------------------------------ hooks


@hookimpl
def lydian_plugin_settings() -> type[msgspec.Struct]:
    return SpeechSettings


@hookimpl
def lydian_attachment_handlers() -> list[AttachmentHandler]:
    return [
        AttachmentHandler(
            name="transcript",
            media_types=("audio/*",),
            run=run_transcript,
            # 30 minutes of audio take ~2 minutes of one core with tiny.en; a loaded
            # machine and a larger model need more
            timeout=900.0,
            memory_mb=3072,
            max_bytes=MAX_BYTES,
            room_settings=True,
            description="the text of a voice message (offline or Google speech-to-text)",
        )
    ]


@hookimpl
def lydian_routes() -> list[RouteHandler]:
    from .commands import voice_command  # it imports this module

    return [transcriptions, speech, voices, voice_command]
