"""Seeded inputs, the float64 reference, agreement, timing and statistics."""
