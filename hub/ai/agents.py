"""Agents: named participants that answer in rooms through an LLM provider, streaming.

Plugins register :class:`Agent` objects (``lydian_agents``) and providers
(``lydian_llm_providers``). :class:`Agents` (``hub.agents``) finds them through the ``items``
it is given (the plugin host's), picks the provider (the agent's own, else the first
configured one that is not the offline default, else the offline default), builds the
prompt from the room's recent history (``store``) within a token budget, checks and counts
the asker's model use (``limits``) and streams the answer into the room (``streams``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec

from hub.access.limits import Limits
from hub.ai.llm import (
    IMAGES_UNSUPPORTED,
    NO_PROVIDER,
    ChatTurn,
    CompletionRequest,
    LLMError,
    Provider,
    accepts_images,
    estimate_tokens,
    fit_to_budget,
)
from hub.ai.streams import Stream, StreamRegistry
from hub.base.protocol import ChatMessage, UserRef
from hub.store.store import Store

PluginItems = Callable[[str], list[tuple[str, Any]]]
"""``(plugin, object)`` pairs a list hook returned (``PluginHost.items``)."""

log = logging.getLogger(__name__)

OFFLINE = "offline"
"""Name of the provider used when nothing else is configured."""


class Agent(msgspec.Struct, kw_only=True):
    """An answering participant. Enabled per room under ``name`` (``/plugins enable NAME``)."""

    name: str
    display_name: str = ""
    description: str = ""
    system_prompt: str = "You are a helpful assistant taking part in a team chat room."
    provider: str | None = None
    model: str | None = None
    context_tokens: int = 2000
    history_messages: int = 30
    max_tokens: int | None = None
    default_enabled: bool = False

    @property
    def user(self) -> UserRef:
        return UserRef(id=f"agent:{self.name}", name=self.display_name or self.name)


class Agents:
    """The agents and providers of one hub, and the way an agent answers."""

    def __init__(
        self,
        *,
        store: Store,
        limits: Limits,
        streams: StreamRegistry,
        items: PluginItems,
        api: Any,
    ) -> None:
        """``items`` finds what plugins registered; ``api`` is what providers are handed (the
        hub as plugins see it, ``HubAPI``)."""
        self.store = store
        self.limits = limits
        self.streams = streams
        self.items = items
        self.api = api
        self._providers: dict[str, Provider] = {}

    # ------------------------------------------------------------ registry

    def add_provider(self, provider: Provider) -> None:
        self._providers[provider.name] = provider

    def agents(self) -> dict[str, Agent]:
        found: dict[str, Agent] = {}
        for _, item in self.items("lydian_agents"):
            if isinstance(item, Agent):
                found.setdefault(item.name, item)
        return found

    def agent(self, name: str) -> Agent | None:
        return self.agents().get(name)

    def providers(self) -> dict[str, Provider]:
        found: dict[str, Provider] = {}
        for plugin, item in self.items("lydian_llm_providers"):
            if isinstance(item, Provider):
                found.setdefault(item.name, item)
            else:
                log.warning("plugin %r: %r is not a Provider; ignored", plugin, item)
        return {**found, **self._providers}

    def provider_for(self, name: str | None = None) -> Provider:
        """The named provider, else the first configured one (the offline one last)."""
        providers = self.providers()
        if name:
            found = providers.get(name)
            if found is None:
                known = ", ".join(sorted(providers)) or "none"
                raise LLMError(NO_PROVIDER, f"no LLM provider {name!r}; installed: {known}")
            return found
        ready = [p for p in providers.values() if p.configured(self.api)]
        for provider in ready:
            if provider.name != OFFLINE:
                return provider
        if ready:
            return ready[0]
        raise LLMError(NO_PROVIDER, "no LLM provider is configured on this hub")

    # ------------------------------------------------------------ prompts

    async def context(
        self,
        agent: Agent,
        room: str,
        before: int | None,
        question: str,
        extra: Sequence[ChatTurn] = (),
    ) -> list[ChatTurn]:
        """System prompt, ``extra`` turns (e.g. document excerpts a plugin chose), the room's
        recent messages (within what is left of the token budget), the question."""
        history = []
        if agent.history_messages > 0:
            history = await self.store.messages_before(room, before, agent.history_messages)
        turns = [_turn(agent, message) for message in history if message.text.strip()]
        system = ChatTurn(role="system", content=agent.system_prompt)
        ask = ChatTurn(role="user", content=question)
        fixed = [system, *extra, ask]
        budget = agent.context_tokens - sum(estimate_tokens(t.content) for t in fixed)
        return [system, *extra, *fit_to_budget(turns, max(0, budget)), ask]

    # ------------------------------------------------------------ answering

    async def answer(
        self,
        agent: Agent | str,
        room: str,
        question: str,
        *,
        reply_to: ChatMessage | None = None,
        requested_by: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        limited: bool = True,
        context: Sequence[ChatTurn] = (),
    ) -> Stream:
        """Stream ``agent``'s answer to ``question`` into ``room``; returns once started.

        The answer counts towards ``requested_by``'s model use (``limits``): over it,
        :class:`hub.access.limits.ModelRefused` is raised before anything runs. ``limited=False``
        when the caller has checked already (``check_model``); tokens are counted anyway.
        ``context``: turns placed after the system prompt (see :meth:`context`)."""
        found = self.agent(agent) if isinstance(agent, str) else agent
        if found is None:
            raise LLMError(NO_PROVIDER, f"no agent {agent!r}")
        role = self.limits.role_for(requested_by) if requested_by else "user"
        if requested_by and limited:
            await self.limits.check_model(role, requested_by)
        before = reply_to.offset if reply_to else None
        turns = await self.context(found, room, before, question, context)
        request = CompletionRequest(
            messages=turns, model=model or found.model, max_tokens=found.max_tokens
        )
        pieces = self._pieces(request, provider or found.provider)
        if requested_by:
            prompt = sum(estimate_tokens(t.content) for t in turns)
            pieces = self._counted(pieces, role, requested_by, prompt)
        return await self.streams.launch(
            room,
            found.user,
            pieces,
            reply_to=reply_to.id if reply_to else None,
            requested_by=requested_by,
        )

    async def _counted(
        self, pieces: AsyncIterator[str], role: str, user_id: str, prompt_tokens: int
    ) -> AsyncIterator[str]:
        """Pass ``pieces`` on; then charge the prompt and each piece (a token) to the user."""
        tokens = prompt_tokens
        try:
            async for piece in pieces:
                tokens += 1
                yield piece
        finally:
            close: Any = getattr(pieces, "aclose", None)
            if close is not None:
                await close()
            try:
                await self.limits.charge_model_tokens(role, user_id, tokens)
            except Exception:
                log.exception("counting %d model tokens of %s failed", tokens, user_id)

    def complete(
        self,
        agent: Agent,
        turns: list[ChatTurn],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """The agent's answer to a whole conversation, piece by piece (the ``/v1`` API)."""
        messages = turns
        if not any(t.role == "system" for t in turns):
            messages = [ChatTurn(role="system", content=agent.system_prompt), *turns]
        request = CompletionRequest(
            messages=messages,
            model=agent.model,
            max_tokens=max_tokens or agent.max_tokens,
            temperature=temperature,
        )
        return self._pieces(request, agent.provider)

    def accepts_images(self, agent: Agent) -> bool:
        """Whether ``agent``'s provider passes image parts to its model (false without one)."""
        try:
            provider = self.provider_for(agent.provider)
        except LLMError:
            return False
        return accepts_images(provider, agent.model, self.api)

    async def _pieces(self, request: CompletionRequest, provider: str | None) -> AsyncIterator[str]:
        """Resolve the provider lazily, so that a missing one ends the stream with an error."""
        chosen = self.provider_for(provider)
        if any(t.images for t in request.messages) and not accepts_images(
            chosen, request.model, self.api
        ):  # never dropped on the way: the caller reads them offline or says why not
            raise LLMError(
                IMAGES_UNSUPPORTED, f"provider {chosen.name!r} takes no images for this model"
            )
        source = chosen.stream(request, self.api)
        try:
            async for piece in source:
                yield piece
        finally:
            close: Any = getattr(source, "aclose", None)
            if close is not None:
                await close()


def _turn(agent: Agent, message: ChatMessage) -> ChatTurn:
    if message.user.id == agent.user.id:
        return ChatTurn(role="assistant", content=message.text)
    return ChatTurn(role="user", content=f"{message.user.name}: {message.text}")
