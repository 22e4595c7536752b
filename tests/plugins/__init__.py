"""Purpose-built plugin backends for the tests: one well-behaved, the rest wrong on purpose."""
