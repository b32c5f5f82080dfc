"""Generation for every program: the one batched engine, test-time self-questioning, the one set of model and
decoding flags (eval entry points, the CLI chat and the web demo all build on it)."""
