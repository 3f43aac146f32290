"""Trace-driven simulation through the real placement code (DESIGN §2)."""
