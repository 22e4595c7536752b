"""Step 4 of the flow: what runs say together — compare, history, the CPU-vs-GPU crossover."""
