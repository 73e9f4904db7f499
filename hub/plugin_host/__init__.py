"""Plugin-host floor: entry-point discovery, hook specifications, per-room enabling,
plugin settings, commands and dashboard pages."""
