"""Lydian's built-in plugins; each is registered through an entry point like any other."""
