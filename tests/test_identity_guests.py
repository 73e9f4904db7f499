"""Guests cannot pass for members: marked as guests, unique names in a room, clean names;
plugin details that reveal configuration are for admins only."""

from __future__ import annotations

from tests.plugin_support import frame_where
from tests.support import Client


async def _guest(server, name: str | None) -> Client:
    client = await Client.connect(server.ws_url)
    await client.send({"type": "hello", "name": name} if name is not None else {"type": "hello"})
    client.welcome = await client.expect("welcome")
    return client


async def _said_as(client: Client, room: str, ref: str) -> dict:
    """Send a message and return its author as the room sees it."""
    await client.say(room, f"hello from {ref}", ref)
    frame = await frame_where(client, _message(ref))
    return frame["message"]["user"]


def _message(ref: str):
    return lambda f: f["type"] == "message" and f["message"]["client_id"] == ref


async def test_guests_cannot_take_a_members_name_and_are_unique_in_a_room(server):
    await server.create_room("lobby")
    alice = await server.client("alice", name="Alice")
    await alice.join("lobby")
    impostor = await _guest(server, "Alice")
    assert impostor.welcome["user"]["guest"] is True
    await impostor.join("lobby")
    assert await _said_as(impostor, "lobby", "i1") == {
        "id": impostor.welcome["user"]["id"],
        "name": "Alice (guest)",
        "guest": True,
    }
    second = await _guest(server, "alice")  # case does not make a new name
    await second.join("lobby")
    assert (await _said_as(second, "lobby", "s1"))["name"] == "alice (guest 2)"
    # members are not marked; what others receive (live and in history) carries the flag
    assert "guest" not in await _said_as(alice, "lobby", "a1")
    seen = await frame_where(alice, _message("i1"))
    assert seen["message"]["user"]["guest"] is True
    async with server.http("alice") as http:
        page = (await http.get("/api/rooms/lobby/messages")).json()["messages"]
    flags = {m["client_id"]: m["user"].get("guest", False) for m in page}
    assert flags == {"i1": True, "s1": True, "a1": False}
    # a member's name stays taken while they are offline (a room member); so do the
    # names of guests present
    await alice.close()
    late = await _guest(server, "ALICE")
    await late.join("lobby")
    assert (await _said_as(late, "lobby", "l1"))["name"] == "ALICE (guest 3)"
    for client in (impostor, second, late):
        await client.close()


async def test_guests_cannot_take_a_known_users_name_anywhere(server):
    bob = await server.client("bob", name="Bob")  # known from now on, in no room
    await bob.close()
    guest = await _guest(server, "BOB")
    assert guest.welcome["user"]["name"] == "BOB (guest)"
    async with server.http() as anon:
        resp = await anon.post("/api/guest-token", params={"name": "bob"})
    assert resp.json()["user"]["name"] == "bob (guest)"
    await guest.close()


async def test_guest_names_are_never_blank_or_control_characters(server):
    await server.create_room("lobby")
    blank = await _guest(server, " \u200b\u0007\t ")
    assert blank.welcome["user"]["name"].startswith("Guest ")
    sneaky = await _guest(server, "Bob\u202e\u0000  \nthe\u200d builder")
    assert sneaky.welcome["user"]["name"] == "Bob the builder"
    async with server.http() as anon:
        resp = await anon.post("/api/guest-token", params={"name": "\u2066\u0001"})
        assert resp.status_code == 201
        user = resp.json()["user"]
    assert user["name"].startswith("Guest ") and user["guest"] is True
    await blank.close()
    await sneaky.close()


async def test_plugin_details_are_for_admins_only(server):
    async with server.http("bob") as http:
        listing = (await http.get("/api/plugins")).json()
    echo = next(p for p in listing if p["name"] == "echo")
    assert set(echo) <= {"name", "description", "commands", "agents"}
    assert echo["commands"] == ["echo", "roll"]
    async with server.http("root", admin=True) as http:
        full = {p["name"]: p for p in (await http.get("/api/plugins")).json()}
    assert full["echo"]["settings"] == {"max_dice": 100, "max_sides": 1000}
    assert full["echo"]["source"] and "hooks" in full["echo"]
