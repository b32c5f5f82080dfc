"""The one inference engine: conversations + images -> batched, left-padded, KV-cached generation (and streaming)."""

from __future__ import annotations

import dataclasses
import logging
import platform
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import GenerationConfig, StoppingCriteriaList, TextIteratorStreamer

from llava.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
)
from llava.conversation import Conversation, get_template
from llava.data.tokenization import tokenizer_image_token
from llava.mm_utils import KeywordsStoppingCriteria, expand_image_tokens, pad_sequences, process_images

logger = logging.getLogger(__name__)

# The LLaMA-family default when a checkpoint does not name its template (the reference evaluated with v1,
# docs/reference.md#d10-evaluation-template).
DEFAULT_CONV_MODE = "v1"


@dataclasses.dataclass
class GenerationSettings:
    """Decoding settings; greedy iff `temperature == 0`. Unset top_p / top_k mean "off", never the LM's defaults."""

    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    num_beams: int = 1
    max_new_tokens: int = 128
    repetition_penalty: float | None = None
    seed: int | None = None  # sampling only: torch is seeded per batch from (seed, the batch's request ids)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ValueError("max_new_tokens and num_beams must be >= 1")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def replace(self, **changes: Any) -> GenerationSettings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "do_sample": self.do_sample}

    def generation_config(self, *, pad_token_id: int, eos_token_id: int | list[int] | None,
                          bos_token_id: int | None) -> GenerationConfig:
        """A complete GenerationConfig: every sampling knob is set, so the LM's generation_config.json
        (vicuna's ships temperature 0.9 / top_p 0.6) cannot change the decoding behind the caller's back."""
        sampling: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}  # neutral: keeps the LM's values out
        if self.do_sample:
            sampling = {"temperature": float(self.temperature),
                        "top_p": float(self.top_p if self.top_p is not None else 1.0), "top_k": int(self.top_k or 0)}
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, num_beams=self.num_beams,
            repetition_penalty=float(self.repetition_penalty or 1.0), pad_token_id=pad_token_id,
            eos_token_id=eos_token_id, bos_token_id=bos_token_id, use_cache=True, **sampling,
        )


@dataclasses.dataclass
class Request:
    """One generation: a conversation ending in a generation cue, and one image per `<image>` in it."""

    conversation: Conversation
    images: list[Image.Image] | None = None
    id: Any = None


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers (recorded next to every answers file)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("llava", "torch", "transformers", "tokenizers", "peft", "accelerate", "pillow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def default_conv_mode(config: Any) -> str:
    """The template a checkpoint names (`conv_mode` / `version` in its config), else the LLaMA-family `v1`."""
    from llava.conversation import conv_templates

    for field in ("conv_mode", "version"):
        name = getattr(config, field, None)
        if isinstance(name, str) and name in conv_templates:
            return name
    model_type = str(getattr(config, "model_type", "llama"))
    return "mpt" if model_type == "mpt" else DEFAULT_CONV_MODE


class InferenceEngine:
    """Prompt building, image preprocessing and batched generation for every entry point, the CLI and the demo."""

    def __init__(
        self,
        tokenizer,
        model,
        image_processor,
        conv_mode: str | None = None,
        image_aspect_ratio: str | None = None,
        device: str | torch.device | None = None,
        context_len: int | None = None,
        source: dict[str, Any] | None = None,
    ):
        self.tokenizer = tokenizer
        self.model = model
        self.image_processor = image_processor
        self.conv_mode = conv_mode or default_conv_mode(model.config)
        get_template(self.conv_mode)  # unknown names fail here, with the list of valid ones
        # Preprocess exactly as trained unless told otherwise (the reference mixed pad and crop,
        # docs/reference.md#d11-image-preprocessing-at-evaluation).
        self.image_aspect_ratio = image_aspect_ratio or getattr(model.config, "image_aspect_ratio", None) or "square"
        self.device = torch.device(device) if device is not None else model.device
        self.context_len = context_len
        self.source = dict(source or {})
        self.pad_token_id = next(
            t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id, 0) if t is not None
        )
        self._warned_long = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        model_base: str | Path | None = None,
        lora_pretrain: str | Path | None = None,
        load_4bit: bool = False,
        load_8bit: bool = False,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        conv_mode: str | None = None,
        image_aspect_ratio: str | None = None,
        attn_implementation: str = "auto",
        vision_tower: str | Path | None = None,
    ) -> InferenceEngine:
        """Load any supported checkpoint format with `load_pretrained_model` and wrap it; `auto` attention is
        FlashAttention-2 where it runs on `device`, else SDPA (one line on stderr says which and why)."""
        from llava.model.attention import announce, resolve_attention
        from llava.model.builder import load_pretrained_model

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        attn_implementation, why = resolve_attention(attn_implementation, device)
        announce(attn_implementation, why)
        tokenizer, model, processor, context_len = load_pretrained_model(
            model_path, model_base, load_4bit=load_4bit, load_8bit=load_8bit, device=device, dtype=dtype,
            attn_implementation=attn_implementation, lora_pretrain=lora_pretrain, vision_tower=vision_tower,
        )
        source = {
            "model_path": str(model_path),
            "model_base": str(model_base) if model_base else None,
            "lora_pretrain": str(lora_pretrain) if lora_pretrain else None,
            **({"vision_tower": str(vision_tower)} if vision_tower else {}),
            "load_4bit": load_4bit,
            "load_8bit": load_8bit,
        }
        return cls(tokenizer, model, processor, conv_mode=conv_mode, image_aspect_ratio=image_aspect_ratio,
                   device=device, context_len=context_len, source=source)

    def info(self) -> dict[str, Any]:
        """What produced the answers: checkpoint, template, preprocessing, model shape and package versions."""
        config = self.model.config
        return {
            **self.source,
            "conv_mode": self.conv_mode,
            "system_prompt": get_template(self.conv_mode).system,
            "image_aspect_ratio": self.image_aspect_ratio,
            "num_image_tokens": self.model.num_image_tokens,
            "mm_projector_type": getattr(config, "mm_projector_type", None),
            "mm_use_im_start_end": bool(getattr(config, "mm_use_im_start_end", False)),
            "model_type": getattr(config, "model_type", None),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": str(self.device),
            "context_len": self.context_len,
            "versions": package_versions(),
        }

    # ------------------------------------------------------------------ prompts
    def image_placeholder(self) -> str:
        """The text that stands for one image in a user turn (`<image>`, wrapped when mm_use_im_start_end)."""
        if getattr(self.model.config, "mm_use_im_start_end", False):
            return DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
        return DEFAULT_IMAGE_TOKEN

    def with_images(self, question: str, n_images: int = 1) -> str:
        """`<image>\\n` per image before the question; a question that already places `<image>` is kept as is."""
        placeholder = self.image_placeholder()
        if DEFAULT_IMAGE_TOKEN in question:
            if placeholder != DEFAULT_IMAGE_TOKEN and placeholder not in question:
                question = question.replace(DEFAULT_IMAGE_TOKEN, placeholder)
            return question
        return (placeholder + "\n") * n_images + question

    def build_conversation(self, question: str, image: bool | int = True, conv_mode: str | None = None) -> Conversation:
        """A fresh one-turn conversation ending in the assistant cue; `image` is a flag or an image count."""
        conv = get_template(conv_mode or self.conv_mode)
        conv.reset_messages()
        n_images = int(image)
        text = self.with_images(question, n_images) if n_images else question
        conv.append_message(conv.roles[0], text)
        conv.append_message(conv.roles[1], None)
        return conv

    def request(self, question: str, images: Sequence[Image.Image] | Image.Image | None = None,
                conv_mode: str | None = None, id: Any = None) -> Request:
        """Request for a one-turn question about zero, one or several images."""
        if isinstance(images, Image.Image):
            images = [images]
        images = list(images or [])
        n_in_text = question.count(DEFAULT_IMAGE_TOKEN)
        conv = self.build_conversation(question, n_in_text or len(images), conv_mode)
        return Request(conv, images or None, id)

    # ------------------------------------------------------------------ tensors
    def tokenize(self, request: Request) -> list[int]:
        """Prompt ids with each image expanded to a run of `num_image_tokens` sentinels."""
        prompt = request.conversation.get_prompt()
        ids = tokenizer_image_token(prompt, self.tokenizer)
        n_images = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
        given = len(request.images or [])
        if n_images != given:
            raise ValueError(f"request {request.id!r}: the prompt has {n_images} image placeholder(s) but {given} "
                             "image(s) were given")
        expanded, _ = expand_image_tokens(ids, None, self.model.num_image_tokens)
        return expanded

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor | None:
        if not images:
            return None
        pixels = process_images(images, self.image_processor, self.image_aspect_ratio)
        return pixels.to(device=self.device, dtype=self.model.dtype)

    def _inputs(self, requests: Sequence[Request]) -> dict[str, Any]:
        rows = [self.tokenize(r) for r in requests]
        longest = max(len(r) for r in rows)
        if self.context_len and not self._warned_long and longest > self.context_len:
            logger.warning("a prompt of %d tokens exceeds the model's context length %d", longest, self.context_len)
            self._warned_long = True
        images = [img for r in requests for img in (r.images or [])]
        return {
            "input_ids": pad_sequences(rows, self.pad_token_id, "left").to(self.device),
            "attention_mask": pad_sequences([[1] * len(r) for r in rows], 0, "left").to(self.device),
            "pixel_values": self.pixel_values(images),
        }

    def _generate_kwargs(self, requests: Sequence[Request], settings: GenerationSettings) -> dict[str, Any]:
        gen_config = getattr(getattr(self.model, "language_model", None), "generation_config", None)
        eos = getattr(gen_config, "eos_token_id", None)
        eos_ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        eos_ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        stops = sorted({r.conversation.stop_str for r in requests if r.conversation.stop_str})
        return {
            "generation_config": settings.generation_config(
                pad_token_id=self.pad_token_id, eos_token_id=sorted(eos_ids) or None,
                bos_token_id=self.tokenizer.bos_token_id,
            ),
            "stopping_criteria": StoppingCriteriaList([KeywordsStoppingCriteria(stops, self.tokenizer)]),
        }

    def _seed(self, requests: Sequence[Request], settings: GenerationSettings) -> None:
        if settings.do_sample and settings.seed is not None:
            key = repr([r.id for r in requests]).encode()
            torch.manual_seed((settings.seed * 1_000_003 + zlib.crc32(key)) % (2**63))

    def postprocess(self, text: str, conversation: Conversation) -> str:
        """Cut at the template's stop string (when the model wrote it as text) and strip."""
        stop = conversation.stop_str
        if stop and stop in text:
            text = text[: text.index(stop)]
        return text.strip()

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate_batch(self, requests: Sequence[Request], settings: GenerationSettings) -> list[str]:
        """One `generate` call for all `requests` (left padding, attention mask, KV cache)."""
        if not requests:
            return []
        inputs = self._inputs(requests)
        self._seed(requests, settings)
        out = self.model.generate(**inputs, **self._generate_kwargs(requests, settings))
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [self.postprocess(t, r.conversation) for t, r in zip(texts, requests)]

    def generate(self, requests: Sequence[Request], settings: GenerationSettings | None = None,
                 batch_size: int = 8, progress: bool = False) -> list[str]:
        """Answers for `requests`, in order, `batch_size` at a time; greedy results do not depend on the batch size."""
        settings = settings or GenerationSettings()
        out: list[str] = []
        for batch in self.iter_batches(requests, settings, batch_size, progress):
            out.extend(batch)
        return out

    def iter_batches(self, requests: Sequence[Request], settings: GenerationSettings, batch_size: int = 8,
                     progress: bool = False) -> Iterator[list[str]]:
        """`generate`, yielding each batch's answers as soon as it is done (entry points write them at once)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        starts = range(0, len(requests), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, total=len(starts), unit="batch")
        for start in starts:
            yield self.generate_batch(requests[start : start + batch_size], settings)

    def stream(self, request: Request, settings: GenerationSettings | None = None,
               timeout: float | None = None) -> Iterator[str]:
        """Yield the answer as text pieces while it is generated; the pieces join to `generate([request])[0]`
        up to surrounding whitespace. The stop string is never yielded."""
        settings = settings or GenerationSettings()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
        inputs = self._inputs([request])
        kwargs = {**inputs, **self._generate_kwargs([request], settings), "streamer": streamer}
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self._seed([request], settings)
                    self.model.generate(**kwargs)
            except BaseException as err:  # re-raised in the caller's thread below
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        stop = request.conversation.stop_str
        text, sent, stopped = "", 0, False
        for piece in streamer:
            if stopped:
                continue  # drain, so that the worker can finish
            text += piece
            if stop and stop in text:
                text, stopped = text[: text.index(stop)], True
                hold = 0
            else:  # hold back a tail that may be the start of the stop string
                hold = next((n for n in range(min(len(stop or ""), len(text)), 0, -1) if stop.startswith(text[-n:])), 0)
            if len(text) - hold > sent:
                yield text[sent : len(text) - hold]
                sent = len(text) - hold
        thread.join()
        if failure:
            raise failure[0]
        if len(text) > sent:
            yield text[sent:]
