"""Named training recipes (scripts/recipes/*.env, `RECIPE=<name> bash pretrain.sh`): every recipe's DRY_RUN
commands against the reference's training scripts (docs/reference.md#training-recipes), the stage chain (each stage starts from the previous one's output), the
precedence (your environment > the recipe > the script's default), the errors, and stage 2 from a downloaded
projector without Vit-lora/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_launch import (  # noqa: F401 - _forget_deepspeed_config is an autouse fixture
    CPU_FLAGS,
    REPO,
    _forget_deepspeed_config,
    dry_run,
    flag,
    global_batch,
    run_script,
)

from llava.train.arguments import parse_args

RECIPES = REPO / "scripts" / "recipes"
SCRIPT = {1: "pretrain.sh", 2: "lora_instruct_tuning.sh"}
GPUS = {"NUM_GPUS": "8"}
CLIP = "openai/clip-vit-large-patch14-336"


def vicuna(size: str) -> str:
    return f"lmsys/vicuna-{size}-v1.5"


def s4v_lm(size: str) -> str:
    return f"Lin-Chen/ShareGPT4V-{size.upper()}_Pretrained_vit-large336-l12_vicuna-{size}-v1.5"


def s4v_tower(size: str) -> str:
    return f"Lin-Chen/ShareGPT4V-{size.upper()}_Pretrained_vit-large336-l12"


# ---------------------------------------------------------------------- what the reference's scripts say, per stage
# vit: None (off) or (rank, alpha, vision_tower_lr, start) with start "stage1" (--pretrain_lora) or "new"
def stage1(size: str) -> dict:
    """The reference's stage-1 script (also SQ-LLaVA*'s first pretraining step)."""
    return dict(version="plain", data="blip_laion_cc_sbu_558k.json", model=vicuna(size), tower=CLIP, lr=1e-3,
                epochs=1, lora=None, vit=(64, 128, 2e-4, "stage1"), projector_lr=None, sq_r=None, batch=256,
                aspect="square", projector_init=False)


def stage1_step2(size: str) -> dict:
    """SQ-LLaVA*'s second pretraining step."""
    return dict(version="plain", data="share-captioner_coco_lcs_sam_1246k_1107.json", model=s4v_lm(size),
                tower=s4v_tower(size), lr=2e-4, epochs=1, lora=None, vit=None, projector_lr=None, sq_r=None,
                batch=256, per_device=16, aspect="square", projector_init=True)


def stage2_llava(size: str, vit_start: str = "stage1") -> dict:
    """The reference's 7B LLaVA-data stage-2 script."""
    return dict(version="v1_sq", data="llava_v1_5_mix665k.json", model=vicuna(size), tower=CLIP, lr=2e-4, epochs=1,
                lora=(128, 256), vit=(64, 128, 2e-4, vit_start), projector_lr=2e-5, sq_r=0.5, batch=128,
                aspect="pad", projector_init=True)


def stage2_star(size: str) -> dict:
    """The reference's 13B ShareGPT4V stage-2 script; the 7B's ViT LoRA is the released 7B's r32/a64."""
    vit = (32, 64, 2e-5, "new") if size == "7b" else (64, 128, 2e-5, "new")
    return dict(version="v1_sq", data="sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json",
                model=s4v_lm(size), tower=s4v_tower(size), lr=2e-4, epochs=1.2 if size == "13b" else 1,
                lora=(128, 256), vit=vit, projector_lr=2e-5, sq_r=0.5, batch=128, aspect="pad", projector_init=True)


# (recipe, stage) -> (expected, the run whose output it starts from: (recipe, stage), "download" or None)
EXPECTED: dict[tuple[str, int], tuple[dict, tuple[str, int] | str | None]] = {
    ("sqllava-7b", 1): (stage1("7b"), None),
    ("sqllava-7b", 2): (stage2_llava("7b"), ("sqllava-7b", 1)),
    ("sqllava-13b", 1): (stage1("13b"), None),
    ("sqllava-13b", 2): (stage2_llava("13b"), ("sqllava-13b", 1)),
    ("sqllava-star-7b", 1): (stage1("7b"), None),
    ("sqllava-star-7b-pt2", 1): (stage1_step2("7b"), ("sqllava-star-7b", 1)),
    ("sqllava-star-7b", 2): (stage2_star("7b"), ("sqllava-star-7b-pt2", 1)),
    ("sqllava-star-13b", 1): (stage1("13b"), None),
    ("sqllava-star-13b-pt2", 1): (stage1_step2("13b"), ("sqllava-star-13b", 1)),
    ("sqllava-star-13b", 2): (stage2_star("13b"), ("sqllava-star-13b-pt2", 1)),
    # the download holds mm_projector.bin only: ViT LoRA starts new
    ("sqllava-7b-from-released-projector", 2): (stage2_llava("7b", vit_start="new"), "download"),
}


def training_flags(cmd: list[str]) -> list[str]:
    return cmd[cmd.index("-m", cmd.index("--nproc_per_node")) + 2 :]


def recipe_stages(name: str) -> set[int]:
    text = (RECIPES / f"{name}.env").read_text()
    return {int(s) for s in re.search(r'^STAGES="?([12 ]+)"?$', text, re.M).group(1).split()}


def write_output(cwd: Path, cmd: list[str]) -> None:
    """What a stage-1 run writes into its --output_dir: mm_projector.bin, and Vit-lora/ where ViT LoRA was on."""
    out = cwd / flag(cmd, "--output_dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / "mm_projector.bin").write_bytes(b"")
    if flag(cmd, "--vit_lora_enable") == "True":
        (out / "Vit-lora").mkdir(exist_ok=True)
        (out / "Vit-lora" / "adapter_config.json").write_text("{}")


def run_chain(cwd: Path, recipe: str, stage: int) -> tuple[list[str], str, str | None]:
    """DRY_RUN the stages this one starts from (writing their outputs into cwd), then this one:
    (its command, its stderr, the folder it should start from)."""
    before = EXPECTED[(recipe, stage)][1]
    source = None
    if before == "download":
        projector = flag(dry_run(SCRIPT[stage], cwd, RECIPE=recipe, **GPUS)[0], "--pretrain_mm_mlp_adapter")
        (cwd / projector).parent.mkdir(parents=True)
        (cwd / projector).write_bytes(b"")  # mm_projector.bin, no Vit-lora/
        source = projector.rsplit("/", 1)[0]
    elif before is not None:
        prev_cmd, _, _ = run_chain(cwd, *before)
        write_output(cwd, prev_cmd)
        source = flag(prev_cmd, "--output_dir")
    cmd, err = dry_run(SCRIPT[stage], cwd, RECIPE=recipe, **GPUS)
    return cmd, err, source


# ---------------------------------------------------------------------- every recipe, against the reference
def test_every_recipe_is_tested_and_says_what_it_reproduces():
    names = sorted(p.stem for p in RECIPES.glob("*.env"))
    assert {(n, s) for n in names for s in recipe_stages(n)} == set(EXPECTED)
    for name in names:
        text = (RECIPES / f"{name}.env").read_text()
        assert text.startswith("# ") and "docs/reference.md#training-recipes" in text, name
        for stage in recipe_stages(name):  # the command to run it
            assert f"RECIPE={name} bash {SCRIPT[stage]}" in text, (name, stage)


@pytest.mark.parametrize("recipe,stage", list(EXPECTED), ids=[f"{r}-stage{s}" for r, s in EXPECTED])
def test_recipe_matches_spec_and_parses(tmp_path, monkeypatch, recipe, stage):
    want = EXPECTED[(recipe, stage)][0]
    cmd, err, source = run_chain(tmp_path, recipe, stage)
    assert f"[launch] recipe {recipe} (scripts/recipes/{recipe}.env)" in err
    assert flag(cmd, "--version") == want["version"]
    assert Path(flag(cmd, "--data_path")).name == want["data"]
    assert flag(cmd, "--model_name_or_path") == want["model"] and flag(cmd, "--vision_tower") == want["tower"]
    assert float(flag(cmd, "--learning_rate")) == want["lr"]
    assert float(flag(cmd, "--num_train_epochs")) == want["epochs"]
    assert flag(cmd, "--image_aspect_ratio") == want["aspect"]
    assert flag(cmd, "--mm_projector_type") == "cluster"
    assert global_batch(cmd, 8) == want["batch"]
    if "per_device" in want:
        assert flag(cmd, "--per_device_train_batch_size") == str(want["per_device"])
    if want["lora"] is None:
        assert "--lora_enable" not in cmd and flag(cmd, "--tune_mm_mlp_adapter") == "True"
    else:
        assert flag(cmd, "--lora_enable") == "True" and "--tune_mm_mlp_adapter" not in cmd
        assert (int(flag(cmd, "--lora_r")), int(flag(cmd, "--lora_alpha"))) == want["lora"]
        assert flag(cmd, "--group_by_modality_length") == "True"
    if want["projector_lr"] is None:
        assert "--mm_projector_lr" not in cmd
    else:
        assert float(flag(cmd, "--mm_projector_lr")) == want["projector_lr"]
    if want["sq_r"] is None:
        assert "--sq_r" not in cmd
    else:
        assert float(flag(cmd, "--sq_r")) == want["sq_r"]
    if want["vit"] is None:
        assert flag(cmd, "--vit_lora_enable") == "False" and "--lora_r_vit" not in cmd
        assert "--vision_tower_lr" not in cmd and "--pretrain_lora" not in cmd
    else:
        rank, alpha, tower_lr, start = want["vit"]
        assert flag(cmd, "--vit_lora_enable") == "True"
        assert (int(flag(cmd, "--lora_r_vit")), int(flag(cmd, "--lora_alpha_vit"))) == (rank, alpha)
        assert float(flag(cmd, "--vision_tower_lr")) == tower_lr
        if start == "stage1" and stage == 2:
            assert flag(cmd, "--pretrain_lora") == f"{source}/Vit-lora"
        else:
            assert "--pretrain_lora" not in cmd
    # the chain: the projector comes from the previous run's output folder
    if want["projector_init"]:
        assert flag(cmd, "--pretrain_mm_mlp_adapter") == f"{source}/mm_projector.bin"
    else:
        assert "--pretrain_mm_mlp_adapter" not in cmd
    # and the flags are a valid run (parse_args checks that the projector / Vit-lora files exist)
    monkeypatch.chdir(tmp_path)
    model, data, train = parse_args(training_flags(cmd) + CPU_FLAGS)
    assert model.version == want["version"] and train.vit_lora_enable == (want["vit"] is not None)


def test_no_recipe_is_the_sqllava_7b_recipe(tmp_path):
    """The defaults are today's behaviour and equal sqllava-7b, stage by stage."""
    for stage in (1, 2):
        plain, plain_err = dry_run(SCRIPT[stage], tmp_path, **GPUS)
        recipe, _ = dry_run(SCRIPT[stage], tmp_path, RECIPE="sqllava-7b", **GPUS)
        assert plain == recipe and "recipe" not in plain_err


@pytest.mark.parametrize("star,plain", [("sqllava-star-7b", "sqllava-7b"), ("sqllava-star-13b", "sqllava-13b")])
def test_star_step1_is_the_same_run_as_the_llava_data_stage1(tmp_path, star, plain):
    """SQ-LLaVA*'s first pretraining step is SQ-LLaVA's stage 1, same output folder: done once, used by both."""
    assert dry_run("pretrain.sh", tmp_path, RECIPE=star, **GPUS)[0] == dry_run("pretrain.sh", tmp_path, RECIPE=plain,
                                                                              **GPUS)[0]


# ---------------------------------------------------------------------- precedence
def test_your_environment_beats_the_recipe(tmp_path):
    cmd, err = dry_run("lora_instruct_tuning.sh", tmp_path, RECIPE="sqllava-star-7b", MODEL="/my/lm", **GPUS)
    assert flag(cmd, "--model_name_or_path") == "/my/lm"
    assert flag(cmd, "--vision_tower") == s4v_tower("7b") and flag(cmd, "--lora_r_vit") == "32"  # the rest: recipe
    assert "your environment kept: MODEL" in err
    cmd, err = dry_run("pretrain.sh", tmp_path, RECIPE="sqllava-star-7b-pt2", LR="2e-5", VIT_LORA="1",
                       GLOBAL_BATCH="128", **GPUS)
    assert flag(cmd, "--learning_rate") == "2e-5" and flag(cmd, "--vit_lora_enable") == "True"
    assert global_batch(cmd, 8) == 128 and "your environment kept: VIT_LORA LR GLOBAL_BATCH" in err
    # set to empty is set: VIT_LORA= switches ViT LoRA off over the recipe's VIT_LORA=new
    cmd, _ = dry_run("lora_instruct_tuning.sh", tmp_path, RECIPE="sqllava-star-13b", VIT_LORA="", **GPUS)
    assert flag(cmd, "--vit_lora_enable") == "False" and "--vision_tower_lr" not in cmd


def test_your_pretrain_dir_carries_projector_and_vit_lora(tmp_path, stage1_dir):
    cmd, _ = dry_run("lora_instruct_tuning.sh", tmp_path, RECIPE="sqllava-13b", PRETRAIN_DIR=str(stage1_dir), **GPUS)
    assert flag(cmd, "--pretrain_mm_mlp_adapter") == str(stage1_dir / "mm_projector.bin")
    assert flag(cmd, "--pretrain_lora") == str(stage1_dir / "Vit-lora")
    assert flag(cmd, "--model_name_or_path") == vicuna("13b")


def write_recipe(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.env").write_text(text)


def test_stage_lines_beat_shared_lines_and_the_script_default(tmp_path):
    own = tmp_path / "own"
    write_recipe(own, "mine", '# mine\nSTAGES="1 2"\nLR=3e-3  # both\nSTAGE1_LR=5e-3\nSTAGE2_EPOCHS=2\n'
                              "MODEL='/lm'\n")
    pre, _ = dry_run("pretrain.sh", tmp_path, RECIPE="mine", RECIPE_DIR=str(own), **GPUS)
    lora, _ = dry_run("lora_instruct_tuning.sh", tmp_path, RECIPE="mine", RECIPE_DIR=str(own), **GPUS)
    assert flag(pre, "--learning_rate") == "5e-3" and flag(lora, "--learning_rate") == "3e-3"
    assert flag(pre, "--num_train_epochs") == "1" and flag(lora, "--num_train_epochs") == "2"
    assert flag(pre, "--model_name_or_path") == "/lm" and flag(lora, "--sq_r") == "0.5"  # unset: the default


# ---------------------------------------------------------------------- errors
ALL_STAGE1 = ["sqllava-13b", "sqllava-7b", "sqllava-star-13b-pt2", "sqllava-star-13b", "sqllava-star-7b-pt2",
              "sqllava-star-7b"]


@pytest.mark.parametrize("script,recipe,message", [
    ("pretrain.sh", "sqllava-70b", "RECIPE=sqllava-70b: no such recipe"),
    ("lora_instruct_tuning.sh", "../sqllava-7b", "no such recipe"),
    ("pretrain.sh", "sqllava-7b-from-released-projector",
     "is a recipe for lora_instruct_tuning.sh (stage 2), not for pretrain.sh"),
    ("lora_instruct_tuning.sh", "sqllava-star-7b-pt2",
     "is a recipe for pretrain.sh (stage 1), not for lora_instruct_tuning.sh"),
])
def test_unknown_or_wrong_stage_recipe_lists_the_recipes(tmp_path, script, recipe, message):
    proc = run_script(script, tmp_path, RECIPE=recipe, **GPUS)
    assert proc.returncode == 2 and not proc.stdout and message in proc.stderr, proc.stderr
    listing = proc.stderr.split("recipes for pretrain.sh: ")[1]
    stage1, stage2 = listing.split("; for lora_instruct_tuning.sh: ")
    assert sorted(stage1.strip().split(", ")) == sorted(ALL_STAGE1)
    assert "sqllava-7b-from-released-projector" in stage2 and "pt2" not in stage2


@pytest.mark.parametrize("text,message", [
    ('STAGES="1 2"\nVIT_LORA_RANK=32\n', "stage 1 has no VIT_LORA_RANK"),
    ('STAGES="1 2"\nPRETRAIN_DIR=/x\n', "stage 1 has no PRETRAIN_DIR (STAGE2_PRETRAIN_DIR?)"),
    ('STAGES=1\nSTAGE2_LR=1e-4\n', "leaves out stage 2"),
    ('STAGES=1\nLR=1e-4\nLR=2e-4\n', "sets LR twice"),
    ('STAGES=1\nMODEL=$(whoami)\n', "may hold letters"),
    ('STAGES=1\nexport MODEL=x\n', "not a NAME=value line"),
    ("LR=1e-4\n", "no STAGES= line"),
])
def test_malformed_recipes_are_refused(tmp_path, text, message):
    own = tmp_path / "own"
    write_recipe(own, "bad", text)
    proc = run_script("pretrain.sh", tmp_path, RECIPE="bad", RECIPE_DIR=str(own), **GPUS)
    assert proc.returncode == 2 and not proc.stdout and message in proc.stderr, proc.stderr


# ---------------------------------------------------------------------- stage 2 without a stage-1 Vit-lora/
@pytest.fixture
def projector_only(tmp_path: Path) -> Path:
    """A downloaded stage-1 projector (e.g. ZachSun/Sophon-projector-cluster-pretrain): mm_projector.bin only."""
    folder = tmp_path / "released"
    folder.mkdir()
    (folder / "mm_projector.bin").write_bytes(b"")
    return folder


@pytest.mark.parametrize("recipe", ["", "sqllava-7b-from-released-projector"])
def test_projector_without_vit_lora_starts_a_new_vit_lora(tmp_path, monkeypatch, projector_only, recipe):
    cmd, err = dry_run("lora_instruct_tuning.sh", tmp_path, RECIPE=recipe, PRETRAIN_DIR=str(projector_only), **GPUS)
    assert flag(cmd, "--vit_lora_enable") == "True" and "--pretrain_lora" not in cmd
    assert flag(cmd, "--lora_r_vit") == "64"
    assert flag(cmd, "--pretrain_mm_mlp_adapter") == str(projector_only / "mm_projector.bin")
    assert f"[launch] ViT LoRA: no {projector_only}/Vit-lora/" in err and "a new ViT LoRA r64/a128 starts here" in err
    monkeypatch.chdir(tmp_path)
    _, _, train = parse_args(training_flags(cmd) + CPU_FLAGS)
    assert train.vit_lora_enable and train.vision_tower_lr == 2e-4
    off, off_err = dry_run("lora_instruct_tuning.sh", tmp_path, RECIPE=recipe, PRETRAIN_DIR=str(projector_only),
                           VIT_LORA="0", **GPUS)
    assert flag(off, "--vit_lora_enable") == "False" and "ViT LoRA:" not in off_err


def test_vit_lora_new_ignores_a_stage1_vit_lora(tmp_path, stage1_dir):
    for value in ("new", "1"):
        cmd, _ = dry_run("lora_instruct_tuning.sh", tmp_path, PRETRAIN_DIR=str(stage1_dir), VIT_LORA=value, **GPUS)
        assert flag(cmd, "--vit_lora_enable") == "True" and "--pretrain_lora" not in cmd


@pytest.mark.parametrize("script,env,message", [
    ("lora_instruct_tuning.sh", {"PRETRAIN_DIR": "nowhere"}, "PROJECTOR=nowhere/mm_projector.bin does not exist"),
    ("lora_instruct_tuning.sh", {"RECIPE": "sqllava-star-7b"},
     "run stage 1 first (RECIPE=sqllava-star-7b: the order is at the top of scripts/recipes/sqllava-star-7b.env)"),
    ("pretrain.sh", {"RECIPE": "sqllava-star-7b-pt2"},
     "PROJECTOR=./checkpoints/sqllava-vicuna-7b-pretrain/mm_projector.bin (the projector to start from) "
     "does not exist"),
])
def test_a_real_run_stops_without_the_projector(tmp_path, script, env, message):
    """Not a DRY_RUN: the check runs before the launcher (PYTHON=false in case it did not)."""
    proc = run_script(script, tmp_path, DRY_RUN="0", PYTHON="false", **GPUS, **env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_real_run_stops_without_the_named_vit_lora(tmp_path, projector_only):
    proc = run_script("lora_instruct_tuning.sh", tmp_path, DRY_RUN="0", PYTHON="false",
                      PRETRAIN_DIR=str(projector_only), VIT_LORA=str(tmp_path / "missing"), **GPUS)
    assert proc.returncode == 2 and f"VIT_LORA={tmp_path / 'missing'} does not exist" in proc.stderr, proc.stderr
