"""Benchmark entry points (`python -m llava.eval.<module>`), answer files (read + write), scorers and converters."""
