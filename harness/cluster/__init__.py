"""Sweeps on a cluster's scheduler — batch scripts of a sharded sweep, submitted."""
