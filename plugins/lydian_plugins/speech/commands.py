"""Voice commands: a spoken chat-ops command, run as the speaker, or rejected.

``POST /api/rooms/{room}/voice-command`` takes a short recording (multipart ``file``, or
the audio as the body), transcribes it with the configured speech-to-text provider and
matches the transcript against the room's registered commands (``hub.room_commands``).
The grammar is strict on purpose: an utterance that is not a command is **rejected**
(nothing runs), never forced onto the nearest command.

An utterance is a command when, after normalising (lower case, punctuation dropped,
numbers as digits or words alike; a name may be heard as up to three words: "O. C. R."
is ``ocr``, "bridge user" ``bridgeuser``):

- it starts with the command word, optionally after the wake word ("Lydian", "hey
  Lydian") and the word "slash" ("slash help", "Lydian, plugins list", "/roll");
- the command word matches a command of the room exactly, or within a tight edit
  distance (none for names under 5 letters, 1 up to 8, 2 beyond) and nearer to it than to
  any other command;
- said bare (no wake word, no "slash"), the rest must parse as the command's arguments,
  and a command taking free text (a greedy argument: ``/echo``, ``/ask``) is not accepted
  bare at all ("Ask Sam about it" is a sentence, "Lydian ask …" a command).

A match runs through ``hub.run_command`` as the speaker: enablement and permissions apply
as for a typed command, the reply frame (``command_result`` or ``error``) is in the answer,
and the room sees what a typed command shows it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException
from litestar.params import FromPath

from hub.sdk import (
    NO_STORE,
    ModelRefused,
    RoomCommand,
    hub_of,
    openai_error,
    retry_header,
    role_of,
)

from .plugin import (
    FORM_OVERHEAD,
    PLUGIN,
    SpeechSettings,
    _client_error,
    provider_of,
    transcribe_or_error,
)
from .providers import Limits, OfflineWhisper, OpenAITranscriptions, SpeechToText

WAKE_WORDS = ("lydian",)
"""Said first, they mark what follows as meant for the hub (optional)."""
GREETINGS = {"hey", "hi", "ok", "okay"}
SLASH = "slash"
MAX_COMMAND_SECONDS = 30.0
"""A spoken command is short: longer recordings are refused before they are decoded."""
MAX_COMMAND_BYTES = 8 * 1024 * 1024
MAX_JOINED = 3
"""A command word may be heard as up to this many words ("bridge user", "O C R")."""

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_ONES)} | {
    w: 10 * i for i, w in enumerate(_TENS) if w != "_"
}
_EDGE = "\"'`.,!?;:()[]{}<>«»“”\u2018\u2019…-"


def spell(number: int) -> str:
    """0-99 in words, joined (``25`` → ``twentyfive``); larger numbers stay digits."""
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (_ONES[ones] if ones else "")
    return str(number)


def key(word: str) -> str:
    """A word as compared with command names: letters and numbers only, lower case,
    numbers spelt out (``top10`` and "top ten" are the same key)."""
    word = re.sub(r"[^a-z0-9]", "", word.lower())
    return re.sub(r"\d+", lambda m: spell(int(m.group())), word)


def distance(a: str, b: str) -> int:
    """Levenshtein edit distance."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def bound(name: str) -> int:
    """How many edits a heard command word may be from ``name``: none under 5 letters."""
    return 0 if len(name) < 5 else 1 if len(name) <= 8 else 2


def numbers_to_digits(words: list[str]) -> list[str]:
    """Number words as digits ("twenty five" → ``25``), other words as they are."""
    out: list[str] = []
    pending: int | None = None
    for word in words:
        value = _WORD_VALUE.get(word.lower())
        if value is not None:
            if pending is not None and pending >= 20 and pending % 10 == 0 and value < 10:
                pending += value
                continue
            if pending is not None:
                out.append(str(pending))
            pending = value
            continue
        if pending is not None:
            out.append(str(pending))
            pending = None
        out.append(word)
    if pending is not None:
        out.append(str(pending))
    return out


NOT_BY_VOICE = frozenset({"password"})
"""Commands that carry a secret: heard by everyone near the speaker, and sent to a cloud
recogniser when one is configured. Said aloud they are refused, and their words are not
repeated in the answer."""


@dataclass
class Match:
    """What an utterance was heard as: a command to run, or why it is rejected."""

    accepted: bool
    reason: str = ""
    code: str = ""
    command: str | None = None
    text: str | None = None
    """The command as typed: ``/name args``."""
    wake_word: bool = False
    slash: bool = False
    distance: int = 0

    def as_json(self, transcript: str) -> dict[str, Any]:
        out: dict[str, Any] = {"accepted": self.accepted, "transcript": transcript}
        if self.accepted:
            out |= {
                "command": self.command,
                "text": self.text,
                "wake_word": self.wake_word,
                "slash": self.slash,
                "distance": self.distance,
            }
        else:
            out |= {"reason": self.reason, "code": self.code}
        return out


def _reject(code: str, reason: str) -> Match:
    return Match(False, reason=reason, code=code)


def _tokens(transcript: str) -> list[tuple[str, str]]:
    """``(as said, normalised)`` words: ``/`` is the word "slash", edge punctuation gone."""
    out = []
    for raw in transcript.replace("/", " / ").split():
        word = SLASH if raw == "/" else raw.strip(_EDGE)
        if word:
            out.append((raw, word))
    return out


def _find(words: list[str], commands: dict[str, RoomCommand]) -> tuple[str, int, int] | None:
    """``(name, words used, edit distance)`` of the command the words start with, the
    longest exact match first, then the one nearest within its bound; None when none is,
    or when two are equally near."""
    keys = {key(name): name for name in commands}
    for used in range(min(MAX_JOINED, len(words)), 0, -1):
        heard = "".join(key(w) for w in words[:used])
        if heard in keys:
            return keys[heard], used, 0
    best: list[tuple[int, int, str]] = []
    for used in range(1, min(MAX_JOINED, len(words)) + 1):
        heard = "".join(key(w) for w in words[:used])
        for k, name in keys.items():
            d = distance(heard, k)
            if d <= bound(k):
                best.append((d, -used, name))
    if not best:
        return None
    best.sort()
    d, used, name = best[0]
    if any(o[0] == d and o[2] != name for o in best[1:]):
        return None
    return name, -used, d


def match(transcript: str, commands: Sequence[RoomCommand]) -> Match:
    """Match ``transcript`` against ``commands``: a :class:`Match` accepted with the command
    text to run, or rejected with the reason (the rules are in this module's docstring)."""
    said = _tokens(transcript)
    words = [w for _, w in said]
    if not words:
        return _reject("no_speech", "no words were heard")
    wake = slash = False
    rest = list(words)
    if len(rest) > 1 and key(rest[0]) in GREETINGS and _is_wake(rest[1]):
        rest = rest[2:]
        wake = True
    elif rest and _is_wake(rest[0]):
        rest = rest[1:]
        wake = True
    if rest and distance(key(rest[0]), SLASH) <= 1:
        rest = rest[1:]
        slash = True
    by_name = {spec.name: spec for spec in commands}
    if not rest:
        return _reject("no_command", "no command word was heard after " + _said(wake, slash))
    found = _find(rest, by_name)
    if found is None:
        first = rest[0]
        return _reject(
            "no_command",
            f"{first!r} is not a command of this room; an utterance must start with one "
            f"({', '.join(sorted(by_name))})",
        )
    name, used, edits = found
    spec = by_name[name]
    args = rest[used:]
    greedy = any(a.greedy for a in spec.args)
    marked = wake or slash
    if greedy:  # free text as said (case, punctuation), but for what ends the name
        arg_words = [raw for raw, _ in said[len(said) - len(args) :]] if args else []
        if arg_words:
            arg_words[0] = arg_words[0].lstrip(_EDGE) or arg_words[0]
    else:
        arg_words = numbers_to_digits([w.lower() for w in args])
    text = " ".join([f"/{name}", *map(_quoted, arg_words)])
    if not marked:
        if greedy:
            return _reject(
                "needs_wake_word",
                f"/{name} takes free text, so it runs only when said as 'slash {name} …' or "
                f"'{WAKE_WORDS[0].capitalize()} {name} …' (a sentence may start with "
                f"{name!r})",
            )
        try:
            spec.parse(" ".join(map(_quoted, arg_words)))
        except Exception as exc:
            return _reject(
                "not_arguments",
                f"{' '.join(args)!r} is not what /{name} takes ({exc}); say 'slash {name} …' "
                "to run it anyway",
            )
    return Match(
        True,
        command=name,
        text=text,
        wake_word=wake,
        slash=slash,
        distance=edits,
    )


def _quoted(word: str) -> str:
    """A word as the command parser (``shlex``) reads it back unchanged."""
    try:
        if shlex.split(word) == [word]:
            return word
    except ValueError:
        pass
    if '"' not in word and "\\" not in word:
        return f'"{word}"'
    return shlex.quote(word)


def _is_wake(word: str) -> bool:
    return any(distance(key(word), w) <= 1 for w in WAKE_WORDS)


def _said(wake: bool, slash: bool) -> str:
    return " and ".join(p for p, on in (("the wake word", wake), ("'slash'", slash)) if on)


# ------------------------------------------------------------------ the route


class VoiceCommandAnswer(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What ``POST /api/rooms/{room}/voice-command`` answers (documented shape)."""

    accepted: bool
    transcript: str
    reason: str | None = None
    code: str | None = None
    command: str | None = None
    text: str | None = None
    reply: dict[str, Any] | None = None


def prompt_for(commands: Sequence[RoomCommand]) -> str:
    """The room's commands as the words the model should expect ("slash help, slash
    plugins list, …"): a small model then hears "slash help", not "sash hell"."""
    said = []
    for spec in commands:
        first = spec.args[0] if spec.args else None
        choice = f" {first.choices[0]}" if first is not None and first.choices else ""
        said.append(f"slash {spec.name}{choice}")
    wake = WAKE_WORDS[0].capitalize()
    return f"{wake} chat commands: " + ", ".join(said) + f", {wake} help."


def _command_provider(settings: SpeechSettings, commands: Sequence[RoomCommand]) -> SpeechToText:
    provider = provider_of(settings)
    limits = Limits(
        max_seconds=min(settings.max_seconds, MAX_COMMAND_SECONDS),
        max_bytes=min(settings.max_bytes, MAX_COMMAND_BYTES),
    )
    if isinstance(provider, OfflineWhisper | OpenAITranscriptions):
        provider.limits = limits
        provider.prompt = prompt_for(commands)
    return provider


def unrepeat(text: str) -> str:
    """A transcript that says the same thing twice ("slash roll, slash roll."), a small
    model's habit after a prompt, said once."""
    words = text.split()
    half, odd = divmod(len(words), 2)
    if half and not odd:
        first, second = words[:half], words[half:]
        if [key(w) for w in first] == [key(w) for w in second]:
            return " ".join(first).rstrip(",;") + (text[-1] if text[-1] in ".?!" else "")
    return text


async def _audio_of(request: Request[Any, Any, Any], limit: int) -> tuple[bytes, str] | str:
    """The recording and its name, or what is wrong with the request."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return "send the recording in a multipart field named 'file', or as the body"
        try:
            data = await upload.read(limit + 1)
        finally:
            await upload.close()
        return data, upload.filename or "command"
    return await request.body(), "command"


@post(
    "/api/rooms/{room:str}/voice-command",
    tags=["speech"],
    status_code=200,
    request_max_body_size=MAX_COMMAND_BYTES + FORM_OVERHEAD,
    exception_handlers={ClientException: _client_error},
)
async def voice_command(room: FromPath[str], request: Request[Any, Any, Any]) -> Response[Any]:
    """A spoken command, run in ``room`` as the caller, or rejected: the recording as a
    multipart ``file`` or as the body (any common audio format, at most 30 s). The answer
    is ``{"accepted": false, "transcript", "reason", "code"}`` (nothing ran) or
    ``{"accepted": true, "transcript", "command", "text", "reply"}``, ``reply`` being the
    frame a typed command gets (``command_result`` or ``error``)."""
    hub = hub_of(request)
    identity = request.user
    await hub.visible_room(room, identity)  # 404/403 as for the room's other routes
    settings: SpeechSettings = hub.plugin_settings(PLUGIN, room) or SpeechSettings()
    kind = "invalid_request_error"
    got = await _audio_of(request, min(settings.max_bytes, MAX_COMMAND_BYTES))
    if isinstance(got, str):
        return openai_error(400, got, kind)
    data, filename = got
    if not data:
        return openai_error(400, "the recording is empty", kind, "invalid_audio")
    if len(data) > min(settings.max_bytes, MAX_COMMAND_BYTES):
        return openai_error(413, "the recording is too large for a command", kind, "file_too_large")
    try:  # transcription is model use, like /v1/audio/transcriptions
        await hub.check_model(role_of(identity), identity.id)
    except ModelRefused as refused:
        if refused.retry_after is None:
            return openai_error(403, refused.detail, "permission_error", refused.code)
        wait = {"Retry-After": retry_header(refused.retry_after)}
        return openai_error(429, refused.detail, "rate_limit_error", "rate_limit_exceeded", wait)
    commands = hub.room_commands(room)
    provider = _command_provider(settings, commands)
    language = settings.language or None
    transcript = await transcribe_or_error(
        provider, data, filename, language, " (a spoken command is at most 30 s)"
    )
    if isinstance(transcript, Response):
        return transcript
    heard = unrepeat(transcript.text.strip())
    found = match(heard, commands)
    if found.accepted and found.command in NOT_BY_VOICE:
        name = found.command
        found = _reject(
            "not_by_voice",
            f"/{name} is not taken by voice (a secret said aloud is heard by everyone near "
            "you): type it",
        )
        heard = f"/{name} …"  # the words said are not repeated
    body = found.as_json(heard)
    if found.accepted:
        assert found.text is not None
        reply = await hub.run_command(identity, room, found.text)
        body["reply"] = msgspec.to_builtins(reply)
    return Response(body, headers=NO_STORE)
