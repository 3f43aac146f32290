"""AI Studio: an OpenAI-compatible inference API under ``/v1`` (catalog, engines, metering)."""
