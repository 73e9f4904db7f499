"""Ground floor: the wire protocol, settings, tokens and the errors every floor shares.

Imports nothing else from the hub."""
