"""Benchmark measurements behind jobs/bench.py: the machine (matmul FLOP/s, memory GB/s), the bounds it allows, and the timed workloads."""
