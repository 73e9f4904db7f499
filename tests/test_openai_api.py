"""The hub's agents behind an OpenAI-compatible API, driven by the real ``openai`` client."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Script
from tests.stream_support import upstream


def client_for(server, user: str = "alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.http_url}/v1", api_key=server.token(user), max_retries=0, timeout=10
    )


async def test_openai_client_lists_agents_and_streams_a_completion(server):
    client = client_for(server)
    models = await client.models.list()
    assert "assistant" in [m.id for m in models.data]

    stream = await client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "hello hub"}],
        stream=True,
    )
    pieces = []
    finish = None
    async for chunk in stream:
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
        finish = choice.finish_reason or finish
    assert "".join(pieces) == "[offline model] You said: hello hub"
    assert len(pieces) > 1 and finish == "stop"

    answer = await client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "once more"}]
    )
    assert answer.choices[0].message.content == "[offline model] You said: once more"
    await client.close()


async def test_responses_are_never_cached_and_need_a_token(server):
    async with server.http("alice") as http:
        resp = await http.get("/v1/models")
        assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    anonymous = openai.AsyncOpenAI(base_url=f"{server.http_url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await anonymous.models.list()
    await anonymous.close()


async def test_unknown_model_and_bad_requests_get_openai_style_errors(server):
    client = client_for(server)
    with pytest.raises(openai.NotFoundError) as found:
        await client.chat.completions.create(
            model="nobody", messages=[{"role": "user", "content": "hi"}]
        )
    assert "assistant" in str(found.value)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="assistant", messages=[{"role": "system", "content": "no question"}]
        )
    await client.close()
    async with server.http("alice") as http:
        resp = await http.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "x"}
        )
        assert resp.status_code == 400 and "error" in resp.json()
        resp = await http.post("/v1/chat/completions", json={"model": 1, "messages": "hi"})
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_a_failing_upstream_reaches_the_openai_client_as_an_error(make_server):
    async with FakeOpenAI(Script(drop_after=3)) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            client = client_for(server)
            stream = await client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            got = []
            with pytest.raises(openai.APIError):
                async for chunk in stream:
                    got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            assert "".join(got) == "".join(fake.script.tokens[:3])
            with pytest.raises(openai.APIStatusError) as failed:
                await client.chat.completions.create(
                    model="assistant", messages=[{"role": "user", "content": "hi"}]
                )
            assert failed.value.status_code == 502
            await client.close()


async def test_a_client_that_hangs_up_closes_the_upstream(make_server):
    script = Script(tokens=[f"w{i} " for i in range(400)], token_delay=0.02)
    async with FakeOpenAI(script) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            body = {
                "model": "assistant",
                "stream": True,
                "messages": [{"role": "user", "content": "go"}],
            }
            headers = {"Authorization": f"Bearer {server.token('alice')}"}
            async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
                async with http.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as resp:
                    assert resp.headers["cache-control"] == "no-store"
                    lines = 0
                    async for line in resp.aiter_lines():
                        lines += line.startswith("data: ")
                        if lines >= 5:
                            break
            request = await fake.wait_for_request()
            await asyncio.wait_for(request.ended.wait(), 5)
            assert request.client_closed and request.sent < 400


async def test_usage_is_reported_when_asked_and_temperature_reaches_the_model(make_server):
    async with FakeOpenAI(Script(tokens=["a ", "b ", "c"])) as fake:
        async with make_server(plugin_config=upstream(fake)) as server:
            client = client_for(server)
            stream = await client.chat.completions.create(
                model="assistant",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
                temperature=0.25,
            )
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "a b c"
            assert fake.chat_requests()[0].body["temperature"] == 0.25
            await client.close()


async def test_schema_documents_the_chat_completions_body(server):
    """The body is declared on the route (a msgspec Struct), so ``/schema`` describes it; a
    body that does not match still gets OpenAI's error shape."""
    async with server.http() as http:
        schema = (await http.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/v1/chat/completions"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"model", "messages"} <= set(body["required"])
    assert {"stream", "max_tokens", "temperature", "stream_options"} <= set(body["properties"])
    async with server.http("alice") as http:
        resp = await http.post("/v1/chat/completions", json={"model": "assistant"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and "messages" in error["message"]
