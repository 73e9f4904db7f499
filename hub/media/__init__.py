"""Media floor: uploaded attachments (sniffed, stored off the event loop, swept)."""
