"""Inference engines behind the catalog; each implements ``TextEngine`` or ``EmbeddingEngine``."""
