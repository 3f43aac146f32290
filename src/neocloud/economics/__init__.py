"""Operator economics: P&L, debt cover and stress (pure; no I/O). Filled by its own issue."""
