"""The tiny foundation models: tokenizer conventions, loading through from_pretrained, caching, CLIP captions."""

from __future__ import annotations

import dataclasses
import json
import random
import time

import pytest
import torch

from llava.conversation import conv_templates, get_template
from llava.quickstart import foundation as fd
from llava.shapesworld import SHORT_ANSWER_SUFFIX, WorldConfig, scene_stream

TEST = fd.PRESETS["test"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> fd.Foundation:
    return fd.build_foundation(tmp_path_factory.mktemp("tiny"), TEST)


def test_config_key_is_stable_and_sensitive():
    assert fd.FoundationConfig().key() == fd.FoundationConfig().key()
    assert fd.PRESETS["full"].key() != fd.PRESETS["ci"].key()
    assert dataclasses.replace(TEST, lm_steps=3).key() != TEST.key()
    assert len({c.key() for c in fd.PRESETS.values()}) == len(fd.PRESETS)


@pytest.mark.parametrize("part", ["text", "caption", "pixels"])
def test_config_key_follows_the_generated_data(monkeypatch, part):
    """An edited generator (corpus text, CLIP captions or the renderer) gets a new cache folder."""
    before = TEST.key()
    if part == "text":
        real_docs = fd.text_documents
        monkeypatch.setattr(fd, "text_documents", lambda *a: [(t, p.replace("circle", "disc")) for t, p in real_docs(*a)])
    elif part == "caption":
        real_caption = fd.clip_caption
        monkeypatch.setattr(fd, "clip_caption", lambda scene: real_caption(scene) + " on grey")
    else:
        real_pixels = fd._pixels
        monkeypatch.setattr(fd, "_pixels", lambda *a: real_pixels(*a) // 2)
    fd.generator_fingerprint.cache_clear()
    try:
        assert TEST.key() != before
    finally:
        monkeypatch.undo()
        fd.generator_fingerprint.cache_clear()
    assert TEST.key() == before


def test_presets_align_patches_with_the_object_grid():
    for config in fd.PRESETS.values():
        assert WorldConfig(image_size=config.image_size).cell_aligned(config.patch_size)


def test_files_and_cache(built, tmp_path_factory):
    for sub, names in (("tokenizer", ["tokenizer.model", "tokenizer_config.json"]),
                       ("vision", ["config.json", "preprocessor_config.json"]),
                       ("lm", ["config.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"])):
        for name in names:
            assert (built.root / sub / name).is_file(), f"{sub}/{name}"
    record = json.loads((built.root / "foundation.json").read_text())
    assert record["key"] == TEST.key() and built.root.name == TEST.key()
    # no build path inside the SentencePiece model: a rebuild writes the same bytes
    assert b".tmp-" not in (built.tokenizer / "tokenizer.model").read_bytes()
    start = time.perf_counter()
    again = fd.build_foundation(built.root.parent, TEST)
    assert again.root == built.root and again.metrics["cached"] is True
    assert time.perf_counter() - start < 2.0


def test_tokenizer_llama_conventions(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(built.tokenizer))
    assert (tok.unk_token, tok.bos_token, tok.eos_token) == ("<unk>", "<s>", "</s>")
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    config = json.loads((built.tokenizer / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is True and config["add_eos_token"] is False and config["legacy"] is False
    assert config["tokenizer_class"] == "LlamaTokenizer"
    assert len(tok) <= 1000
    text = "Is there a small red circle in the top left?"
    ids = tok(text).input_ids
    assert ids[0] == 1 and 0 not in ids and tok.decode(ids, skip_special_tokens=True) == text
    # Unseen characters fall back to bytes: no <unk>, exact round trip.
    odd = "Zürich — ☃ 42%"
    ids = tok(odd).input_ids
    assert 0 not in ids and tok.decode(ids, skip_special_tokens=True) == odd


def test_system_prompts_and_suffix_cost_one_token(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(built.tokenizer))
    for text in (conv_templates["v1_sq"].system, conv_templates["v1"].system, SHORT_ANSWER_SUFFIX):
        assert len(tok(text, add_special_tokens=False).input_ids) == 1, text
    prompt = conv_templates["v1_sq"].system + " USER: What shape is the red object?"
    assert tok.decode(tok(prompt).input_ids, skip_special_tokens=True) == prompt


@pytest.mark.parametrize("role", ["ASSISTANT", "VUSER"])
def test_generation_cue_tokenizes_as_in_training(built, role):
    """The ids of a cue ("...ASSISTANT:" / "...</s>VUSER:") are a prefix of the ids of the trained prompt."""
    from transformers import AutoTokenizer

    from llava.data.tokenization import tokenizer_image_token

    tok = AutoTokenizer.from_pretrained(str(built.tokenizer))
    conv = get_template("v1_sq")
    conv.append_message("USER", "<image>\nCan you describe the image in detail?")
    conv.append_message("ASSISTANT", "There is one object. A large red circle is in the center.")
    if role == "VUSER":
        conv.append_message("VUSER", None)
        answer = " What color is the circle?</s>"
    else:
        conv.messages[-1][1] = None
        answer = " There is one object.</s>"
    cue = tokenizer_image_token(conv.get_prompt(), tok)
    full = tokenizer_image_token(conv.get_prompt() + answer, tok)
    assert full[: len(cue)] == cue and len(full) > len(cue)


def test_vision_tower_and_processor_load(built):
    from transformers import CLIPImageProcessor, CLIPVisionModel

    from llava.shapesworld import render_scene

    model = CLIPVisionModel.from_pretrained(str(built.vision_tower))
    proc = CLIPImageProcessor.from_pretrained(str(built.vision_tower))
    assert model.config.image_size == TEST.image_size and model.config.patch_size == TEST.patch_size
    assert proc.crop_size == {"height": TEST.image_size, "width": TEST.image_size}
    world = TEST.world()
    scenes = [s for s, _ in zip(scene_stream(5, "t", world), range(3))]
    expected = proc([render_scene(s, world) for s in scenes], return_tensors="pt")["pixel_values"]
    # CLIP training normalises in torch; it must equal what training and inference get from the processor.
    assert torch.allclose(fd._normalize(fd._pixels(scenes, world)), expected, atol=1e-6)
    out = model(expected, output_hidden_states=True)
    assert out.hidden_states[-2].shape == (3, 1 + (TEST.image_size // TEST.patch_size) ** 2, TEST.vision_hidden)


def test_language_model_loads_and_composes(built):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from llava.model.builder import load_language_model, load_vision_tower
    from llava.model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.tiny import tiny_llava_config

    tok = AutoTokenizer.from_pretrained(str(built.language_model))
    lm = LlamaForCausalLM.from_pretrained(str(built.language_model))
    assert lm.config.vocab_size == len(tok) and lm.config.hidden_size == TEST.lm_hidden
    config = tiny_llava_config(built.language_model, built.vision_tower, "mlp2x_gelu")
    model = LlavaLlamaForCausalLM(config, language_model=load_language_model(built.language_model, config, torch.float32),
                                  vision_tower=load_vision_tower(config, None, torch.float32))
    assert model.num_image_tokens == (TEST.image_size // TEST.patch_size) ** 2
    ids = torch.tensor([[1, 5, -200, 7, 2]])
    out = model(input_ids=ids, pixel_values=torch.zeros(1, 3, TEST.image_size, TEST.image_size), labels=ids.clamp(min=0))
    assert torch.isfinite(out.loss)


def test_perturbed_captions_always_differ():
    world = WorldConfig()
    rng = random.Random(0)
    for scene, _ in zip(scene_stream(0, "perturb", world), range(300)):
        assert fd.clip_caption(fd.perturb_scene(scene, rng, world)) != fd.clip_caption(scene)


def test_clip_caption_names_every_object_with_its_cell():
    scene = next(iter(scene_stream(1, "caption", WorldConfig())))
    caption = fd.clip_caption(scene)
    for o in scene.objects:
        assert f"{o.size} {o.color} {o.shape} in the" in caption


def test_ship_records_the_build_and_verify_checks_every_file(built, tmp_path):
    shipped = tmp_path / "shipped"
    record = fd.ship(built, shipped, "python -m llava.quickstart.foundation --preset test", threads=1)
    assert record["build"]["command"].endswith("--preset test") and record["build"]["threads"] == 1
    assert set(record["files"]) == {str(f.relative_to(shipped)) for part in fd.PARTS
                                    for f in (shipped / part).rglob("*") if f.is_file()}
    assert record["size_bytes"] == sum((shipped / n).stat().st_size for n in record["files"])
    found = fd.verify(shipped)
    assert found.language_model == shipped / "lm" and found.config == TEST

    weights = shipped / "lm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(fd.FoundationError, match="lm/model.safetensors differs from the SHA-256"):
        fd.verify(shipped)
    weights.unlink()
    with pytest.raises(fd.FoundationError, match="is missing"):
        fd.verify(shipped)
    with pytest.raises(fd.FoundationError, match="holds no foundation.json"):
        fd.verify(tmp_path)


def test_the_shipped_set_is_intact_and_matches_the_generator():
    """The committed checkpoints/tiny-foundation: every file as recorded, built by the documented command, and from
    the data this version of ShapesWorld generates (an edited generator needs `bash scripts/build_foundation.sh`)."""
    record = json.loads((fd.SHIPPED / "foundation.json").read_text())
    found = fd.verify(fd.SHIPPED)
    assert found.config == fd.PRESETS["full"]
    assert record["build"]["command"] == ("python -m llava.quickstart.foundation --preset full --threads 2 "
                                          "--ship checkpoints/tiny-foundation")
    assert record["generator"] == fd.generator_fingerprint(found.config)
    assert record["key"] == found.config.key()
    assert record["metrics"]["vision"]["passed"] and record["metrics"]["lm"]["steps"] == found.config.lm_steps
    assert record["size_bytes"] < 12e6


def test_quickstart_verify_cli_prints_the_shipped_paths(capsys):
    fd.main(["--verify", str(fd.SHIPPED), "--shell"])
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["TINY_LM"] == str(fd.SHIPPED / "lm") and lines["TINY_VISION_TOWER"] == str(fd.SHIPPED / "vision")
