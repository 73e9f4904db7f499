"""The web widget marks guests' messages with a "guest" badge (headless Chromium)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.test_widget_browser import browser, open_widget, post  # noqa: F401 (fixture)


async def test_the_widget_marks_guests_and_not_members(server, browser):  # noqa: F811
    visitor = await open_widget(browser, server.http_url, "Alice")  # the demo page: a guest
    await post(server.http_url, "alice", "I am the real Alice", name="Alice")
    await visitor.say("me too")
    await expect(visitor.messages).to_have_count(2)
    member, guest = visitor.messages.nth(0), visitor.messages.nth(1)
    await expect(member.locator(".lw-tag-guest")).to_have_count(0)
    await expect(guest.locator(".lw-tag-guest")).to_have_text("guest")
    await expect(guest.locator(".lw-author")).to_have_text("Alice (you)")
    assert visitor.errors == []
