"""Backends: one module per library, each implementing the protocol in `qkbench.backends.base`."""
