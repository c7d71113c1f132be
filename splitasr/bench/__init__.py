"""Benchmarks: each writes results.json, a markdown table and a PNG plot to a folder."""
