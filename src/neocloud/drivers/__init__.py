"""Provisioning drivers: the ``Driver`` protocol and its adapters (``sim``, …)."""
