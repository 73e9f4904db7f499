async def test_join_send_ack(server):
    await server.create_room("lobby")
    alice = await server.client("alice")
    joined = await alice.join("lobby")
    assert joined["offset"] == 0
    ack = await alice.say("lobby", "hi", "m1")
    assert ack == {"type": "ack", "id": "m1", "room": "lobby", "offset": 1}
    msg = await alice.expect("message")
    assert msg["message"]["text"] == "hi"
