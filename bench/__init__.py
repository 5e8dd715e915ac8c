"""Benchmarks: load generators that print figures. Never timed assertions."""
