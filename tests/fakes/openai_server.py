"""A fake OpenAI-compatible server on 127.0.0.1: ``/v1/chat/completions`` over real HTTP/1.1,
``/v1/audio/transcriptions`` (multipart in, the script's ``transcript`` out) and
``/v1/audio/speech`` (JSON in, a tone of ``speech_seconds`` in the asked format out).

It streams SSE chunks exactly like OpenAI's API (chunked transfer encoding, ``data: {…}``
lines, ``data: [DONE]``) and follows a :class:`Script`: delay before the first token and
between tokens, an abrupt connection drop, a malformed chunk, a hang (for timeouts) or an
error status. Every request is logged with what was sent and whether the client closed the
connection before the end, so tests can prove that a cancel really closed the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOKENS = [f"word{i} " for i in range(20)]
MAX_HANG = 30.0
"""Seconds a hanging response waits at most for the client to give up (keeps tests bounded)."""


@dataclass
class Script:
    """How the next responses behave."""

    tokens: list[str] = field(default_factory=lambda: list(DEFAULT_TOKENS))
    first_delay: float = 0.0
    token_delay: float = 0.0
    drop_after: int | None = None
    """Close the connection abruptly after this many tokens."""
    malformed_after: int | None = None
    """Send a chunk that is not JSON after this many tokens."""
    hang_after: int | None = None
    """Stop sending (connection left open) after this many tokens."""
    status: int = 200
    """A non-200 status answers an OpenAI-style JSON error instead of a stream."""
    pause_after: int | None = None
    """After this many tokens, wait until ``resume`` is set (the test decides when a stream
    that is under way goes on: "mid-stream" however slow the machine is)."""
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    answer: Callable[[dict[str, Any]], list[str]] | None = None
    """Compute the tokens from the request body (a model that reads what it was sent,
    e.g. :func:`describe_images`) instead of ``tokens``."""
    transcript: str = "hello from the fake transcriber"
    """What ``/audio/transcriptions`` answers (any audio; the request is logged)."""
    speech_seconds: float = 1.0
    """How long the tone ``/audio/speech`` answers is (real audio in the asked format)."""


@dataclass
class RequestLog:
    path: str
    body: dict[str, Any]
    """The JSON body; for multipart requests the form's text fields."""
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Multipart file fields: name -> (filename, bytes)."""
    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    completed: bool = False
    client_closed_at: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def client_closed(self) -> bool:
        return self.client_closed_at is not None

    def image_parts(self) -> list[dict[str, Any]]:
        """The ``image_url`` content parts of every message received, in order."""
        return image_parts(self.body)

    def text(self) -> str:
        """All text the messages carried (plain contents and text parts)."""
        out: list[str] = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out += [p.get("text", "") for p in content if p.get("type") == "text"]
        return "\n".join(out)


def image_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            parts += [p for p in content if p.get("type") == "image_url"]
    return parts


def describe_images(body: dict[str, Any]) -> list[str]:
    """A fake vision model's answer: what each received image is (format, size, sha256
    prefix, decoded from its data: URL), so a test can prove the bytes got through."""
    import base64
    import hashlib
    import io

    from PIL import Image

    words = []
    for index, part in enumerate(image_parts(body), 1):
        url = part["image_url"]["url"]
        if not url.startswith("data:"):
            words.append(f"image {index} is at {url}. ")
            continue
        data = base64.b64decode(url.split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as img:
            size = f"{img.format} {img.width}x{img.height}"
        words.append(
            f"image {index} is a {size} (sha256 {hashlib.sha256(data).hexdigest()[:12]}). "
        )
    return words or ["I see no image. "]


class FakeOpenAI:
    """``async with FakeOpenAI(Script(...)) as fake: fake.base_url``."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[RequestLog] = []
        self.connections = 0
        """TCP connections accepted (a client reusing its connection opens one)."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
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

    def transcription_requests(self) -> list[RequestLog]:
        return [r for r in self.requests if r.path.endswith("/audio/transcriptions")]

    def speech_requests(self) -> list[RequestLog]:
        return [r for r in self.requests if r.path.endswith("/audio/speech")]

    def chat_requests(self) -> list[RequestLog]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def wait_for_request(self, timeout: float = 5.0) -> RequestLog:
        deadline = time.monotonic() + timeout
        while not self.chat_requests():
            if time.monotonic() > deadline:
                raise AssertionError("the fake OpenAI server got no chat request")
            await asyncio.sleep(0.005)
        return self.chat_requests()[-1]

    # ------------------------------------------------------------ HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, body, content_type = request
                if method == "POST" and path.endswith("/audio/transcriptions"):
                    await self._transcribe(path, body, content_type, writer)
                    continue
                if method == "POST" and path.endswith("/audio/speech"):
                    await self._speak(path, body, writer)
                    continue
                keep = await self._route(method, path, body, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # the fake is shutting down; end this connection quietly
            return
        finally:
            self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "GET" and path.endswith("/models"):
            await _json(writer, 200, {"object": "list", "data": [{"id": "fake-model"}]})
            return True
        if method != "POST" or not path.endswith("/chat/completions"):
            await _json(writer, 404, {"error": {"message": f"no route {path}"}})
            return True
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            await _json(writer, 400, {"error": {"message": "body is not JSON"}})
            return True
        log = RequestLog(path=path, body=payload)
        self.requests.append(log)
        script = self.script
        try:
            if script.status != 200:
                error = {"message": "scripted failure", "type": "server_error", "code": None}
                await _json(writer, script.status, {"error": error})
                return True
            if not payload.get("stream"):
                await asyncio.sleep(script.first_delay)
                tokens = script.answer(payload) if script.answer else script.tokens
                await _json(writer, 200, _completion(payload, "".join(tokens)))
                log.sent = len(tokens)
                log.completed = True
                return True
            return await self._stream(payload, log, reader, writer)
        finally:
            log.ended.set()

    async def _transcribe(
        self, path: str, body: bytes, content_type: str, writer: asyncio.StreamWriter
    ) -> None:
        """OpenAI's ``/audio/transcriptions``: multipart ``file`` and ``model`` required."""
        fields, files = _multipart(body, content_type)
        log = RequestLog(path=path, body=fields, files=files)
        self.requests.append(log)
        script = self.script
        try:
            if script.status != 200:
                error = {"message": "scripted failure", "type": "server_error", "code": None}
                await _json(writer, script.status, {"error": error})
                return
            if "file" not in files or not fields.get("model"):
                error = {"message": "file and model are required", "type": "invalid_request_error"}
                await _json(writer, 400, {"error": error})
                return
            text = script.transcript
            fmt = fields.get("response_format", "json")
            if fmt == "text":
                data = (text + "\n").encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    + f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
            elif fmt == "verbose_json":
                segment = {
                    "id": 0,
                    "seek": 0,
                    "start": 0.0,
                    "end": 1.5,
                    "text": " " + text,
                    "tokens": [1, 2, 3],
                    "temperature": 0.0,
                    "avg_logprob": -0.25,
                    "compression_ratio": 1.0,
                    "no_speech_prob": 0.01,
                }
                verbose = {
                    "task": "transcribe",
                    "language": "english",
                    "duration": 1.5,
                    "text": text,
                    "segments": [segment],
                }
                await _json(writer, 200, verbose)
            else:
                await _json(writer, 200, {"text": text})
            log.sent = 1
            log.completed = True
        finally:
            log.ended.set()

    async def _speak(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        """OpenAI's ``/audio/speech``: ``model``, ``input`` and ``voice`` required; a tone."""
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        log = RequestLog(path=path, body=payload)
        self.requests.append(log)
        script = self.script
        try:
            if script.status != 200:
                error = {"message": "scripted failure", "type": "server_error", "code": None}
                await _json(writer, script.status, {"error": error})
                return
            if not all(payload.get(k) for k in ("model", "input", "voice")):
                error = {"message": "model, input and voice are required", "type": "invalid"}
                await _json(writer, 400, {"error": error})
                return
            fmt = payload.get("response_format", "mp3")
            if fmt not in SPEECH_FORMATS:
                await _json(writer, 400, {"error": {"message": f"bad format {fmt}"}})
                return
            data = tone(script.speech_seconds, fmt)
            head = f"HTTP/1.1 200 OK\r\ncontent-type: {SPEECH_FORMATS[fmt][3]}\r\n"
            writer.write(head.encode() + f"content-length: {len(data)}\r\n\r\n".encode() + data)
            await writer.drain()
            log.sent = len(data)
            log.completed = True
        finally:
            log.ended.set()

    async def _stream(
        self,
        payload: dict[str, Any],
        log: RequestLog,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        watcher = asyncio.create_task(_until_eof(reader))
        sender = asyncio.create_task(self._send_tokens(payload, log, writer))
        done, _ = await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
        if watcher in done:  # the client went away first
            log.client_closed_at = time.monotonic()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            return False
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        outcome = sender.result()
        if outcome == "drop":
            writer.transport.abort()
            return False
        if outcome == "hang":
            try:
                await asyncio.wait_for(_until_eof(reader), MAX_HANG)
                log.client_closed_at = time.monotonic()
            except TimeoutError:
                pass
            return False
        log.completed = True
        return True

    async def _send_tokens(
        self, payload: dict[str, Any], log: RequestLog, writer: asyncio.StreamWriter
    ) -> str:
        script = self.script
        model = payload.get("model", "fake-model")
        await _chunk(writer, _event(_delta(model, {"role": "assistant", "content": ""})))
        await asyncio.sleep(script.first_delay)  # the script's pace: the scenario
        tokens = script.answer(payload) if script.answer else script.tokens
        for index, token in enumerate(tokens):
            if index and script.token_delay:
                await asyncio.sleep(script.token_delay)
            if script.drop_after is not None and index == script.drop_after:
                return "drop"
            if script.hang_after is not None and index == script.hang_after:
                return "hang"
            if script.pause_after is not None and index == script.pause_after:
                await asyncio.wait_for(script.resume.wait(), MAX_HANG)
            if script.malformed_after is not None and index == script.malformed_after:
                await _chunk(writer, b'data: {"choices": [{"delta": {"content": \n\n')
                await asyncio.sleep(MAX_HANG)  # the client must give up on its own
                return "hang"
            await _chunk(writer, _event(_delta(model, {"content": token})))
            log.sent += 1
        await _chunk(writer, _event(_delta(model, {}, "stop")))
        await _chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return "done"


SPEECH_FORMATS = {
    # format: (container, codec, rate, media type)
    "mp3": ("mp3", "libmp3lame", 24000, "audio/mpeg"),
    "opus": ("ogg", "libopus", 48000, "audio/ogg"),
    "aac": ("adts", "aac", 24000, "audio/aac"),
    "flac": ("flac", "flac", 24000, "audio/flac"),
    "wav": ("wav", "pcm_s16le", 24000, "audio/wav"),
    "pcm": ("s16le", "pcm_s16le", 24000, "audio/pcm"),
}


def tone(seconds: float, fmt: str) -> bytes:
    """A 440 Hz tone of ``seconds`` encoded as OpenAI's ``fmt`` (PyAV), like a speech API's
    answer: real audio a client can decode."""
    import io

    import av
    import numpy as np

    container, codec, rate, _ = SPEECH_FORMATS[fmt]
    t = np.arange(int(seconds * 24000)) / 24000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    if fmt == "pcm":
        return pcm.tobytes()
    out = io.BytesIO()
    with av.open(out, "w", format=container) as dst:
        stream = dst.add_stream(codec, rate=rate)
        stream.layout = "mono"
        name = stream.codec_context.format.name if stream.codec_context.format else "s16"
        resampler = av.AudioResampler(format=name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 24000
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def _delta(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(payload: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": payload.get("model", "fake-model"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


async def _json(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()


def _multipart(
    body: bytes, content_type: str
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """The text fields and the files of a multipart/form-data body."""
    from email.parser import BytesParser
    from email.policy import HTTP

    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if not content_type.startswith("multipart/form-data"):
        return fields, files
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[str(name)] = (filename, payload)
        else:
            fields[str(name)] = payload.decode()
    return fields, files


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes, str] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    content_type = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "content-type":
            content_type = value.strip()
    body = await reader.readexactly(length) if length else b""
    return method, path, body, content_type


async def _serve_forever(script: Script) -> None:
    async with FakeOpenAI(script) as fake:
        print(f"ready {fake.port}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """``python -m tests.fakes.openai_server --tokens 200``: serve until killed (benchmarks)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--first-delay", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args()
    script = Script(
        tokens=[f"tok{i} " for i in range(args.tokens)],
        first_delay=args.first_delay,
        token_delay=args.token_delay,
    )
    asyncio.run(_serve_forever(script))


if __name__ == "__main__":
    main()
