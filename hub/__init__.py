"""Lydian hub: rooms, presence, history and streamed answers behind one WebSocket protocol."""

__version__ = "0.1.0"
