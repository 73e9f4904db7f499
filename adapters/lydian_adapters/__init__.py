"""Lydian's platform adapters (web widget, Slack, Discord) and the bridge they share."""
