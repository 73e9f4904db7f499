"""A fake ElevenLabs API on 127.0.0.1, shaped like the real one, for the real ``elevenlabs``
client (``ElevenLabs(base_url=fake.base_url, api_key=...)``).

- ``GET /v1/voices``: ``{"voices": [{voice_id, name, category, labels, verified_languages}]}``.
- ``POST /v1/text-to-speech/{voice_id}?output_format=mp3_44100_128`` with JSON ``text`` and
  ``model_id``: real audio (a tone, :data:`SECONDS_PER_CHAR` per character of text) in the
  asked format (``mp3_*``, ``pcm_*``, ``wav_*``, ``opus_*``).
- Errors like ElevenLabs': 401 ``{"detail": {"status": "invalid_api_key", ...}}`` without the
  right ``xi-api-key`` header, 404 ``voice_not_found``, 422 for a body without ``text``.

Every request is logged (method, path, query, headers, JSON body) so a test can check what
the client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

SECONDS_PER_CHAR = 0.05
VOICES = [
    {
        "voice_id": "21m00Tcm4TlvDq8ikWAM",
        "name": "Rachel",
        "category": "premade",
        "labels": {"accent": "american", "gender": "female", "age": "young"},
        "verified_languages": [
            {"language": "en", "model_id": "eleven_multilingual_v2", "accent": "american"}
        ],
    },
    {
        "voice_id": "pNInz6obpgDQGcFmaJgB",
        "name": "Adam",
        "category": "premade",
        "labels": {"accent": "american", "gender": "male", "age": "middle aged"},
        "verified_languages": [
            {"language": "en", "model_id": "eleven_multilingual_v2"},
            {"language": "de", "model_id": "eleven_multilingual_v2"},
        ],
    },
]


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class FakeElevenLabs:
    """``async with FakeElevenLabs(api_key="k") as fake: fake.base_url``."""

    def __init__(self, api_key: str = "el-test-key") -> None:
        self.api_key = api_key
        self.calls: list[Call] = []
        self.port = 0
        self.status: int | None = None
        """A scripted failure status for text-to-speech (e.g. 500)."""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tts_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path.startswith("/v1/text-to-speech/")]

    async def __aenter__(self) -> FakeElevenLabs:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                request = await _read(reader)
                if request is None:
                    return
                status, content_type, data = self._answer(request)
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                    f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def _answer(self, call: Call) -> tuple[int, str, bytes]:
        self.calls.append(call)
        if call.headers.get("xi-api-key") != self.api_key:
            return _error(401, "invalid_api_key", "Invalid API key")
        if call.method == "GET" and call.path == "/v1/voices":
            return 200, "application/json", json.dumps({"voices": VOICES}).encode()
        if call.method == "POST" and call.path.startswith("/v1/text-to-speech/"):
            voice_id = call.path.rsplit("/", 1)[-1]
            if voice_id not in {v["voice_id"] for v in VOICES}:
                return _error(
                    404, "voice_not_found", f"A voice with voice_id {voice_id} was not found."
                )
            text = call.body.get("text")
            if not isinstance(text, str) or not text:
                return 422, "application/json", b'{"detail": [{"loc": ["body", "text"]}]}'
            if self.status is not None:
                return _error(self.status, "internal_error", "scripted failure")
            fmt = call.query.get("output_format", "mp3_44100_128")
            try:
                media_type, data = audio(len(text) * SECONDS_PER_CHAR, fmt)
            except ValueError:
                return _error(400, "invalid_output_format", f"unknown output_format {fmt}")
            return 200, media_type, data
        return _error(404, "not_found", f"no route {call.method} {call.path}")


def _error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    body = {"detail": {"status": code, "message": message}}
    return status, "application/json", json.dumps(body).encode()


def audio(seconds: float, output_format: str) -> tuple[str, bytes]:
    """A 330 Hz tone as ElevenLabs' ``output_format`` (``codec_rate[_bitrate]``)."""
    import av
    import numpy as np

    codec, _, rest = output_format.partition("_")
    rate = int(rest.split("_")[0]) if rest else 0
    if codec not in ("mp3", "pcm", "wav", "opus") or not rate:
        raise ValueError(output_format)
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype("<i2")
    if codec == "pcm":
        return "audio/pcm", pcm.tobytes()
    container, encoder, media_type = {
        "mp3": ("mp3", "libmp3lame", "audio/mpeg"),
        "wav": ("wav", "pcm_s16le", "audio/wav"),
        "opus": ("ogg", "libopus", "audio/ogg"),
    }[codec]
    out = io.BytesIO()
    with av.open(out, "w", format=container) as dst:
        stream = dst.add_stream(encoder, rate=rate)
        stream.layout = "mono"
        name = stream.codec_context.format.name if stream.codec_context.format else "s16"
        resampler = av.AudioResampler(format=name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return media_type, out.getvalue()


async def _read(reader: asyncio.StreamReader) -> Call | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    raw = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"_raw": raw.decode("latin-1")}
    return Call(method, url.path, query, headers, body if isinstance(body, dict) else {})
