"""The ready sweeps, shipped in the wheel as package data (`qkbench run NAME`)."""
