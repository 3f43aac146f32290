"""Storage: the platform's storage pools and tenants' shared filesystems (GlusterFS or local)."""
