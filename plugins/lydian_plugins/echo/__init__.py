"""Built-in ``echo`` plugin: ``/echo TEXT`` repeats text, ``/roll [NdM]`` rolls dice.

Small on purpose: it shows a command with a greedy argument, one with a parsed argument
and a clear usage error, and a setting a room may override (``max_dice``).
"""

from __future__ import annotations

import random
from typing import Annotated, Any

import msgspec

from hub.sdk import Arg, CommandContext, CommandSpec, PerRoom, UsageError, hookimpl


class EchoSettings(msgspec.Struct):
    """``[plugins.echo]``: ``max_dice`` caps N in ``/roll NdM`` (per room overridable)."""

    max_dice: Annotated[int, msgspec.Meta(ge=1, le=1000), PerRoom] = 100
    max_sides: Annotated[int, msgspec.Meta(ge=2)] = 1000


def echo(ctx: CommandContext, args: dict[str, Any]) -> str:
    return args["text"]


def roll(ctx: CommandContext, args: dict[str, Any]) -> str:
    settings: EchoSettings = ctx.settings() or EchoSettings()
    spec = (args.get("dice") or "1d6").lower()
    count, sep, sides = spec.partition("d")
    if not sep or not sides.isdigit() or (count and not count.isdigit()):
        raise UsageError(f"dice look like 2d6, not {spec!r}; usage: /roll [NdM]")
    n, m = int(count or 1), int(sides)
    if not 1 <= n <= settings.max_dice or not 2 <= m <= settings.max_sides:
        raise UsageError(
            f"between 1 and {settings.max_dice} dice of 2 to {settings.max_sides} sides"
        )
    rolls = [random.randint(1, m) for _ in range(n)]
    shown = " + ".join(map(str, rolls)) if n > 1 else ""
    return f"{ctx.user.name} rolls {n}d{m}: {shown + ' = ' if shown else ''}{sum(rolls)}"


@hookimpl
def lydian_plugin_settings() -> type[msgspec.Struct]:
    return EchoSettings


@hookimpl
def lydian_commands() -> list[CommandSpec]:
    return [
        CommandSpec(
            name="echo",
            help="repeat the text",
            handler=echo,
            args=[Arg("text", greedy=True, help="what to repeat")],
        ),
        CommandSpec(
            name="roll",
            help="roll dice, e.g. /roll 2d6",
            handler=roll,
            args=[Arg("dice", required=False, help="NdM: N dice with M sides (default 1d6)")],
        ),
    ]
