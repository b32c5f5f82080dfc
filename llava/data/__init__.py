"""The training data pipeline: one JSON/JSONL reader, record validation and SQ conversion, tokenization with label
masks, dataset, collator, packing, augmentation, the bad-sample policy and the inspect CLI."""
