"""Realtime floor: the broker (in-process or Redis), presence, rooms with ordered replay,
connections and the shared state of streamed answers."""
