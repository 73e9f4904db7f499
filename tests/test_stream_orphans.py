"""A stream whose replica died is ended by the survivors, and its partial stored once."""

from __future__ import annotations

from hub.base.protocol import StreamDelta, StreamSnapshot, StreamStart, UserRef, encode
from tests.support import eventually

AGENT = UserRef(id="assistant", name="Assistant")


async def test_an_orphaned_stream_is_ended_and_stored_once_even_if_reaped_twice(
    make_server, monkeypatch
):
    monkeypatch.setattr("hub.ai.streams.ORPHAN_GRACE", 0.0)
    async with make_server(stream_first_token_timeout=0.3, stream_idle_timeout=0.3) as server:
        await server.create_room("ops")
        alice = await server.client("alice")
        await alice.join("ops")
        rooms = server.hub.rooms
        # frames of a stream run by a replica that is gone: nobody here owns it
        await rooms.publish_event(
            "ops", encode(StreamStart(room="ops", stream_id="ghost", agent=AGENT))
        )
        await rooms.publish_event(
            "ops", encode(StreamDelta(room="ops", stream_id="ghost", seq=1, text="half an answer"))
        )
        await alice.expect("stream_start")
        await alice.expect("stream_delta")
        ended = await alice.expect("stream_error", timeout=5, skip=("ping", "message"))
        assert ended["code"] == "replica_lost"
        assert ended["message"]["text"] == "half an answer"
        assert ended["message"]["meta"]["interrupted"] is True

        # another replica that saw the same stream reaps it too: nothing new is stored
        snap = StreamSnapshot(stream_id="ghost", agent=AGENT, text="half an answer", seq=1)
        await server.hub.streams._end_orphan("ops", snap)
        history = await server.hub.store.messages_after("ops", 0, 10)
        assert [(m.text, m.kind) for m in history] == [("half an answer", "agent")]


async def test_a_silent_stream_owned_here_is_left_to_its_owner(make_server, monkeypatch):
    monkeypatch.setattr("hub.ai.streams.ORPHAN_GRACE", 0.0)
    async with make_server(stream_first_token_timeout=0.05, stream_idle_timeout=0.05) as server:
        await server.create_room("ops")
        alice = await server.client("alice")
        await alice.join("ops")
        stream = await server.hub.streams.start("ops", AGENT)  # announced, never run
        await alice.expect("stream_start")
        live = server.hub.rooms.live["ops"]
        await eventually(lambda: live.streams.silent(0.05, 0.05), what="the stream to go silent")
        assert [s.stream_id for s in live.streams.silent(0.05, 0.05)] == [stream.id]
        assert await server.hub.streams.reap_orphans() == 0
        assert await server.hub.store.messages_after("ops", 0, 10) == []
