"""Step 2 of the flow: seeded inputs, the float64 reference, agreement, timing and statistics."""
