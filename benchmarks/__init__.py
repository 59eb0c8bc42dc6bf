"""Benchmarks: scripts that print a table and write JSON (``python -m benchmarks.<name>``); never timed tests."""
