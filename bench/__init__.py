"""Benchmarks that print figures (`python bench/e2e.py`); see BENCHMARKS.md."""
