"""Training flags: unknown, invalid and contradictory ones fail before any model loads, naming the flag."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.train import train as train_module
from llava.train.arguments import FlagError, parse_args

REPO = Path(__file__).resolve().parents[1]
# Paths that do not exist: nothing may try to load them before the flags are judged.
BASE = ["--model_name_or_path", "/nonexistent/lm", "--vision_tower", "/nonexistent/tower",
        "--data_path", "/nonexistent/data.json", "--output_dir", "/nonexistent/out", "--use_cpu", "True",
        "--report_to", "none"]


@pytest.fixture(autouse=True)
def _forget_deepspeed_config():
    """Parsing --deepspeed registers a global ZeRO config; later in-process model loads must not see it."""
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def test_valid_flags_parse(tmp_path):
    projector = tmp_path / "mm_projector.bin"
    projector.write_bytes(b"")
    model, data, train = parse_args(BASE + [
        "--version", "v1_sq", "--sq_r", "0.5", "--lora_enable", "True", "--lora_r", "128", "--lora_alpha", "256",
        "--vit_lora_enable", "True", "--mm_projector_type", "cluster", "--mm_projector_lr", "2e-5",
        "--vision_tower_lr", "2e-4", "--image_aspect_ratio", "pad", "--group_by_modality_length", "True",
        "--pretrain_mm_mlp_adapter", str(projector), "--warmup_ratio", "0.03", "--evaluation_strategy", "no",
        "--mm_cluster_centers", "64", "--bad_sample_policy", "error",
    ])
    assert model.mm_projector_type == "cluster" and model.mm_cluster_centers == 64
    assert data.sq_r == 0.5 and data.image_aspect_ratio == "pad" and data.bad_sample_policy == "error"
    assert train.lora_enable and train.vit_lora_enable and train.mm_projector_lr == 2e-5
    assert train.warmup_steps == 0.03  # transformers 5 spells the reference's --warmup_ratio this way


CASES = [
    # (extra flags, text the error must contain)
    (["--no_such_flag", "1"], "--no_such_flag"),
    (["--chunked_loss_size", "-1"], "--chunked_loss_size"),
    (["--packing_max_row_tokens", "512"], "--packing_max_row_tokens"),
    (["--packing", "True", "--group_by_modality_length", "True"], "--packing"),
    (["--lora_enabl", "True"], "--lora_enabl"),  # no abbreviations: a typo is an error, not another flag
    (["--bits", "4"], "--bits 4"),
    (["--bits", "8"], "--bits 8"),
    (["--bits", "3", "--lora_enable", "True"], "--bits 3"),
    (["--tune_mm_mlp_adapter", "True", "--lora_enable", "True"], "--tune_mm_mlp_adapter"),
    (["--version", "plain", "--sq_r", "0.5"], "--sq_r"),
    (["--version", "v1", "--sq_r", "0.3"], "--sq_r"),
    (["--version", "v1_sq", "--sq_r", "1.5"], "--sq_r"),
    (["--vit_lora_enable", "True", "--unfreeze_mm_vision_tower", "True"], "--unfreeze_mm_vision_tower"),
    (["--image_aspect_ratio", "stretch"], "--image_aspect_ratio"),
    (["--mm_projector_type", "mlp2x_relu"], "--mm_projector_type"),
    (["--mm_vision_select_feature", "cls"], "--mm_vision_select_feature"),
    (["--pretrain_mm_mlp_adapter", "/nonexistent/mm_projector.bin"], "--pretrain_mm_mlp_adapter"),
    (["--vit_lora_enable", "True", "--pretrain_lora", "/nonexistent/Vit-lora"], "--pretrain_lora"),
    (["--version", "v9"], "--version"),
    (["--bad_sample_policy", "ignore"], "--bad_sample_policy"),
    (["--max_missing_images", "1.5"], "--max_missing_images 1.5 must lie in [0, 1]"),
    (["--max_missing_images", "-0.1"], "--max_missing_images -0.1"),
    (["--attn_implementation", "flash"], "--attn_implementation"),
    (["--lora_enable", "True", "--lora_bias", "some"], "--lora_bias"),
    (["--lora_enable", "True", "--bits", "4", "--quant_type", "int4"], "--quant_type"),
    (["--tune_mm_mlp_adapter", "True", "--freeze_mm_mlp_adapter", "True"], "--freeze_mm_mlp_adapter"),
    (["--lora_enable", "True", "--freeze_mm_mlp_adapter", "True", "--mm_projector_lr", "1e-5"], "--mm_projector_lr"),
    (["--lora_enable", "True", "--vision_tower_lr", "1e-5"], "--vision_tower_lr"),
    (["--lora_enable", "True", "--freeze_backbone", "True"], "--freeze_backbone"),
    (["--lora_enable", "True", "--lora_r", "0"], "--lora_r"),
    (["--mm_use_im_start_end", "True"], "--mm_use_im_start_end"),
    (["--warmup_ratio", "0.03", "--warmup_steps", "10"], "--warmup_ratio"),
    (["--resume_from_checkpoint", "/nonexistent/checkpoint-5"], "--resume_from_checkpoint"),
]


@pytest.mark.parametrize("extra,needle", CASES, ids=[c[1] + ":" + " ".join(c[0])[:40] for c in CASES])
def test_bad_flags_name_the_flag(extra, needle):
    with pytest.raises(FlagError) as info:
        parse_args(BASE + extra)
    assert needle in str(info.value)


@pytest.mark.parametrize("flag", ["--lora_enable", "--tune_mm_mlp_adapter", "--group_by_modality_length"])
def test_bad_bool_string_exits_naming_the_flag(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args(BASE + [flag, "maybe"])
    assert flag in capsys.readouterr().err


def test_bits_without_lora_under_zero3_names_both(tmp_path):
    with pytest.raises(FlagError, match="--bits 4"):
        parse_args(BASE + ["--bits", "4", "--lora_enable", "True", "--deepspeed", str(REPO / "scripts/zero3.json")])


def test_train_rejects_before_loading_anything(monkeypatch):
    """train() must judge the flags before it touches a tokenizer or a model."""

    def boom(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the flags were checked")

    monkeypatch.setattr(train_module, "load_tokenizer", boom)
    monkeypatch.setattr(train_module, "build_model", boom)
    start = time.perf_counter()
    with pytest.raises(FlagError, match="--tune_mm_mlp_adapter"):
        train_module.train(BASE + ["--tune_mm_mlp_adapter", "True", "--lora_enable", "True"])
    assert time.perf_counter() - start < 5


def test_cli_exit_message():
    """The module entry point turns a bad flag into a one-line error and a non-zero exit."""
    proc = subprocess.run([sys.executable, "-m", "llava.train.train", *BASE, "--bits", "4"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0
    assert "error: --bits 4 (QLoRA) needs --lora_enable True" in proc.stderr
