"""LLaVA-format training data: record validation, SQ conversion, tokenization with label masks, inspection."""
