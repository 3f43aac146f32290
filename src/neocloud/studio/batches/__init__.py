"""Batches (``/v1/batches``): an org's file of requests run offline at the batch price."""
