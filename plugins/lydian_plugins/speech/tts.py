"""Text-to-speech providers behind one small interface.

A provider turns text into audio bytes (:class:`Speech`: the bytes and their media type)
and lists its voices (:class:`Voice`). Blocking functions, like the speech-to-text side:
run them in a thread.

- :class:`EspeakNG`: the offline default. espeak-ng (GPL-3.0+) runs as a **separate
  process** (``espeak-ng --stdin --stdout``); nothing links or imports it. 131 voices for
  about 100 languages (``espeak-ng --voices``) and 100 variants (``en-us+Alicia``); SSML
  with ``-m`` (the subset in :data:`SSML_TAGS`). It writes WAV; other formats are encoded
  with PyAV (:func:`.audio.encode`).
- :class:`OpenAISpeech`: any OpenAI-compatible ``/audio/speech`` through the ``openai``
  client.
- :class:`ElevenLabsSpeech`: ElevenLabs through the ``elevenlabs`` client (its
  ``base_url`` option makes it talk to any host, the tests' fake included).

Formats are OpenAI's: ``mp3``, ``opus`` (Ogg), ``aac`` (ADTS), ``flac``, ``wav`` and ``pcm``
(raw 16-bit little-endian mono at 24 kHz, no header).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from .audio import FORMATS, PCM_RATE, encode, fix_wav, wav_of_pcm
from .errors import BadRequest, ProviderFailed, ProviderUnavailable, TooLong, UnknownVoice
from .upstream import openai_client, service_errors

MAX_CHARS = 4096
"""The longest text one request may have (OpenAI's limit too)."""
SSML_TAGS = frozenset(
    {"speak", "voice", "prosody", "say-as", "emphasis", "break", "s", "p", "sub", "mark"}
)
"""The SSML elements passed to espeak-ng (``-m``); others (``audio``, which names files on
the hub's disk, and anything espeak-ng does not know) are refused."""


class Voice(msgspec.Struct, kw_only=True):
    id: str
    """What ``voice`` takes."""
    name: str
    languages: list[str] = []
    gender: str | None = None
    provider: str = ""


class Speech(msgspec.Struct, kw_only=True):
    audio: bytes
    media_type: str
    format: str
    voice: str
    provider: str
    seconds: float = 0.0
    """Wall time of the synthesis (encoding included)."""


@dataclass
class TtsLimits:
    max_chars: int = MAX_CHARS
    timeout: float = 60.0


class TextToSpeech(Protocol):
    """What every provider offers; both methods block (run them in a thread)."""

    name: str

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        language: str | None = None,
        format: str = "mp3",
        speed: float = 1.0,
    ) -> Speech: ...

    def voices(self) -> list[Voice]: ...


def check_request(text: str, format: str, limits: TtsLimits) -> str:
    """The text stripped; :class:`BadRequest` or :class:`TooLong` for what no provider takes."""
    if format not in FORMATS:
        raise BadRequest(
            f"the format {format!r} is not supported; use one of " + ", ".join(FORMATS)
        )
    text = text.strip()
    if not text:
        raise BadRequest("the input text is empty")
    if len(text) > limits.max_chars:
        raise TooLong(f"the input has {len(text):,} characters; the limit is {limits.max_chars:,}")
    return text


def is_ssml(text: str) -> bool:
    return text.lstrip().startswith("<speak")


def check_ssml(text: str) -> None:
    """Well-formed XML with only :data:`SSML_TAGS`, and no DTD (entities could expand)."""
    if "<!" in text:
        raise BadRequest("SSML may not have a DOCTYPE, entities or CDATA")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise BadRequest(f"the SSML is not well-formed XML ({exc})") from None
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag not in SSML_TAGS:
            raise BadRequest(
                f"the SSML element <{tag}> is not supported; use " + ", ".join(sorted(SSML_TAGS))
            )


# ------------------------------------------------------------------ espeak-ng

_VOICE_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)$")
_GENDERS = {"M": "male", "F": "female"}


@dataclass(frozen=True)
class _EspeakVoices:
    voices: tuple[Voice, ...]
    priority: dict[tuple[str, str], int]
    """(language, voice id) -> espeak-ng's priority (lower is preferred)."""
    variants: dict[str, str]
    """lower-case name or file key -> the file key ``-v voice+KEY`` takes."""
    variant_names: tuple[str, ...]


def _run_list(binary: str, what: str, timeout: float) -> list[tuple[str, ...]]:
    try:
        done = subprocess.run(
            [binary, f"--voices{what}"], capture_output=True, timeout=timeout, check=True
        )
    except FileNotFoundError:
        raise ProviderUnavailable(
            f"espeak-ng is not installed ({binary!r} not found; apt-get install espeak-ng)"
        ) from None
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
        raise ProviderFailed(f"espeak-ng could not list its voices: {exc}") from None
    rows = []
    for line in done.stdout.decode("utf-8", "replace").splitlines()[1:]:
        match = _VOICE_LINE.match(line)
        if match:
            rows.append(match.groups())
    return rows


@functools.lru_cache(maxsize=4)
def _espeak_voices(binary: str, timeout: float) -> _EspeakVoices:
    voices: list[Voice] = []
    priority: dict[tuple[str, str], int] = {}
    for pty, language, age_gender, name, _file, other in _run_list(binary, "", timeout):
        languages = [language]
        priority[(language, language)] = int(pty)
        for extra, extra_pty in re.findall(r"\(([^ )]+) (\d+)\)", other):
            languages.append(extra)
            priority[(extra, language)] = int(extra_pty)
        gender = _GENDERS.get(age_gender.rsplit("/", 1)[-1])
        voices.append(
            Voice(
                id=language,
                name=name.replace("_", " "),
                languages=languages,
                gender=gender,
                provider="espeak-ng",
            )
        )
    variants: dict[str, str] = {}
    names: list[str] = []
    for _pty, _kind, _age_gender, name, file, _other in _run_list(binary, "=variant", timeout):
        key = file.rsplit("/", 1)[-1]
        variants[name.lower()] = key
        variants[key.lower()] = key
        names.append(name)
    return _EspeakVoices(tuple(voices), priority, variants, tuple(names))


@dataclass
class EspeakNG:
    """espeak-ng in a child process (GPL-3.0+: a process boundary, never linked)."""

    binary: str = "espeak-ng"
    voice: str = "en-us"
    """The voice when a request names none and gives no language."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Other names for voices (OpenAI's ``alloy``…), resolved before the lookup."""
    limits: TtsLimits = field(default_factory=TtsLimits)
    name: str = "espeak-ng"

    def _table(self) -> _EspeakVoices:
        return _espeak_voices(shutil.which(self.binary) or self.binary, self.limits.timeout)

    def voices(self) -> list[Voice]:
        return list(self._table().voices)

    def variants(self) -> list[str]:
        """The variant names ``voice+VARIANT`` takes (``en-us+Alicia``)."""
        return list(self._table().variant_names)

    def resolve(self, voice: str | None, language: str | None) -> str:
        """The ``-v`` argument for a voice name (``en-us``, ``de+Alicia``, an alias) or, with
        no voice, the language's preferred voice; :class:`UnknownVoice` otherwise."""
        table = self._table()
        known = {v.id.lower(): v.id for v in table.voices}
        if not voice and language:
            wanted = language.lower()
            if wanted in known:
                return known[wanted]
            ranked = sorted((p, v) for (lang, v), p in table.priority.items() if lang == wanted)
            if not ranked:
                raise UnknownVoice(f"espeak-ng has no voice for the language {language!r}")
            return ranked[0][1]
        voice = (voice or self.voice).strip()
        voice = self.aliases.get(voice.lower(), voice)
        base, _, variant = voice.partition("+")
        if base.lower() not in known:
            raise UnknownVoice(
                f"espeak-ng has no voice {base!r}; GET /v1/audio/voices lists the "
                f"{len(known)} it has (e.g. en-us, en-gb, de, fr-fr, es)"
            )
        if not variant:
            return known[base.lower()]
        key = table.variants.get(variant.lower())
        if key is None:
            raise UnknownVoice(
                f"espeak-ng has no voice variant {variant!r} (e.g. "
                + ", ".join(table.variant_names[:5])
                + ")"
            )
        return f"{known[base.lower()]}+{key}"

    def command(self, voice: str, *, speed: float = 1.0, ssml: bool = False) -> list[str]:
        """The espeak-ng command line: UTF-8 text on stdin, WAV on stdout."""
        words_per_minute = max(80, min(500, round(175 * speed)))
        args = [self.binary, "--stdin", "--stdout", "-b", "1", "-v", voice]
        args += ["-s", str(words_per_minute)]
        return args + (["-m"] if ssml else [])

    def wav(
        self,
        text: str,
        *,
        voice: str | None = None,
        language: str | None = None,
        speed: float = 1.0,
    ) -> tuple[bytes, str]:
        """``text`` spoken as WAV bytes (espeak-ng's own 22,050 Hz) and the voice used."""
        text = check_request(text, "wav", self.limits)
        ssml = is_ssml(text)
        if ssml:
            check_ssml(text)
        chosen = self.resolve(voice, language)
        try:
            done = subprocess.run(
                self.command(chosen, speed=speed, ssml=ssml),
                input=text.encode(),
                capture_output=True,
                timeout=self.limits.timeout,
            )
        except FileNotFoundError:
            raise ProviderUnavailable(
                "espeak-ng is not installed (apt-get install espeak-ng)"
            ) from None
        except subprocess.TimeoutExpired:
            raise ProviderFailed(
                f"espeak-ng took longer than {self.limits.timeout:.0f} s and was stopped"
            ) from None
        if done.returncode != 0 or len(done.stdout) <= 44:
            detail = done.stderr.decode("utf-8", "replace").strip()[:300] or "no audio"
            raise ProviderFailed(f"espeak-ng failed (exit {done.returncode}): {detail}")
        return fix_wav(done.stdout), chosen

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        language: str | None = None,
        format: str = "mp3",
        speed: float = 1.0,
    ) -> Speech:
        started = time.monotonic()
        check_request(text, format, self.limits)
        wav, chosen = self.wav(text, voice=voice, language=language, speed=speed)
        audio = wav if format == "wav" else encode(wav, format)
        return Speech(
            audio=audio,
            media_type=FORMATS[format].media_type,
            format=format,
            voice=chosen,
            provider=self.name,
            seconds=round(time.monotonic() - started, 4),
        )


# ------------------------------------------------------------------ OpenAI-compatible

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)


@dataclass
class OpenAISpeech:
    """An OpenAI-compatible ``/audio/speech`` endpoint, through the ``openai`` client."""

    base_url: str
    api_key: str
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    known_voices: tuple[str, ...] = OPENAI_VOICES
    limits: TtsLimits = field(default_factory=TtsLimits)
    name: str = "openai"

    def voices(self) -> list[Voice]:
        return [Voice(id=v, name=v, provider=self.name) for v in self.known_voices]

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        language: str | None = None,
        format: str = "mp3",
        speed: float = 1.0,
    ) -> Speech:
        text = check_request(text, format, self.limits)
        chosen = (voice or self.voice).strip()
        if self.known_voices and chosen not in self.known_voices:
            raise UnknownVoice(
                f"the OpenAI speech provider has no voice {chosen!r}; use one of "
                + ", ".join(self.known_voices)
            )
        client = openai_client(self.base_url, self.api_key, self.limits.timeout)
        started = time.monotonic()
        with service_errors(BadRequest, "text"), client:
            answer = client.audio.speech.create(
                model=self.model,
                voice=chosen,
                input=text,
                response_format=format,  # type: ignore[arg-type]
                speed=speed,
            )
            audio = answer.content
        if not audio:
            raise ProviderFailed("the speech service answered no audio")
        return Speech(
            audio=audio,
            media_type=FORMATS[format].media_type,
            format=format,
            voice=chosen,
            provider=self.name,
            seconds=round(time.monotonic() - started, 4),
        )


# ------------------------------------------------------------------ ElevenLabs

ELEVENLABS_MP3 = "mp3_44100_128"
ELEVENLABS_PCM = f"pcm_{PCM_RATE}"


@dataclass
class ElevenLabsSpeech:
    """ElevenLabs text-to-speech through the ``elevenlabs`` client. ``voice`` is a voice id
    or a voice's name (looked up in the account's voice list)."""

    api_key: str
    base_url: str = "https://api.elevenlabs.io"
    model: str = "eleven_multilingual_v2"
    voice: str = ""
    """The voice when a request names none (an id or a name; empty: the first listed)."""
    limits: TtsLimits = field(default_factory=TtsLimits)
    name: str = "elevenlabs"

    def _client(self) -> Any:
        try:
            from elevenlabs.client import ElevenLabs
        except ImportError:
            raise ProviderUnavailable(
                "the ElevenLabs provider needs the elevenlabs extra "
                "(pip install 'lydian-hub[elevenlabs]')"
            ) from None
        if not self.api_key:
            raise ProviderUnavailable(
                "the ElevenLabs provider has no API key (LYDIAN_PLUGIN_SPEECH_ELEVENLABS_API_KEY)"
            )
        return ElevenLabs(api_key=self.api_key, base_url=self.base_url, timeout=self.limits.timeout)

    def _call(self, what: str, run: Any) -> Any:
        from elevenlabs.core.api_error import ApiError

        try:
            return run()
        except ApiError as exc:
            message = _elevenlabs_message(exc.body)
            if exc.status_code in (400, 422):
                raise BadRequest(f"ElevenLabs refused the {what}: {message}") from None
            if exc.status_code == 404:
                raise UnknownVoice(f"ElevenLabs: {message}") from None
            raise ProviderFailed(f"ElevenLabs answered {exc.status_code}: {message}") from None
        except Exception as exc:  # httpx's connection errors and timeouts
            if type(exc).__module__.startswith("httpx"):
                raise ProviderFailed(f"ElevenLabs cannot be reached: {exc}") from None
            raise

    def voices(self) -> list[Voice]:
        client = self._client()
        answer = self._call(
            "voice list", lambda: client.voices.get_all(request_options={"max_retries": 0})
        )
        out = []
        for v in answer.voices:
            labels = v.labels or {}
            languages = [x.language for x in v.verified_languages or [] if x.language]
            if not languages and labels.get("language"):
                languages = [labels["language"]]
            out.append(
                Voice(
                    id=v.voice_id,
                    name=v.name or v.voice_id,
                    languages=languages,
                    gender=labels.get("gender"),
                    provider=self.name,
                )
            )
        return out

    def resolve(self, voice: str | None) -> str:
        wanted = (voice or self.voice).strip()
        listed = self.voices()
        if not listed:
            raise UnknownVoice("the ElevenLabs account has no voices")
        if not wanted:
            return listed[0].id
        for v in listed:
            if wanted == v.id or wanted.lower() == v.name.lower():
                return v.id
        raise UnknownVoice(
            f"ElevenLabs has no voice {wanted!r}; the account has "
            + ", ".join(v.name for v in listed[:10])
        )

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        language: str | None = None,
        format: str = "mp3",
        speed: float = 1.0,
    ) -> Speech:
        text = check_request(text, format, self.limits)
        if is_ssml(text):
            raise BadRequest("ElevenLabs takes plain text, not SSML")
        started = time.monotonic()
        voice_id = self.resolve(voice)
        client = self._client()
        wanted = ELEVENLABS_MP3 if format == "mp3" else ELEVENLABS_PCM
        extra: dict[str, Any] = {"language_code": language} if language else {}
        if speed != 1.0:
            extra["voice_settings"] = {"speed": max(0.7, min(1.2, speed))}

        def run() -> bytes:
            chunks = client.text_to_speech.convert(
                voice_id,
                text=text,
                model_id=self.model,
                output_format=wanted,
                request_options={"max_retries": 0},
                **extra,
            )
            return b"".join(chunks)

        audio = self._call("text", run)
        if not audio:
            raise ProviderFailed("ElevenLabs answered no audio")
        if format not in ("mp3", "pcm"):
            audio = wav_of_pcm(audio, PCM_RATE)
            if format != "wav":
                audio = encode(audio, format)
        return Speech(
            audio=audio,
            media_type=FORMATS[format].media_type,
            format=format,
            voice=voice_id,
            provider=self.name,
            seconds=round(time.monotonic() - started, 4),
        )


def _elevenlabs_message(body: Any) -> str:
    if isinstance(body, dict):
        detail = body.get("detail", body)
        if isinstance(detail, dict) and detail.get("message"):
            return str(detail["message"])[:300]
        if isinstance(detail, str):
            return detail[:300]
    return str(body)[:300]
