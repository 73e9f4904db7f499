"""A fake Google Cloud Speech-to-Text v1 server on 127.0.0.1, made with grpcio.

It serves ``google.cloud.speech.v1.Speech/Recognize`` and ``/StreamingRecognize`` with
grpc generic handlers and the message types the ``google-cloud-speech`` package ships
(proto-plus ``serialize``/``deserialize``; the package has no ``*_pb2_grpc`` servicer). Like
Google it refuses what Google refuses (INVALID_ARGUMENT: no language, an encoding other
than LINEAR16 here, a sample rate out of range, an odd number of PCM bytes, more than a
minute for ``Recognize``, a stream whose first message is not the config, an audio message
over 25,600 bytes, speaker counts the wrong way round), logs every request, and answers from
a :class:`GScript`: scripted results, an error status, or a hang (for timeouts).
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from google.cloud import speech_v1

SERVICE = "google.cloud.speech.v1.Speech"
MAX_HANG = 30.0
"""Seconds a hanging call waits at most (the client's timeout ends it sooner)."""
MAX_STREAM_CHUNK = 25_600


def word(text: str, start: float, end: float, speaker: int = 0) -> Any:
    return speech_v1.WordInfo(
        word=text,
        start_time=timedelta(seconds=start),
        end_time=timedelta(seconds=end),
        speaker_tag=speaker,
    )


def result(
    transcript: str,
    words: list[Any] | None = None,
    *,
    confidence: float = 0.0,
    end: float = 0.0,
    language: str = "en-us",
) -> Any:
    """A ``SpeechRecognitionResult`` (what ``Recognize`` answers)."""
    alternative = speech_v1.SpeechRecognitionAlternative(
        transcript=transcript, confidence=confidence, words=words or []
    )
    return speech_v1.SpeechRecognitionResult(
        alternatives=[alternative], result_end_time=timedelta(seconds=end), language_code=language
    )


def streamed(
    transcript: str,
    words: list[Any] | None = None,
    *,
    final: bool,
    confidence: float = 0.0,
    stability: float = 0.0,
    end: float = 0.0,
    language: str = "en-us",
) -> Any:
    """A ``StreamingRecognitionResult``: interim (with ``stability``) or final."""
    alternative = speech_v1.SpeechRecognitionAlternative(
        transcript=transcript, confidence=confidence, words=words or []
    )
    return speech_v1.StreamingRecognitionResult(
        alternatives=[alternative],
        is_final=final,
        stability=stability,
        result_end_time=timedelta(seconds=end),
        language_code=language,
    )


@dataclass
class GScript:
    results: list[Any] = field(default_factory=list)
    """What ``Recognize`` answers (:func:`result`)."""
    stream: list[list[Any]] = field(default_factory=list)
    """What ``StreamingRecognize`` answers (:func:`streamed`): one response per list, in order,
    after the audio has been read."""
    error: tuple[grpc.StatusCode, str] | None = None
    """Abort every call with this status."""
    hang: bool = False
    """Answer nothing until ``release`` is set (or :data:`MAX_HANG`)."""
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class Call:
    method: str
    config: Any
    """The ``RecognitionConfig`` (for a stream: its ``StreamingRecognitionConfig``)."""
    audio: bytes
    chunks: int = 0


class FakeGoogleSpeech:
    def __init__(self, script: GScript | None = None) -> None:
        self.script = script or GScript()
        self.calls: list[Call] = []
        self._server: Any = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FakeGoogleSpeech:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "Recognize": grpc.unary_unary_rpc_method_handler(
                self._recognize,
                request_deserializer=speech_v1.RecognizeRequest.deserialize,
                response_serializer=speech_v1.RecognizeResponse.serialize,
            ),
            "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                self._streaming,
                request_deserializer=speech_v1.StreamingRecognizeRequest.deserialize,
                response_serializer=speech_v1.StreamingRecognizeResponse.serialize,
            ),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.script.release.set()
        self._server.stop(grace=None).wait(10)

    # ------------------------------------------------------------------ checks

    def _check(self, context: Any, config: Any, audio: bytes, limit: float | None) -> None:
        def refuse(message: str) -> None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        Encoding = speech_v1.RecognitionConfig.AudioEncoding
        if not config.language_code:
            refuse("Invalid recognition 'config': missing language_code.")
        if config.encoding != Encoding.LINEAR16:
            refuse(f"this fake takes LINEAR16 only, not {config.encoding.name}")
        if not 8000 <= config.sample_rate_hertz <= 48000:
            refuse("sample_rate_hertz must be between 8000 and 48000")
        if len(config.alternative_language_codes) > 3:
            refuse("at most 3 alternative_language_codes")
        diarization = config.diarization_config
        if diarization.enable_speaker_diarization and (
            diarization.min_speaker_count > diarization.max_speaker_count
        ):
            refuse("min_speaker_count is larger than max_speaker_count")
        if len(audio) % 2:
            refuse("LINEAR16 audio has an odd number of bytes")
        rate = config.sample_rate_hertz * 2 * max(1, config.audio_channel_count)
        if limit is not None and len(audio) / rate > limit:
            refuse("Sync input too long. For audio longer than 1 min use LongRunningRecognize")

    def _before(self, context: Any) -> None:
        if self.script.error is not None:
            context.abort(*self.script.error)
        if self.script.hang:
            self.script.release.wait(MAX_HANG)

    # ------------------------------------------------------------------ methods

    def _recognize(self, request: Any, context: Any) -> Any:
        self.calls.append(Call("Recognize", request.config, request.audio.content))
        self._before(context)
        self._check(context, request.config, request.audio.content, 60.0)
        return speech_v1.RecognizeResponse(results=list(self.script.results))

    def _streaming(self, requests: Any, context: Any) -> Any:
        first = next(requests, None)
        if first is None or not first.streaming_config.config.language_code:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first StreamingRecognizeRequest must hold the streaming_config",
            )
        call = Call("StreamingRecognize", first.streaming_config, b"")
        self.calls.append(call)
        self._before(context)
        audio = bytearray()
        for request in requests:
            if request.streaming_config.config.language_code:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config sent twice")
            if len(request.audio_content) > MAX_STREAM_CHUNK:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audio_content over 25 KB")
            audio += request.audio_content
            call.chunks += 1
        call.audio = bytes(audio)
        self._check(context, first.streaming_config.config, call.audio, 305.0)
        for results in self.script.stream:
            yield speech_v1.StreamingRecognizeResponse(results=results)
