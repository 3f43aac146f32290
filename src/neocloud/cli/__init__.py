"""The `neocloud` command line."""
