"""The one-command CPU quickstart: tiny foundation models trained locally, evaluation and the report."""
