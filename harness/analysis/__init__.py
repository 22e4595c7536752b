"""What runs say together — compare, history, the CPU-vs-GPU crossover."""
