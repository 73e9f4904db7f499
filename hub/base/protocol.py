"""The wire protocol: every WebSocket frame is a msgspec Struct, JSON on the wire.

Frames carry their kind in ``"type"``. Client frames form :data:`ClientFrame`, server
frames :data:`ServerFrame`; both are tagged unions that msgspec decodes in one pass.
``docs/protocol.md`` has an example of every frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

import msgspec

RoomId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@-]+$")]
ClientRef = Annotated[str, msgspec.Meta(max_length=100)]
INT64_MAX = 2**63 - 1
"""The largest integer a client may send anywhere (offsets are 64-bit in the database)."""
Offset = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a frame or a JSON request body; deeper
input is refused (``bad_request``, HTTP 400) before it is decoded."""


class ErrorCode(StrEnum):
    """Stable error codes; clients may branch on them, the ``detail`` text is for humans."""

    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FRAME = "invalid_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTH_FAILED = "auth_failed"
    TOKEN_EXPIRED = "token_expired"
    ALREADY_AUTHENTICATED = "already_authenticated"
    UNKNOWN_ROOM = "unknown_room"
    NOT_JOINED = "not_joined"
    FORBIDDEN = "forbidden"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_COMMAND = "unknown_command"
    USAGE = "usage"
    UNKNOWN_STREAM = "unknown_stream"
    PLUGIN_ERROR = "plugin_error"
    SLOW_CONSUMER = "slow_consumer"
    INTERNAL = "internal"
    BAD_REQUEST = "bad_request"  # a value out of range (integers beyond int64, ...), too deep JSON
    RATE_LIMITED = "rate_limited"  # over an abuse limit; ``retry_after`` says when to try again
    STORE_UNAVAILABLE = "store_unavailable"  # the database did not answer in time; resend later
    TOKEN_REVOKED = "token_revoked"  # the token was withdrawn by an admin


class CloseCode:
    """WebSocket close codes the hub uses (4000-4999 are application-defined)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the hub is shutting down; a ``reconnect`` frame comes first
    POLICY_VIOLATION = 1008  # the client kept hammering past a rate limit
    TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013  # over a connection limit (sockets per user); retry after back-off
    UNAUTHENTICATED = 4401  # no hello in time, or the token expired: get a fresh token first
    TOKEN_REVOKED = 4403  # the token was revoked: do not reconnect with it
    HEARTBEAT_TIMEOUT = 4408
    SLOW_CONSUMER = 4429


class Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=False, omit_defaults=True):
    """Base of every frame."""


# --------------------------------------------------------------------------- shared shapes


class UserRef(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    avatar: str | None = None
    guest: bool = False  # an anonymous guest (present only when true): not a member


class Attachment(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    media_type: str
    size: int
    url: str


class ChatMessage(msgspec.Struct):
    """A persisted room message. ``offset`` is gap-free and increasing within the room.

    Every field is always present, live or replayed, so clients see one shape.
    """

    room: str
    offset: int
    id: str
    user: UserRef
    text: str
    ts: float
    kind: str = "user"  # user | agent | system
    client_id: str | None = None
    reply_to: str | None = None
    attachments: list[Attachment] = []
    meta: dict[str, Any] = {}


class PresenceEntry(msgspec.Struct, omit_defaults=True):
    user: UserRef
    status: str = "online"


# --------------------------------------------------------------------------- client -> server


class Hello(Frame, tag="hello"):
    """First frame on a socket. ``token`` is a signed JWT; omitted means guest (if allowed)."""

    token: str | None = None
    name: Annotated[str, msgspec.Meta(max_length=80)] | None = None
    client: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class Join(Frame, tag="join"):
    """Join a room. With ``since`` the hub replays every message after that offset first."""

    room: RoomId
    since: Offset | None = None
    epoch: str | None = None
    id: ClientRef | None = None


class Leave(Frame, tag="leave"):
    room: RoomId
    id: ClientRef | None = None


class Send(Frame, tag="send"):
    """Post a message to a joined room. ``id`` makes the send idempotent and is acked."""

    room: RoomId
    text: str
    id: ClientRef | None = None
    reply_to: ClientRef | None = None
    attachments: list[str] = []


UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9_.@-]+$")]
"""A user id usable in a DM room id (``dm:<a>:<b>`` must itself be a valid room id)."""


class Direct(Frame, tag="direct"):
    """Send a direct message to a user; it lives in the two-member room ``dm:<a>:<b>``."""

    to: UserId
    text: str
    id: ClientRef | None = None


class Typing(Frame, tag="typing"):
    room: RoomId
    active: bool = True


class HistoryRequest(Frame, tag="history"):
    """Ask for a page of history: messages before ``before`` (newest page when omitted)."""

    room: RoomId
    before: Offset | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    id: ClientRef | None = None


class Cancel(Frame, tag="cancel"):
    """Stop a streamed answer in a room, for everyone."""

    room: RoomId
    stream_id: str
    id: ClientRef | None = None


class Command(Frame, tag="command"):
    """A chat-ops command such as ``/help``; the reply comes as ``command_result``."""

    room: RoomId
    text: str
    id: ClientRef | None = None


class Pong(Frame, tag="pong"):
    """Answer to ``ping``; any frame counts as a sign of life, this one does nothing else."""


ClientFrame = (
    Hello | Join | Leave | Send | Direct | Typing | HistoryRequest | Cancel | Command | Pong
)
CLIENT_FRAME_TYPES = frozenset(f.__struct_config__.tag for f in ClientFrame.__args__)


# --------------------------------------------------------------------------- server -> client


class Welcome(Frame, tag="welcome"):
    user: UserRef
    session: str
    roles: list[str]
    heartbeat_interval: float
    heartbeat_timeout: float
    typing_ttl: float
    max_frame_bytes: int


class Joined(Frame, tag="joined"):
    """Reply to ``join``: who is online, the latest offset, and whether replay succeeded."""

    room: str
    name: str
    offset: int
    epoch: str
    presence: list[PresenceEntry]
    recovered: bool
    replayed: int
    streams: list[StreamSnapshot] = []
    id: str | None = None


class Left(Frame, tag="left"):
    room: str
    id: str | None = None


class MessageFrame(Frame, tag="message"):
    message: ChatMessage


class PresenceFrame(Frame, tag="presence"):
    room: str
    user: UserRef
    status: str  # online | offline


class TypingFrame(Frame, tag="typing"):
    room: str
    user: UserRef
    active: bool


class StreamSnapshot(msgspec.Struct, omit_defaults=True):
    """A stream in progress, as told to a client joining mid-answer."""

    stream_id: str
    agent: UserRef
    text: str
    seq: int
    reply_to: str | None = None
    requested_by: str | None = None


class StreamStart(Frame, tag="stream_start"):
    """An agent starts answering; ``requested_by`` is the user id who asked (may cancel)."""

    room: str
    stream_id: str
    agent: UserRef
    reply_to: str | None = None
    requested_by: str | None = None


class StreamDelta(Frame, tag="stream_delta"):
    """``seq`` numbers the deltas of a stream; ``text`` is appended to what came before."""

    room: str
    stream_id: str
    seq: int
    text: str


class StreamEnd(Frame, tag="stream_end"):
    room: str
    stream_id: str
    message: ChatMessage
    cancelled: bool = False


class StreamError(Frame, tag="stream_error"):
    room: str
    stream_id: str
    code: str
    detail: str
    message: ChatMessage | None = None


class Ack(Frame, tag="ack"):
    id: str
    room: str | None = None
    offset: int | None = None
    duplicate: bool = False


class Error(Frame, tag="error"):
    """A refused frame. ``retry_after`` (seconds) comes with ``rate_limited`` and
    ``store_unavailable``: the same frame (same ``id``) may be sent again after it."""

    code: ErrorCode
    detail: str
    id: str | None = None
    room: str | None = None
    retry_after: float | None = None


class Reconnect(Frame, tag="reconnect"):
    """Sent just before the hub closes a socket it wants the client to reopen (shutdown:
    close 1001): reconnect after ``retry_after`` seconds (plus jitter), resume with ``since``."""

    reason: str
    retry_after: float = 0.0


class History(Frame, tag="history"):
    room: str
    messages: list[ChatMessage]
    has_more: bool
    id: str | None = None


class RoomEvent(Frame, tag="event"):
    """A room announcement: plugin enabled/disabled, member added, plugin failure, ..."""

    room: str
    event: str
    detail: str
    data: dict[str, Any] = {}


class CommandResult(Frame, tag="command_result"):
    room: str
    command: str
    text: str
    ok: bool = True
    id: str | None = None


class AttachmentEvent(Frame, tag="attachment"):
    """Progress of one attachment handler's job on an attachment (``docs/protocol.md``).

    ``status`` goes ``queued`` -> ``running`` -> ``done`` or ``failed``; ``cached`` marks a
    result found for the same bytes processed earlier (no job ran). ``error`` says why a job
    failed (the handler's error, a timeout, the memory limit, a crash).

    Derived files: ``parent`` names the attachment a job's file was found in (an image
    embedded in a PDF); ``review`` marks a reviewer's job (the original is not served until
    it ends); on ``done``, ``withheld`` is the reason the original is no longer served,
    ``replacement`` the id of the copy served instead, ``embedded`` how many files found
    inside it were kept (their jobs follow, with ``parent``)."""

    room: str
    attachment: str
    handler: str
    status: str  # queued | running | done | failed
    filename: str = ""
    summary: str = ""
    error: str = ""
    cached: bool = False
    parent: str = ""
    review: bool = False
    withheld: str = ""
    replacement: str = ""
    embedded: int = 0


class Ping(Frame, tag="ping"):
    """Heartbeat; the client answers with any frame (``pong`` if it has nothing to say)."""


ServerFrame = (
    Welcome
    | Joined
    | Left
    | MessageFrame
    | PresenceFrame
    | TypingFrame
    | StreamStart
    | StreamDelta
    | StreamEnd
    | StreamError
    | Ack
    | Error
    | History
    | RoomEvent
    | CommandResult
    | AttachmentEvent
    | Reconnect
    | Ping
)

_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    """A client frame that could not be decoded; carries the stable code to send back and,
    when the frame was readable JSON naming them, its ``room`` and ``id``."""

    def __init__(
        self, code: ErrorCode, detail: str, room: str | None = None, ref: str | None = None
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.room = room
        self.ref = ref


def decode_client(data: bytes | str) -> ClientFrame:
    """Decode one client frame, or raise :class:`FrameError` with the right code.

    Nesting deeper than :data:`MAX_JSON_DEPTH` is refused before decoding (``bad_request``);
    so is an integer outside its documented range (below 0, above a limit, above int64).
    """
    openers = data.count("[") + data.count("{") if isinstance(data, str) else MAX_JSON_DEPTH + 1
    if openers > MAX_JSON_DEPTH and json_too_deep(data, MAX_JSON_DEPTH):  # inline fast path
        raise FrameError(ErrorCode.BAD_REQUEST, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        peek = _peek(data)
        kind = peek.type if isinstance(peek.type, str) else None
        room, ref = _valid(peek.room, RoomId), _valid(peek.id, ClientRef)
        if kind is None:
            raise FrameError(
                ErrorCode.INVALID_FRAME, f"frame needs a string 'type': {exc}", room, ref
            ) from None
        if kind not in CLIENT_FRAME_TYPES:
            known = ", ".join(sorted(CLIENT_FRAME_TYPES))
            raise FrameError(
                ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind!r}; known: {known}", room, ref
            ) from None
        code = ErrorCode.BAD_REQUEST if _OUT_OF_RANGE.match(str(exc)) else ErrorCode.INVALID_FRAME
        raise FrameError(code, f"invalid {kind!r} frame: {exc}", room, ref) from None
    except msgspec.DecodeError as exc:
        raise FrameError(ErrorCode.BAD_JSON, f"malformed JSON: {exc}") from None
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH; kept as a backstop
        raise FrameError(ErrorCode.BAD_REQUEST, "JSON nested too deeply") from None


_OUT_OF_RANGE = re.compile(r"Expected `int(?: \| null)?` [<>]=? ")
"""msgspec's message for an integer outside its ``Meta(ge=..., le=...)`` bounds."""


class _Peek(msgspec.Struct):
    """What an undecodable frame named, to address the error frame."""

    type: Any = None
    room: Any = None
    id: Any = None


_peek_decoder = msgspec.json.Decoder(_Peek)


def _peek(data: bytes | str) -> _Peek:
    try:
        return _peek_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return _Peek()


def _valid(value: Any, kind: Any) -> str | None:
    """``value`` if it is a string satisfying ``kind``'s constraints, else None."""
    if not isinstance(value, str):
        return None
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError:
        return None


_STR_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BYTES_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STR_BRACKETS = re.compile(r"[\[\]{}]")
_BYTES_BRACKETS = re.compile(rb"[\[\]{}]")


def json_too_deep(data: bytes | str, limit: int) -> bool:
    """Whether JSON ``data`` nests arrays/objects deeper than ``limit``, brackets inside strings
    not counted. Cheap: when there are no more than ``limit`` opening brackets in all (every
    ordinary frame), nothing is scanned; else one regex pass drops the strings."""
    brackets: Iterator[re.Match[str]] | Iterator[re.Match[bytes]]
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= limit:
            return False
        brackets = _STR_BRACKETS.finditer(_STR_STRINGS.sub("", data))
        openers: tuple[Any, ...] = ("[", "{")
    else:
        if data.count(b"[") + data.count(b"{") <= limit:
            return False
        brackets = _BYTES_BRACKETS.finditer(_BYTES_STRINGS.sub(b"", data))
        openers = (b"[", b"{")
    depth = 0
    for match in brackets:
        if match.group() in openers:
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False


def encode(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def decode_server(data: bytes | str) -> ServerFrame:
    """Decode a server frame (for clients written in Python, tests and adapters)."""
    return _server_decoder.decode(data)
