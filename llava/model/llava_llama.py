"""The vision-language model: a CLIP tower, a projector and any causal LM, composed (not subclassed).

Image positions are marked in `input_ids` by IMAGE_TOKEN_INDEX (-200). A sentinel may be a single token (the
reference format) or already a run of `num_image_tokens` sentinels; single sentinels are expanded here, so
sequence positions always equal embedding positions and left or right padding both work. Features are written
into the embeddings with one vectorised `masked_scatter`; the LM is a stock `AutoModelForCausalLM`, so its
`generate()` (KV cache, batching, streaming) is used as is, through `inputs_embeds`.

Training fast paths (`llava.model.loss`, `llava.data.packing`): with labels in training mode the loss is a chunked
cross-entropy over the LM's hidden states (no [B, T, V] logits; `chunked_loss_size`, 0 = off, `return_logits=True`
for the plain path), and packed rows (`position_ids` restarting at 0, no attention mask) reach the LM unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.config import vision_config_of
from llava.model.loss import DEFAULT_CHUNK_SIZE, chunked_causal_lm_loss, output_layer
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_projector.builder import build_vision_projector


class ImageTokenMismatchError(ValueError):
    """The number of image positions in `input_ids` does not match the images given."""


# Keyword arguments the chunked-loss path handles itself; any other LM kwarg (output_attentions, logits_to_keep...)
# selects the plain path, which returns everything the LM returns.
_CHUNKED_LOSS_KWARGS = frozenset({"num_items_in_batch", "use_cache", "shift_labels"})


class LlavaLlamaForCausalLM(nn.Module):
    """`language_model` + `vision_tower` + `mm_projector`; the reference class name, a composed design."""

    def __init__(
        self,
        config: PretrainedConfig,
        language_model: nn.Module | None = None,
        vision_tower: CLIPVisionTower | None = None,
        attn_implementation: str | None = "sdpa",
        chunked_loss_size: int | None = None,
    ):
        super().__init__()
        self.config = config
        # Rows per chunk of the training loss; None: `config.chunked_loss_size`, else DEFAULT_CHUNK_SIZE; 0: off.
        self.chunked_loss_size = chunked_loss_size
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
        self.language_model = language_model
        if vision_tower is None:
            vision_config = vision_config_of(config)
            if vision_config is None:
                raise ValueError("config has no mm_vision_config: pass a loaded vision_tower")
            vision_tower = CLIPVisionTower(
                vision_config, config.mm_vision_select_layer, config.mm_vision_select_feature,
                name_or_path=getattr(config, "mm_vision_tower", None),
            )
        self.vision_tower = vision_tower
        config.mm_hidden_size = self._tower().hidden_size
        self.mm_projector = build_vision_projector(config)
        # Training sets it under ZeRO-3 (every rank must run the tower in every step or parameter gathering hangs) and
        # when nothing in the LM trains (a text-only batch's loss would have no grad_fn).
        self.run_vision_on_text_only_batches = False

    # ------------------------------------------------------------------ structure
    def _tower(self) -> CLIPVisionTower:
        tower = self.vision_tower
        # A ViT-LoRA PeftModel wraps the tower; reach the CLIPVisionTower inside.
        while not isinstance(tower, CLIPVisionTower):
            tower = tower.base_model.model if hasattr(tower, "base_model") else tower.model
        return tower

    @property
    def num_image_tokens(self) -> int:
        """Embeddings one image occupies in the LM sequence."""
        n_in = self._tower().num_output_tokens
        return int(self.mm_projector.num_output_tokens(n_in))

    @property
    def device(self) -> torch.device:
        return self.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        self.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.language_model.gradient_checkpointing_disable()

    # ------------------------------------------------------------------ images
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, num_image_tokens, H] in the LM's dtype."""
        features = self.vision_tower(pixel_values)
        features = features.to(dtype=next(self.mm_projector.parameters(), features).dtype)
        return self.mm_projector(features).to(self.dtype)

    def _expand_sentinels(self, input_ids, attention_mask, labels):
        """Expand single -200 sentinels to runs of num_image_tokens, keeping each row's padding side."""
        n = self.num_image_tokens
        is_img = input_ids == IMAGE_TOKEN_INDEX
        if n == 1 or not is_img.any():
            return input_ids, attention_mask, labels
        # A row is already expanded when every run of sentinels has length n.
        run_starts = is_img & ~torch.nn.functional.pad(is_img, (1, 0))[:, :-1]
        if int(is_img.sum()) == int(run_starts.sum()) * n:
            return input_ids, attention_mask, labels
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        left_padded = bool((attention_mask[:, 0] == 0).any())
        rows_ids, rows_labels = [], []
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            ids = input_ids[b][keep].tolist()
            lab = labels[b][keep].tolist() if labels is not None else None
            out_ids, out_lab = [], []
            for i, tok in enumerate(ids):
                if tok == IMAGE_TOKEN_INDEX:
                    out_ids += [IMAGE_TOKEN_INDEX] * n
                    out_lab += [IGNORE_INDEX] * n
                else:
                    out_ids.append(tok)
                    out_lab.append(lab[i] if lab is not None else IGNORE_INDEX)
            rows_ids.append(out_ids)
            rows_labels.append(out_lab)
        width = max(len(r) for r in rows_ids)
        new_ids = input_ids.new_zeros((len(rows_ids), width))
        new_mask = torch.zeros((len(rows_ids), width), dtype=torch.long, device=input_ids.device)
        new_labels = input_ids.new_full((len(rows_ids), width), IGNORE_INDEX)
        for b, (ids, lab) in enumerate(zip(rows_ids, rows_labels)):
            sl = slice(width - len(ids), width) if left_padded else slice(0, len(ids))
            new_ids[b, sl] = torch.tensor(ids, device=input_ids.device)
            new_mask[b, sl] = 1
            new_labels[b, sl] = torch.tensor(lab, device=input_ids.device)
        return new_ids, new_mask, (new_labels if labels is not None else None)

    def prepare_inputs_embeds(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | list[torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.LongTensor | None]:
        """Token ids with image sentinels -> (inputs_embeds, attention_mask, labels) for the LM."""
        input_ids, attention_mask, labels = self._expand_sentinels(input_ids, attention_mask, labels)
        image_mask = input_ids == IMAGE_TOKEN_INDEX
        embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        n_positions = int(image_mask.sum())
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.stack(list(pixel_values)) if len(pixel_values) else None
        if n_positions:
            if pixel_values is None:
                raise ImageTokenMismatchError("input_ids contain image tokens but no pixel_values were given")
            n_images = n_positions // self.num_image_tokens
            if n_images * self.num_image_tokens != n_positions or n_images != pixel_values.shape[0]:
                raise ImageTokenMismatchError(
                    f"{n_positions} image positions ({self.num_image_tokens} per image) do not match "
                    f"{pixel_values.shape[0]} images"
                )
            features = self.encode_images(pixel_values).reshape(-1, embeds.shape[-1])
            embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))
        elif pixel_values is not None and pixel_values.shape[0] > 0:
            raise ImageTokenMismatchError(f"{pixel_values.shape[0]} images given but input_ids have no image token")
        elif self.run_vision_on_text_only_batches and self.training:
            # Keep ZeRO-3 collectives in step and the loss attached to the trained vision side; adds exactly zero.
            size = self._tower().config.image_size
            dummy = torch.zeros(1, 3, size, size, device=embeds.device, dtype=embeds.dtype)
            embeds = embeds + 0.0 * self.encode_images(dummy).sum()
        if labels is not None:
            labels = labels.masked_fill(image_mask, IGNORE_INDEX)
        return embeds, attention_mask, labels

    # ------------------------------------------------------------------ forward / generate
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_logits: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """The LM's output on the spliced embeddings.

        `position_ids` go to the LM as given; rows packed by `llava.data.packing.PackedCollator` (positions
        restarting at 0 per sample, no `attention_mask`) get transformers' block-diagonal causal mask, which it only
        builds without a KV cache, so `use_cache` is forced off for them. `return_logits`: None (default) computes
        the loss chunk-wise without logits when training with labels; True always returns logits; False computes
        the chunked loss whenever labels are given (logits then None).
        """
        pixel_values = pixel_values if pixel_values is not None else images
        if inputs_embeds is None:
            width = input_ids.shape[1]
            inputs_embeds, attention_mask, labels = self.prepare_inputs_embeds(
                input_ids, pixel_values, attention_mask, labels
            )
            if position_ids is not None and inputs_embeds.shape[1] != width:
                raise ValueError("position_ids need pre-expanded image sentinels (one per image embedding position)")
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
            if attention_mask is None and kwargs.get("cache", kwargs.get("past_key_values")) is None:
                if kwargs.get("use_cache"):
                    raise ValueError("packed rows (position_ids without attention_mask) need use_cache=False")
                kwargs["use_cache"] = False
        chunk_size = self._loss_chunk_size(labels, return_logits, kwargs)
        if chunk_size:
            return self._chunked_loss_forward(inputs_embeds, attention_mask, labels, chunk_size, kwargs)
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )

    def _loss_chunk_size(self, labels: torch.Tensor | None, return_logits: bool | None, kwargs: dict) -> int:
        """Rows per loss chunk when the chunked loss applies to this call, else 0."""
        if labels is None or return_logits or (return_logits is None and not self.training):
            return 0
        size = self.chunked_loss_size
        if size is None:
            size = getattr(self.config, "chunked_loss_size", None)
        size = DEFAULT_CHUNK_SIZE if size is None else int(size)
        if size <= 0 or kwargs.get("use_cache") or not set(kwargs) <= _CHUNKED_LOSS_KWARGS | {"position_ids"}:
            return 0
        return size if output_layer(self.language_model) is not None else 0

    def _chunked_loss_forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor,
        chunk_size: int, kwargs: dict,
    ) -> CausalLMOutputWithPast:
        decoder, head = output_layer(self.language_model)
        loss_kwargs = {k: kwargs.pop(k) for k in ("num_items_in_batch", "shift_labels") if k in kwargs}
        kwargs["use_cache"] = False  # a loss needs no KV cache (and a cache would hide packed rows' mask)
        hidden = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs).last_hidden_state
        loss = chunked_causal_lm_loss(
            hidden, head.weight, labels, bias=head.bias, chunk_size=chunk_size, **loss_kwargs
        )
        return CausalLMOutputWithPast(loss=loss)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Generate from prompts with image sentinels; returns only the new tokens, [B, new]."""
        pixel_values = pixel_values if pixel_values is not None else images
        embeds, attention_mask, _ = self.prepare_inputs_embeds(input_ids, pixel_values, attention_mask)
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)
