"""neocloud: turn a fleet of GPU servers into a GPU cloud."""

__version__ = "0.1.0"
