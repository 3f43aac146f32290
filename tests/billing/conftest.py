"""Billing reuses compute's fixtures: a small H100 fleet, a tenant (``acme``) and a worker."""

from compute.conftest import acme, driver, fleet, worker  # noqa: F401 - re-exported fixtures
