"""Training end to end on tiny models: both stages, their file sets and key layouts, reloading, stage 2 from
a LLaVA-style base (docs/reference.md#d15-stage-2-initialisation), resume, QLoRA."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from llava.model import compat
from llava.train import stage

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 40)}
COMMON = ["--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none",
          "--dataloader_num_workers", "0", "--use_cpu", "True", "--save_strategy", "steps", "--seed", "0",
          "--mm_cluster_centers", "2", "--lr_scheduler_type", "constant"]
# Files that are HF/DeepSpeed training state or run-level logs rather than the stage's own output.
RUN_STATE = re.compile(r"^(optimizer\.pt|scheduler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin|"
                       r"bad_samples\.jsonl|global_step\d+|latest|zero_to_\w+\.py|checkpoint-\d+|"
                       r"checkpoint_complete\.json)$")


# ---------------------------------------------------------------------- fixtures: data and runs
@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_foundation) -> dict:
    """32 real PNGs, a caption set (stage 1), a multi-turn set with text-only and one broken record (stage 2),
    and a copy of the LM whose config.json claims to be a LLaVA checkpoint with an mlp2x_gelu projector
    (docs/reference.md#d15-stage-2-initialisation)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("train_e2e")
    images = root / "images"
    images.mkdir()
    names = list(COLOURS)
    for i in range(32):
        Image.new("RGB", (24 + 3 * i, 32), COLOURS[names[i % 4]]).save(images / f"{i}.png")
    captions = [{"id": f"c{i}", "image": f"{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe the image briefly."},
        {"from": "gpt", "value": f"A plain {names[i % 4]} picture."}]} for i in range(32)]
    chats = [{"id": f"m{i}", "image": f"{i}.png", "conversations": [
        {"from": "human", "value": "What colour is this?\n<image>"},
        {"from": "gpt", "value": f"It is {names[i % 4]}."},
        {"from": "human", "value": "Is it a bright colour?"},
        {"from": "gpt", "value": "Yes." if names[i % 4] in ("yellow", "green") else "No."},
        {"from": "human", "value": "How many colours are there?"},
        {"from": "gpt", "value": "Just one."}]} for i in range(24)]
    chats += [{"id": f"t{i}", "conversations": [
        {"from": "human", "value": f"What is {i} plus one?"}, {"from": "gpt", "value": f"It is {i + 1}."}]}
        for i in range(8)]
    chats.append({"id": "broken", "image": "missing.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Nothing."}]})
    (root / "captions.json").write_text(json.dumps(captions))
    (root / "chats.json").write_text(json.dumps(chats))

    llava_lm = root / "llava_lm"
    shutil.copytree(tiny_foundation["lm"], llava_lm)
    config = json.loads((llava_lm / "config.json").read_text())
    config.update(mm_projector_type="mlp2x_gelu", mm_vision_tower="elsewhere/clip", mm_hidden_size=1024,
                  model_type="llava")
    (llava_lm / "config.json").write_text(json.dumps(config))
    return {"root": root, "images": images, "captions": root / "captions.json", "chats": root / "chats.json",
            "llava_lm": llava_lm, **tiny_foundation}


def run_train(args: list[str], expect_ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "llava.train.train", *args], capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    if expect_ok:
        assert proc.returncode == 0, f"training failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return proc


def losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def stage_files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")
            if p.is_file() and not any(RUN_STATE.match(part) for part in p.relative_to(directory).parts)}


def stage1_args(ws: dict, out: Path) -> list[str]:
    return ["--model_name_or_path", str(ws["lm"]), "--vision_tower", str(ws["tower"]), "--version", "plain",
            "--data_path", str(ws["captions"]), "--image_folder", str(ws["images"]),
            "--mm_projector_type", "cluster", "--tune_mm_mlp_adapter", "True",
            "--vit_lora_enable", "True", "--lora_r_vit", "4", "--lora_alpha_vit", "8",
            "--learning_rate", "2e-2", "--vision_tower_lr", "1e-2",
            "--output_dir", str(out), "--max_steps", "8", "--save_steps", "4", *COMMON]


def stage2_args(ws: dict, stage1: Path, out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(ws["llava_lm"]), "--vision_tower", str(ws["tower"]), "--version", "v1_sq",
            "--sq_r", "0.5", "--data_path", str(ws["chats"]), "--image_folder", str(ws["images"]),
            "--mm_projector_type", "cluster", "--pretrain_mm_mlp_adapter", str(stage1 / "mm_projector.bin"),
            "--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0",
            "--vit_lora_enable", "True", "--lora_r_vit", "4", "--lora_alpha_vit", "8", "--lora_dropout_vit", "0",
            "--pretrain_lora", str(stage1 / "Vit-lora"), "--image_aspect_ratio", "pad",
            "--group_by_modality_length", "True", "--learning_rate", "2e-3", "--mm_projector_lr", "1e-3",
            "--vision_tower_lr", "1e-3", "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2",
            *COMMON, *extra]


@pytest.fixture(scope="module")
def stage1(workspace) -> Path:
    out = workspace["root"] / "stage1"
    run_train(stage1_args(workspace, out))
    return out


@pytest.fixture(scope="module")
def stage2(workspace, stage1) -> Path:
    out = workspace["root"] / "stage2"
    run_train(stage2_args(workspace, stage1, out))
    return out


# ---------------------------------------------------------------------- stage 1
@pytest.mark.slow
def test_stage1_files_keys_and_learning(stage1, workspace):
    assert {"mm_projector.bin", "mm_projector.safetensors", "config.json", "Vit-lora/adapter_config.json",
            "Vit-lora/adapter_model.safetensors", "bad_samples_summary.json"} == stage_files(stage1)
    projector = torch.load(stage1 / "mm_projector.bin", weights_only=True)
    assert projector and all(k.startswith("model.mm_projector.") for k in projector)
    assert {"model.mm_projector.c.weight", "model.mm_projector.mlp.2.weight", "model.mm_projector.sim_alpha"} <= set(projector)
    vit = load_file(stage1 / "Vit-lora" / "adapter_model.safetensors")
    pattern = re.compile(r"^base_model\.model\.vision_tower\.vision_model\.encoder\.layers\.\d+\."
                         r"(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.lora_[AB]\.weight$")
    assert len(vit) == 2 * 6 * 2 and all(pattern.match(k) for k in vit), sorted(vit)[:3]
    # LoRA B starts at zero and moves only if gradients reach the tower (docs/reference.md#d1-vit-lora-trains).
    assert max(t.abs().max().item() for k, t in vit.items() if "lora_B" in k) > 1e-4
    config = json.loads((stage1 / "config.json").read_text())
    assert config["mm_projector_type"] == "cluster" and config["tune_mm_mlp_adapter"] is True
    assert config["mm_vision_config"]["hidden_size"] == 32 and config["use_cache"] is True
    assert config["conv_mode"] == "plain"  # the template travels with the checkpoint

    curve = losses(stage1)
    print(f"stage 1 losses: {curve}")
    assert len(curve) == 8 and all(map(torch.isfinite, torch.tensor(curve)))
    assert sum(curve[-3:]) / 3 < sum(curve[:2]) / 2 - 0.03, curve

    for step in (4, 8):  # the final stage files (docs/reference.md#d22-checkpoint-contents-and-resuming)
        assert stage_files(stage1 / f"checkpoint-{step}") == stage_files(stage1)
        assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {
            p.name for p in (stage1 / f"checkpoint-{step}").iterdir()}


@pytest.mark.slow
def test_stage1_output_loads(stage1, workspace):
    from llava.model.builder import load_pretrained_model

    _, model, processor, _ = load_pretrained_model(stage1, model_base=workspace["lm"])
    saved = torch.load(stage1 / "mm_projector.bin", weights_only=True)
    for key, value in model.mm_projector.state_dict().items():
        torch.testing.assert_close(value, saved[f"model.mm_projector.{key}"], rtol=0, atol=0)
    assert processor.crop_size["height"] == 32


# ---------------------------------------------------------------------- stage 2
@pytest.mark.slow
def test_stage2_files_keys_and_reload(stage2, stage1, workspace):
    expected = {"adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin",
                "non_lora_trainables.safetensors", "config.json", "Vit-lora/adapter_config.json",
                "Vit-lora/adapter_model.safetensors", "tokenizer_config.json", "preprocessor_config.json",
                "bad_samples_summary.json"}
    assert expected <= stage_files(stage2)
    for step in (2, 4):
        assert stage_files(stage2 / f"checkpoint-{step}") == stage_files(stage2)

    adapter = load_file(stage2 / "adapter_model.safetensors")
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in adapter
    assert all(re.match(r"^base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.lora_[AB]\.weight$", k)
               for k in adapter)
    assert {k.split(".")[-3] for k in adapter} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"}  # every LM Linear but lm_head
    non_lora = torch.load(stage2 / "non_lora_trainables.bin", weights_only=True)
    assert non_lora and all(k.startswith("base_model.model.model.mm_projector.") for k in non_lora)

    # The CLI's cluster projector wins over the mlp2x_gelu named by the LLaVA-style base config
    # (docs/reference.md#d15-stage-2-initialisation).
    config = json.loads((stage2 / "config.json").read_text())
    assert config["mm_projector_type"] == "cluster" and config["image_aspect_ratio"] == "pad"
    assert config["conv_mode"] == "v1_sq"
    # Initialised from stage 1 (a random init would be O(0.1) away), then trained a little.
    stage1_projector = torch.load(stage1 / "mm_projector.bin", weights_only=True)
    moved = max((v - stage1_projector[k.replace("base_model.model.", "")]).abs().max().item()
                for k, v in non_lora.items() if "ln_1" not in k)
    assert 0 < moved < 0.02
    vit1 = load_file(stage1 / "Vit-lora" / "adapter_model.safetensors")
    vit2 = load_file(stage2 / "Vit-lora" / "adapter_model.safetensors")
    assert set(vit1) == set(vit2)
    assert max((vit2[k] - vit1[k]).abs().max().item() for k in vit1 if "lora_A" in k) < 0.02
    assert any(not torch.equal(vit2[k], vit1[k]) for k in vit1)  # the ViT LoRA kept training in stage 2
    assert json.loads((stage2 / "bad_samples_summary.json").read_text())["total"] == 1

    curve = losses(stage2)
    print(f"stage 2 losses: {curve}")
    assert len(curve) == 4 and all(map(torch.isfinite, torch.tensor(curve)))

    from llava.model.builder import load_pretrained_model

    tokenizer, model, _, _ = load_pretrained_model(stage2, model_base=workspace["lm"])
    for key, value in model.mm_projector.state_dict().items():
        torch.testing.assert_close(value, non_lora[f"base_model.model.model.mm_projector.{key}"], rtol=0, atol=0)
    assert tokenizer.pad_token is not None
    from llava.inference.engine import default_conv_mode

    assert default_conv_mode(model.config) == "v1_sq"  # evaluation and chat default to the training template


@pytest.mark.slow
def test_stage2_rejects_a_projector_of_another_type(stage1, workspace):
    """--pretrain_mm_mlp_adapter holding a cluster projector cannot start an mlp2x_gelu run
    (docs/reference.md#d15-stage-2-initialisation)."""
    args = stage2_args(workspace, stage1, workspace["root"] / "d15") + ["--mm_projector_type", "mlp2x_gelu"]
    proc = run_train(args, expect_ok=False)
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert "--pretrain_mm_mlp_adapter" in message and "'mlp2x_gelu'" in message and "'cluster'" in message
    assert "Loading weights" not in proc.stderr  # judged before the tower or the LM loads


@pytest.mark.slow
@pytest.mark.parametrize("which", ["stage2", "stage1"])
def test_resume_reproduces_the_uninterrupted_run(which, stage2, stage1, workspace):
    """Resumed from a checkpoint, a run logs the same per-step losses as the run that kept going: stage 2
    (LLM LoRA + ViT LoRA + projector, restored from its stage files) and stage 1 (projector + ViT LoRA)."""
    out = workspace["root"] / f"{which}_resumed"
    if which == "stage2":
        full, step, weights = stage2, 2, "adapter_model.safetensors"
        args = stage2_args(workspace, stage1, out)
    else:
        full, step, weights = stage1, 4, "mm_projector.safetensors"
        args = stage1_args(workspace, out)
    run_train(args + ["--resume_from_checkpoint", str(full / f"checkpoint-{step}")])
    uninterrupted, resumed = losses(full), losses(out)
    assert len(resumed) == len(uninterrupted)
    diff = max(abs(a - b) for a, b in zip(uninterrupted[step:], resumed[step:]))
    print(f"resume {which}: uninterrupted {uninterrupted}, resumed {resumed}, max abs diff {diff:.2e}")
    assert diff <= 1e-5
    for name in (weights, "Vit-lora/adapter_model.safetensors"):
        final_a, final_b = load_file(full / name), load_file(out / name)
        for key in final_a:
            torch.testing.assert_close(final_a[key], final_b[key], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- other stages
@pytest.mark.slow
def test_qlora_4bit_runs(workspace):
    out = workspace["root"] / "qlora"
    run_train(["--model_name_or_path", str(workspace["lm"]), "--vision_tower", str(workspace["tower"]),
               "--version", "v1", "--data_path", str(workspace["chats"]), "--image_folder", str(workspace["images"]),
               "--mm_projector_type", "mlp2x_gelu", "--lora_enable", "True", "--bits", "4", "--lora_r", "8",
               "--lora_alpha", "16", "--output_dir", str(out), "--max_steps", "2", "--learning_rate", "1e-3",
               *COMMON, "--save_strategy", "no"])
    curve = losses(out)
    assert len(curve) == 2 and all(map(torch.isfinite, torch.tensor(curve)))
    assert (out / "adapter_model.safetensors").is_file() and (out / "non_lora_trainables.bin").is_file()


@pytest.mark.slow
def test_full_finetune_saves_a_merged_model(workspace):
    from llava.model.builder import load_pretrained_model

    out = workspace["root"] / "full"
    run_train(["--model_name_or_path", str(workspace["lm"]), "--vision_tower", str(workspace["tower"]),
               "--version", "v1", "--data_path", str(workspace["chats"]), "--image_folder", str(workspace["images"]),
               "--mm_projector_type", "mlp2x_gelu", "--output_dir", str(out), "--max_steps", "2",
               "--save_steps", "2", "--learning_rate", "1e-3", "--gradient_checkpointing", "True", *COMMON])
    assert stage_files(out / "checkpoint-2") == stage_files(out)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    saved = load_file(out / "model.safetensors")
    assert "model.mm_projector.0.weight" in saved and "lm_head.weight" in saved
    _, model, _, _ = load_pretrained_model(out)
    assert model.config.conv_mode == "v1"  # a merged/full checkpoint keeps its template too
    base = load_file(workspace["lm"] / "model.safetensors")
    own = {compat.to_reference_key(k): v for k, v in model.state_dict().items() if "position_ids" not in k}
    torch.testing.assert_close(own["model.mm_projector.0.weight"], saved["model.mm_projector.0.weight"])
    assert not torch.equal(own["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])


# ---------------------------------------------------------------------- stage policy, in process (fast)
def _args(**overrides) -> tuple[SimpleNamespace, SimpleNamespace]:
    model_args = SimpleNamespace(tune_mm_mlp_adapter=False, freeze_backbone=False, unfreeze_mm_vision_tower=False,
                                 pretrain_lora=None)
    train_args = SimpleNamespace(lora_enable=False, vit_lora_enable=False, freeze_mm_mlp_adapter=False, bits=16,
                                 gradient_checkpointing=False, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                                 lora_bias="none", lora_r_vit=4, lora_alpha_vit=8, lora_dropout_vit=0.0,
                                 learning_rate=1e-3, mm_projector_lr=None, vision_tower_lr=None, weight_decay=0.1)
    for key, value in overrides.items():
        setattr(model_args if hasattr(model_args, key) else train_args, key, value)
    return model_args, train_args


def _trainable_components(model) -> set[str]:
    return {stage.component_of(n) for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("overrides,components", [
    ({"tune_mm_mlp_adapter": True}, {"mm_projector"}),
    ({"tune_mm_mlp_adapter": True, "vit_lora_enable": True}, {"mm_projector", "vision_tower"}),
    ({"lora_enable": True}, {"language_model", "mm_projector"}),
    ({"lora_enable": True, "freeze_mm_mlp_adapter": True}, {"language_model"}),
    ({"lora_enable": True, "unfreeze_mm_vision_tower": True}, {"language_model", "mm_projector", "vision_tower"}),
    ({}, {"language_model", "mm_projector"}),
    ({"freeze_backbone": True}, {"mm_projector"}),
])
def test_stage_policy_trainable_parts(tiny_model_factory, overrides, components):
    model_args, train_args = _args(**overrides)
    model = tiny_model_factory("mlp2x_gelu")
    plan = stage.plan_for(model_args, train_args)
    stage.apply(model, plan, model_args, train_args)
    assert _trainable_components(model) == components
    lm_trainable = [n for n, p in model.language_model.named_parameters() if p.requires_grad]
    if train_args.lora_enable:
        assert lm_trainable and all("lora_" in n for n in lm_trainable)
    if train_args.vit_lora_enable:
        assert all("lora_" in n for n, p in model.vision_tower.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("projector_lr,tower_lr", [(None, 5e-4), (2e-5, None), (2e-5, 5e-4), (None, None)])
def test_optimizer_groups_each_lr_works_alone(tiny_model_factory, projector_lr, tower_lr):
    model_args, train_args = _args(lora_enable=True, vit_lora_enable=True, mm_projector_lr=projector_lr,
                                   vision_tower_lr=tower_lr)
    model = tiny_model_factory("cluster")
    stage.apply(model, stage.plan_for(model_args, train_args), model_args, train_args)
    groups = stage.optimizer_groups(model, train_args)
    ids = {id(p): n for n, p in model.named_parameters()}
    in_groups = [ids[id(p)] for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(n for n, p in model.named_parameters() if p.requires_grad)  # no frozen ones
    for group in groups:
        names = [ids[id(p)] for p in group["params"]]
        component = {stage.component_of(n) for n in names}
        assert len(component) == 1
        expected = {"mm_projector": projector_lr, "vision_tower": tower_lr}.get(component.pop()) or 1e-3
        assert group["lr"] == expected
        if group["weight_decay"]:
            assert not any(n.endswith("bias") or "ln_1" in n or "sim_" in n for n in names)
    decayed = {ids[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}
    assert "mm_projector.c.weight" in decayed and "mm_projector.c.bias" not in decayed
    assert stage.component_of(ids[id(groups[0]["params"][0])]) == "language_model"  # HF logs group 0's LR


def test_summary_names_components_and_files(tiny_model_factory):
    model_args, train_args = _args(tune_mm_mlp_adapter=True, vit_lora_enable=True, vision_tower_lr=2e-4)
    model = tiny_model_factory("cluster")
    plan = stage.plan_for(model_args, train_args)
    stage.apply(model, plan, model_args, train_args)
    text = stage.summary(model, plan, train_args)
    assert "stage pretrain" in text and "mm_projector.bin" in text and "Vit-lora/" in text and "0.0002" in text


@pytest.mark.slow
def test_packing_and_chunked_loss_match_the_plain_path(workspace):
    """--packing (padding-free rows) and the chunked loss give the plain padded run's loss curve."""
    def run(name: str, *extra: str) -> list[float]:
        out = workspace["root"] / name
        run_train(["--model_name_or_path", str(workspace["lm"]), "--vision_tower", str(workspace["tower"]),
                   "--version", "v1", "--data_path", str(workspace["chats"]), "--image_folder",
                   str(workspace["images"]), "--mm_projector_type", "mlp2x_gelu", "--lora_enable", "True",
                   "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.0", "--output_dir", str(out),
                   "--max_steps", "3", "--learning_rate", "1e-3", *COMMON, "--save_strategy", "no", *extra])
        return losses(out)

    plain = run("plain_loss", "--chunked_loss_size", "0")
    chunked = run("chunked_loss")
    packed = run("packed", "--packing", "True")
    assert len(plain) == 3
    torch.testing.assert_close(torch.tensor(chunked), torch.tensor(plain), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(packed), torch.tensor(plain), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_third_broken_dataset_trains_to_the_end_or_stops_at_the_first(workspace, tmp_path):
    """`--bad_sample_policy skip` finishes an epoch and counts every kind; `error` names the first bad record."""
    from test_train_dataset import write_broken_dataset

    data_path, images, kinds, good_ids = write_broken_dataset(tmp_path)
    assert len(kinds) >= (len(kinds) + len(good_ids)) / 3
    base = ["--model_name_or_path", str(workspace["lm"]), "--vision_tower", str(workspace["tower"]),
            "--version", "v1_sq", "--sq_r", "0.5", "--data_path", data_path, "--image_folder", images,
            "--mm_projector_type", "mlp2x_gelu", "--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8",
            "--model_max_length", "256", "--num_train_epochs", "1", "--learning_rate", "1e-3", *COMMON,
            "--save_strategy", "no"]
    out = tmp_path / "skip"
    run_train([*base, "--output_dir", str(out)])
    expected: dict[str, int] = {}
    for kind in kinds.values():
        expected[kind] = expected.get(kind, 0) + 1
    summary = json.loads((out / "bad_samples_summary.json").read_text())
    assert summary == {"total": len(kinds), "by_kind": expected}
    assert len(losses(out)) >= 5 and all(map(torch.isfinite, torch.tensor(losses(out))))

    failed = run_train([*base, "--output_dir", str(tmp_path / "error"), "--bad_sample_policy", "error"],
                       expect_ok=False)
    assert failed.returncode != 0
    assert "bad-" in failed.stderr or "<jsonl line" in failed.stderr
