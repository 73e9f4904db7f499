"""The public plugin API (placeholder: the plugin SDK is written on another branch)."""
