"""The stage scripts' launcher (DRY_RUN): nodes, processes and the recipe's global batch on any cluster, SLURM,
the multi-node errors, checkpoint/resume flags and the ViT LoRA switch."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from llava.train.arguments import parse_args

REPO = Path(__file__).resolve().parents[1]
# Variables a developer's shell may hold that would change what the scripts print.
LAUNCH_VARS = ("NUM_GPUS", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "HOSTFILE", "LAUNCHER", "RESUME",
               "RDZV_ENDPOINT", "RDZV_ID", "PER_DEVICE_BATCH", "GLOBAL_BATCH", "VIT_LORA", "SAVE_STEPS",
               "CUDA_VISIBLE_DEVICES", "DEVICE", "PRETRAIN_DIR", "DRY_RUN",
               # what a recipe (scripts/recipes/*.env) or its variables would change
               "RECIPE", "RECIPE_DIR", "MODEL", "VISION_TOWER", "DATA_PATH", "IMAGE_FOLDER", "OUTPUT_DIR",
               "PROJECTOR", "LR", "EPOCHS", "LORA_R", "LORA_ALPHA", "VIT_LORA_R", "VIT_LORA_ALPHA", "VISION_TOWER_LR",
               "PROJECTOR_LR", "SQ_R", "IMAGE_ASPECT_RATIO", "DS_CONFIG", "SAVE_TOTAL_LIMIT")
CPU_FLAGS = ["--use_cpu", "True", "--bf16", "False", "--tf32", "False"]


@pytest.fixture(autouse=True)
def _forget_deepspeed_config():
    """Parsing --deepspeed registers a global ZeRO config; later in-process model loads must not see it."""
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def run_script(script: str, cwd: Path, *args: str, path_prepend: Path | None = None,
               **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    full_env.update({"DRY_RUN": "1", **env})  # env may turn DRY_RUN off (a real run that must stop early)
    if path_prepend is not None:
        full_env["PATH"] = f"{path_prepend}:{full_env['PATH']}"
    return subprocess.run(["bash", str(REPO / script), *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=60)


def dry_run(script: str, cwd: Path, *args: str, **env: str) -> tuple[list[str], str]:
    """(the printed command as argv, stderr) of a successful DRY_RUN."""
    proc = run_script(script, cwd, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout), proc.stderr


def flag(cmd: list[str], name: str) -> str:
    """The value of the last `name` in cmd (the last copy of a flag wins in HfArgumentParser)."""
    return cmd[len(cmd) - 1 - cmd[::-1].index(name) + 1]


def global_batch(cmd: list[str], processes: int) -> int:
    return processes * int(flag(cmd, "--per_device_train_batch_size")) * int(flag(cmd, "--gradient_accumulation_steps"))




# ---------------------------------------------------------------------- the global batch on any cluster
@pytest.mark.parametrize("script,recipe", [("pretrain.sh", 256), ("lora_instruct_tuning.sh", 128)])
@pytest.mark.parametrize("nodes,gpus", [(1, 1), (1, 8), (2, 8), (4, 8)])
def test_torchrun_keeps_the_global_batch(tmp_path, script, recipe, nodes, gpus):
    env = {"NUM_GPUS": str(gpus), "NNODES": str(nodes)}
    if nodes > 1:
        env.update(MASTER_ADDR="10.0.0.1", NODE_RANK="1")
    cmd, err = dry_run(script, tmp_path, **env)
    assert flag(cmd, "--nnodes") == str(nodes) and flag(cmd, "--nproc_per_node") == str(gpus)
    assert global_batch(cmd, nodes * gpus) == recipe
    assert f"{nodes} node(s) x {gpus} GPU(s) = {nodes * gpus} processes" in err and f"global batch {recipe}" in err
    if nodes > 1:
        assert flag(cmd, "--master_addr") == "10.0.0.1" and flag(cmd, "--node_rank") == "1"


def test_the_per_device_batch_shrinks_when_the_cluster_is_larger_than_the_recipe(tmp_path):
    """4 nodes x 8 GPUs x 16 = 512 > 256: the per-device batch becomes 8, accumulation 1, with a line saying so."""
    cmd, err = dry_run("pretrain.sh", tmp_path, NUM_GPUS="8", NNODES="4", MASTER_ADDR="10.0.0.1", NODE_RANK="0")
    assert flag(cmd, "--per_device_train_batch_size") == "8" and flag(cmd, "--gradient_accumulation_steps") == "1"
    assert "per-device batch 16 -> 8" in err


@pytest.mark.parametrize("script,recipe", [("pretrain.sh", 256), ("lora_instruct_tuning.sh", 128)])
def test_deepspeed_hostfile_decides_nodes_and_gpus(tmp_path, script, recipe):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nworker-0 slots=8\nworker-1 slots=8  # second\n\n")
    cmd, err = dry_run(script, tmp_path, LAUNCHER="deepspeed", HOSTFILE=str(hostfile))
    assert cmd[0] == "deepspeed" and flag(cmd, "--hostfile") == str(hostfile) and "--num_gpus" not in cmd
    assert flag(cmd, "--module") == "llava.train.train"
    assert global_batch(cmd, 16) == recipe  # 2 x 8 processes, not the 8 of one node
    assert "2 node(s) x 8 GPU(s) = 16 processes" in err


@pytest.mark.parametrize("hostfile_text,env,message", [
    ("worker-0 slots=8\nworker-1 slots=4\n", {}, "different slot counts"),
    ("worker-0\n", {}, "has no 'slots=N'"),
    ("worker-0 slots=8\nworker-1 slots=8\n", {"NNODES": "1"}, "NNODES=1 but HOSTFILE"),
])
def test_bad_hostfiles_are_refused(tmp_path, hostfile_text, env, message):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(hostfile_text)
    proc = run_script("pretrain.sh", tmp_path, LAUNCHER="deepspeed", HOSTFILE=str(hostfile), **env)
    assert proc.returncode != 0 and message in proc.stderr and not proc.stdout


@pytest.mark.parametrize("env,message", [
    ({"NNODES": "2", "NUM_GPUS": "8"}, "NNODES=2 needs MASTER_ADDR"),
    ({"NNODES": "2", "NUM_GPUS": "8", "MASTER_ADDR": "10.0.0.1"}, "NNODES=2 needs NODE_RANK"),
    ({"NUM_GPUS": "8", "PER_DEVICE_BATCH": "3"}, "not a multiple"),
    ({"NUM_GPUS": "0"}, "NUM_GPUS=0 must be a positive integer"),
    ({"LAUNCHER": "mpirun"}, "LAUNCHER=mpirun"),
    ({"SAVE_STEPS": "often"}, "SAVE_STEPS=often"),
])
def test_launch_errors_say_what_to_set(tmp_path, env, message):
    proc = run_script("pretrain.sh", tmp_path, **env)
    assert proc.returncode != 0 and message in proc.stderr and not proc.stdout, proc.stderr


def test_slurm_script_uses_the_allocation(tmp_path):
    """sbatch file -> launch_stage.sh -> srun (one task per node) -> the stage script with a c10d rendezvous."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "scontrol": '#!/bin/sh\nprintf "gpu-node-17\\ngpu-node-18\\n"\n',
        # one "node" is enough to see the command; record srun's own options
        "srun": '#!/bin/sh\necho "$@" > "$SRUN_LOG"\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n',
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    slurm_env = {"SLURM_JOB_NODELIST": "gpu-node-[17-18]", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8",
                 "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(REPO), "SRUN_LOG": str(tmp_path / "srun.txt")}
    proc = run_script("scripts/slurm/lora_instruct_tuning.sbatch", tmp_path, "--num_train_epochs", "2",
                      path_prepend=bin_dir, **slurm_env)
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout)
    assert flag(cmd, "--nnodes") == "2" and flag(cmd, "--nproc_per_node") == "8"
    assert flag(cmd, "--rdzv_endpoint") == "gpu-node-17:29500" and flag(cmd, "--rdzv_id") == "4242"
    assert "--master_addr" not in cmd and "--node_rank" not in cmd
    assert global_batch(cmd, 16) == 128 and flag(cmd, "--num_train_epochs") == "2"
    assert "--ntasks-per-node=1" in (tmp_path / "srun.txt").read_text()
    sbatch_lines = (REPO / "scripts/slurm/pretrain.sbatch").read_text().splitlines()
    assert "#SBATCH --ntasks-per-node=1" in sbatch_lines and "#SBATCH --requeue" in sbatch_lines


def test_slurm_launcher_outside_slurm_is_an_error(tmp_path):
    proc = run_script("scripts/slurm/launch_stage.sh", tmp_path, "pretrain.sh")
    assert proc.returncode == 2 and "not inside a SLURM job" in proc.stderr


# ---------------------------------------------------------------------- checkpoints, ViT LoRA, flags
def test_checkpoints_and_resume_by_default(tmp_path, stage1_dir):
    pre, _ = dry_run("pretrain.sh", tmp_path, NUM_GPUS="8")
    lora, _ = dry_run("lora_instruct_tuning.sh", tmp_path, NUM_GPUS="8", PRETRAIN_DIR=str(stage1_dir))
    # ~2.2k and ~5.2k steps per stage on 8 GPUs: a complete checkpoint every 500 / 400 steps, two kept
    assert flag(pre, "--save_steps") == "500" and flag(lora, "--save_steps") == "400"
    assert flag(pre, "--save_total_limit") == "2" and flag(lora, "--resume_from_checkpoint") == "True"
    fresh, _ = dry_run("pretrain.sh", tmp_path, NUM_GPUS="8", RESUME="0", SAVE_STEPS="50")
    assert "--resume_from_checkpoint" not in fresh and flag(fresh, "--save_steps") == "50"


@pytest.mark.parametrize("value", ["", "0"])
def test_vit_lora_switch(tmp_path, stage1_dir, value):
    on, _ = dry_run("lora_instruct_tuning.sh", tmp_path, NUM_GPUS="8", PRETRAIN_DIR=str(stage1_dir))
    assert flag(on, "--vit_lora_enable") == "True" and flag(on, "--pretrain_lora") == str(stage1_dir / "Vit-lora")
    off, _ = dry_run("lora_instruct_tuning.sh", tmp_path, NUM_GPUS="8", PRETRAIN_DIR=str(stage1_dir), VIT_LORA=value)
    assert flag(off, "--vit_lora_enable") == "False" and "--pretrain_lora" not in off
    pre_off, _ = dry_run("pretrain.sh", tmp_path, NUM_GPUS="8", VIT_LORA=value)
    assert flag(pre_off, "--vit_lora_enable") == "False" and "--lora_r_vit" not in pre_off
    for cmd in (off, pre_off):  # and the flags still make a valid run (no tower learning rate without ViT LoRA)
        _, _, train = parse_args(cmd[cmd.index("-m", cmd.index("--nproc_per_node")) + 2 :] + CPU_FLAGS)
        assert not train.vit_lora_enable and train.vision_tower_lr is None


def test_scripts_flags_parse_and_cpu_mode(tmp_path, stage1_dir):
    """Both scripts' flags are valid names; DEVICE=cpu switches to --use_cpu, fp32 and sdpa."""
    pre, _ = dry_run("pretrain.sh", tmp_path, NUM_GPUS="8")
    assert flag(pre, "--version") == "plain" and flag(pre, "--learning_rate") == "1e-3"
    assert flag(pre, "--bf16") == "True" and "llava.train.train" in pre and "--attn_implementation" not in pre
    cpu, _ = dry_run("lora_instruct_tuning.sh", tmp_path, DEVICE="cpu", PRETRAIN_DIR=str(stage1_dir), NUM_GPUS="2",
                     PER_DEVICE_BATCH="4", GLOBAL_BATCH="8")
    assert flag(cpu, "--use_cpu") == "True" and flag(cpu, "--bf16") == "False" and flag(cpu, "--tf32") == "False"
    assert flag(cpu, "--attn_implementation") == "sdpa" and flag(cpu, "--gradient_accumulation_steps") == "1"
    for cmd in (pre, cpu):
        flags = cmd[cmd.index("-m", cmd.index("--nproc_per_node")) + 2 :]
        model, data, train = parse_args(flags + CPU_FLAGS)
        assert model.mm_projector_type == "cluster" and train.vit_lora_enable
        assert train.resume_from_checkpoint == "True" and train.save_total_limit == 2
    assert flag(cpu, "--sq_r") == "0.5" and flag(cpu, "--lora_r") == "128" and flag(cpu, "--mm_projector_lr") == "2e-5"
