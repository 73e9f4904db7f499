"""Typed errors of the speech library; every message is meant to be shown to people."""

from __future__ import annotations


class SpeechError(Exception):
    """A failure to transcribe, with a message for people (bad input or a missing piece)."""


class BadAudio(SpeechError):
    """Not audio, truncated, or in a codec that cannot be decoded."""


class TooLong(SpeechError):
    """Longer (in seconds) or larger (in bytes) than the limits allow."""


class NoSpeech(SpeechError):
    """Sound was there (not silence) but no speech was found in it: noise, music, hum."""


class ProviderUnavailable(SpeechError):
    """The configured provider cannot run here (an extra not installed, no model, no key)."""


class ProviderFailed(SpeechError):
    """The provider was reached but failed (a cloud service's error, a model that crashed)."""


class BadRequest(SpeechError):
    """A text-to-speech request no provider can take: empty text, bad SSML, a format that
    does not exist."""


class UnknownVoice(BadRequest):
    """The provider has no voice of that name (or none for that language)."""
