"""Training: arguments, stage policy (what trains, with which LR, what is saved), the modality sampler, the trainer
and the `python -m llava.train.train` entry point; the data pipeline it feeds on lives in `llava.data`."""
