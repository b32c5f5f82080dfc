"""SQ-LLaVA: training, evaluation and serving of self-questioning vision-language assistants."""

__version__ = "0.1.0"
