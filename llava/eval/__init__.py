"""Benchmark inference entry points, answer-file converters and scorers (`python -m llava.eval.<module>`)."""
