"""Training: arguments, stage policy, data pipeline (dataset, collator, sampler), trainer and the train.py entry point."""
