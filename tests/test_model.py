"""The composed model: image splicing, padding sides, mixed batches, batched generation, tower gradients."""

from __future__ import annotations

import pytest
import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import expand_image_tokens, pad_sequences
from llava.model.llava_llama import ImageTokenMismatchError


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("projector", ["linear", "mlp2x_gelu", "identity", "cluster", "cross_attn"])
def test_features_land_exactly_at_image_positions(tiny_model_factory, projector):
    mm = {"mm_hidden_size": 32} if projector == "identity" else {}
    model = tiny_model_factory(projector, **mm)
    n = model.num_image_tokens
    ids = torch.tensor([[1, 50, IMAGE_TOKEN_INDEX, 60, 70]])
    embeds, mask, _ = model.prepare_inputs_embeds(ids, _images(1))
    assert embeds.shape[1] == 4 + n
    features = model.encode_images(_images(1))[0]
    torch.testing.assert_close(embeds[0, 2 : 2 + n], features)
    table = model.get_input_embeddings().weight
    torch.testing.assert_close(embeds[0, 1], table[50])
    torch.testing.assert_close(embeds[0, 2 + n], table[60])


def test_mixed_batch_text_only_and_two_images_right_padding(tiny_model_factory):
    model = tiny_model_factory("mlp2x_gelu")
    n = model.num_image_tokens
    rows = [[1, 11, IMAGE_TOKEN_INDEX, 12, 13], [1, 21, 22, 23], [1, IMAGE_TOKEN_INDEX, 31, IMAGE_TOKEN_INDEX, 32]]
    ids = pad_sequences(rows, 0, "right")
    mask = pad_sequences([[1] * len(r) for r in rows], 0, "right")
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    images = _images(3)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=images)
    assert out.logits.shape[1] == 3 + 2 * n  # the longest expanded row: 3 text positions + 2 images
    # Row 2's second image is the third image of the batch: same features as encoding it alone.
    embeds, new_mask, new_labels = model.prepare_inputs_embeds(ids, images, mask, labels)
    feats = model.encode_images(images)
    torch.testing.assert_close(embeds[2, 1 : 1 + n], feats[1])
    torch.testing.assert_close(embeds[2, 2 + n : 2 + 2 * n], feats[2])
    assert (new_labels[0, 2 : 2 + n] == IGNORE_INDEX).all()
    assert new_mask[1].sum() == 4 and new_mask[1, :4].all()  # text-only row stays right-padded


def test_pre_expanded_and_sentinel_inputs_agree(tiny_model_factory):
    model = tiny_model_factory("mlp2x_gelu")
    ids = [1, 11, IMAGE_TOKEN_INDEX, 12]
    expanded, _ = expand_image_tokens(ids, None, model.num_image_tokens)
    a = model(input_ids=torch.tensor([ids]), pixel_values=_images(1)).logits
    b = model(input_ids=torch.tensor([expanded]), pixel_values=_images(1)).logits
    torch.testing.assert_close(a, b)


def test_image_count_mismatch_is_an_error(tiny_model_factory):
    model = tiny_model_factory("mlp2x_gelu")
    with pytest.raises(ImageTokenMismatchError, match="do not match 2 images"):
        model(input_ids=torch.tensor([[1, IMAGE_TOKEN_INDEX, 5]]), pixel_values=_images(2))
    with pytest.raises(ImageTokenMismatchError, match="no pixel_values"):
        model(input_ids=torch.tensor([[1, IMAGE_TOKEN_INDEX, 5]]))


def test_batched_left_padded_greedy_equals_single(tiny_model_factory):
    model = tiny_model_factory("mlp2x_gelu", seed=3)
    prompts = [
        [1, 100, IMAGE_TOKEN_INDEX, 200, 300, 400, 500, 600],
        [1, IMAGE_TOKEN_INDEX, 700],
        [1, 800, 900, IMAGE_TOKEN_INDEX, 1000, 1100],
        [1, 1200, IMAGE_TOKEN_INDEX, 1300, 1400, 1500, 1600, 1700, 1800, 1900, 2000],
    ]
    images = _images(4, seed=1)
    n = model.num_image_tokens
    expanded = [expand_image_tokens(p, None, n)[0] for p in prompts]
    singles = [
        model.generate(torch.tensor([e]), pixel_values=images[i : i + 1], max_new_tokens=8, do_sample=False)[0]
        for i, e in enumerate(expanded)
    ]
    ids = pad_sequences(expanded, 0, "left")
    mask = pad_sequences([[1] * len(e) for e in expanded], 0, "left")
    batch = model.generate(ids, pixel_values=images, attention_mask=mask, max_new_tokens=8, do_sample=False)
    for i, single in enumerate(singles):
        assert batch[i, : len(single)].tolist() == single.tolist()


def test_vision_tower_gets_gradients_only_when_asked(tiny_model_factory):
    from llava.model.lora import add_vit_lora, vit_lora_config

    model = tiny_model_factory("mlp2x_gelu").train()
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 5, 6]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6]])
    model(input_ids=ids, labels=labels, pixel_values=_images(1)).loss.backward()
    tower_params = list(model.vision_tower.parameters())
    assert all(p.grad is None for p in tower_params)  # frozen by default
    add_vit_lora(model, vit_lora_config(r=4, alpha=8, dropout=0.0))
    lora_b = [p for name, p in model.vision_tower.named_parameters() if "lora_B" in name]
    with torch.no_grad():
        for p in lora_b:  # B starts at zero; move it so A's gradient is non-zero as well
            p.normal_(std=0.1)
    model(input_ids=ids, labels=labels, pixel_values=_images(1)).loss.backward()
    lora_params = {name: p for name, p in model.vision_tower.named_parameters() if "lora_" in name}
    # Layer 0 feeds the selected hidden state (-2 of 2 layers); layer 1 cannot influence the features.
    used = {n: p for n, p in lora_params.items() if ".layers.0." in n}
    unused = {n: p for n, p in lora_params.items() if ".layers.1." in n}
    assert len(used) == 12 and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in used.values())
    assert all(p.grad is None for p in unused.values())
