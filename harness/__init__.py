"""qkbench: a benchmarking harness for the attention-score kernel S = Q·Kᵀ."""

__version__ = "0.1.0"
