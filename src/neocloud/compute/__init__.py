"""Compute: instances, clusters, reservations, offerings, scheduler and reconciler."""
