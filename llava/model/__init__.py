"""The SQ-LLaVA model: vision tower + projector + causal LM, and its checkpoint formats."""

from llava.model.llava_llama import LlavaLlamaForCausalLM

__all__ = ["LlavaLlamaForCausalLM"]
