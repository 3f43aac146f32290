"""Managed PostgreSQL: tenants' databases run as real PostgreSQL servers on the platform's
``service`` nodes, through the nodes' drivers (see docs/databases.md)."""
