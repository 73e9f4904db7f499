"""Slack adapter: bridges hub rooms to Slack channels (slack-bolt, Events API or Socket Mode)."""
