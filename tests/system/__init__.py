"""Tests of the whole system under its hardest conditions: the real RocketMQ broker, faults (kills, partitions,
failovers), scale, the benchmarks and the dashboard in a real browser."""
