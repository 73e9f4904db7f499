"""Discord adapter: bridges hub rooms to Discord channels (discord.py gateway and REST)."""
