"""AI floor: LLM requests and providers, agents, and streamed answers."""
