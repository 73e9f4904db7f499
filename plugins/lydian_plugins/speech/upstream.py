"""Calls to an OpenAI-compatible speech service (``/audio/transcriptions``,
``/audio/speech``) through the ``openai`` client: the client, and its errors as ours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ProviderFailed, ProviderUnavailable

if TYPE_CHECKING:
    import openai


def openai_client(base_url: str, api_key: str, timeout: float) -> openai.OpenAI:
    """A client without retries (a failed request is reported, not repeated); raises
    :class:`ProviderUnavailable` when no key is configured."""
    import openai

    if not api_key:
        raise ProviderUnavailable(
            "the OpenAI speech provider has no API key (LYDIAN_PLUGIN_SPEECH_OPENAI_API_KEY)"
        )
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)


@contextlib.contextmanager
def service_errors(refused: type[Exception], what: str) -> Iterator[None]:
    """Within the block, a 400 from the service becomes ``refused`` ("the speech service
    refused the WHAT: …"), any other status or a connection failure :class:`ProviderFailed`."""
    import openai

    try:
        yield
    except openai.APIStatusError as exc:
        message = upstream_message(exc)
        if exc.status_code == 400:
            raise refused(f"the speech service refused the {what}: {message}") from None
        raise ProviderFailed(f"the speech service answered {exc.status_code}: {message}") from None
    except openai.APIError as exc:  # connection refused, timeout
        raise ProviderFailed(f"the speech service cannot be reached: {exc}") from None


def upstream_message(exc: Any) -> str:
    """The service's own error message (OpenAI's error shape), else the exception's."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    return str(exc)[:300]
