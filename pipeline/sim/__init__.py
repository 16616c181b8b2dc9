"""The OpenAI-compatible simulator: an offline, seeded stand-in for remote LLM APIs."""
