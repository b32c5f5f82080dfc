"""One prepared GPU check: the CUDA paths of training, evaluation and the demo, and the speed benchmark, in one run.

    bash scripts/bench/gpu_check.sh [OUT]               # one CUDA GPU, <= 10 minutes on an H100
    bash scripts/bench/gpu_check.sh OUT --cpu-smoke     # tiny shapes on the CPU (what CI runs)

Parts, each timed, logged to OUT/<part>.log and summarised in OUT/summary.{json,md}:
  env     versions, the GPU, the attention choice
  tests   pytest -m gpu (tests/test_gpu.py): projectors and ViT LoRA in bf16/fp16, SDPA vs FlashAttention-2,
          4-bit loading, batched greedy == batch 1
  train   random models at LLaVA-1.5-7B widths (LM depth --lm-layers), ShapesWorld data; stage 1 (pretrain.sh)
          and stage 2 (lora_instruct_tuning.sh) with activation checkpointing on and off, ZeRO-2 on one GPU
          when deepspeed is installed; the outputs reloaded and asked one question
  bench   scripts/bench/bench_vlm.py --preset 7b (tiny with --cpu-smoke): ours vs transformers' Llava
  eval    scripts/eval/pope.sh on a ShapesWorld POPE set, one shard, then its scorer
  demo    the gradio web demo on the device, queried once through gradio_client (/answer)
A part whose optional package is missing (deepspeed, bitsandbytes, gradio) says so and the rest go on. The exit
status is non-zero when any part failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # a machine's own python without `pip install -e .` still finds llava
PARTS = ("env", "tests", "train", "bench", "eval", "demo")


class PartFailed(RuntimeError):
    """A part's command failed; the message names its log."""


class Check:
    """Where the parts write, which device and sizes they use, and what each part reported."""

    def __init__(self, out: Path, smoke: bool, lm_layers: int, steps: int, eval_model: str | None,
                 tokenizer: str | None = None):
        self.out = out
        self.smoke = smoke
        self.device = "cpu" if smoke else "cuda"
        self.lm_layers = lm_layers
        self.steps = steps
        self.eval_model = eval_model
        self.tokenizer = tokenizer
        self.work = out / "work"
        self.results: dict[str, dict] = {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def run(self, part: str, cmd: list[str], timeout: float, env: dict | None = None) -> str:
        """Run `cmd` (logged, appended to OUT/<part>.log); PartFailed on a non-zero exit. Returns its output."""
        log = self.out / f"{part}.log"
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}[exit {proc.returncode}, "
                         f"{time.monotonic() - start:.1f} s]\n\n")
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise PartFailed(f"{cmd[2] if cmd[1] == '-m' else cmd[1]} exited {proc.returncode} (see {log}):\n{tail}")
        return proc.stdout + proc.stderr


def installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- parts
def part_env(check: Check) -> dict:
    import torch

    from llava.model.attention import resolve_attention

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": check.device, "smoke": check.smoke}
    for name in ("transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "flash-attn", "gradio"):
        info[name] = installed(name)
    if check.device == "cuda":
        if not torch.cuda.is_available():
            raise PartFailed("no CUDA GPU is visible (run with --cpu-smoke on a CPU machine)")
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    info["attention"], info["attention_why"] = resolve_attention("auto", check.device)
    (check.out / "env.json").write_text(json.dumps(info, indent=1))
    return info


def part_tests(check: Check) -> dict:
    junit = check.out / "tests.xml"
    try:
        check.run("tests", [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-p",
                            "no:cacheprovider", f"--junitxml={junit}"], timeout=600,
                  env={"LLAVA_TEST_DEVICE": check.device})
    finally:
        counts = _junit_counts(junit)
    return counts


def _junit_counts(path: Path) -> dict:
    if not path.is_file():
        return {}
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {
        "seconds": float(suite.get("time", 0))}


def _models(check: Check) -> dict:
    """Random LM and tower: LLaVA-1.5-7B widths on the GPU (LM depth --lm-layers), tiny ones for the smoke run."""
    import torch

    from llava.model.tiny import write_tiny_language_model, write_tiny_vision_tower

    root = check.work / "models"
    tokenizer = _tokenizer(check, check.work / "tokenizer")
    if check.smoke:
        lm = write_tiny_language_model(root / "lm", tokenizer, hidden_size=64, num_layers=2)
        tower = write_tiny_vision_tower(root / "tower", image_size=48, patch_size=16, hidden_size=32)
    else:
        lm = write_tiny_language_model(root / "lm", tokenizer, hidden_size=4096, intermediate_size=11008,
                                       num_layers=check.lm_layers, num_heads=32, dtype=torch.bfloat16)
        tower = write_tiny_vision_tower(root / "tower", image_size=336, patch_size=14, hidden_size=1024,
                                        num_layers=24, num_heads=16, dtype=torch.bfloat16)
    return {"lm": lm, "tower": tower}


def _tokenizer(check: Check, out: Path) -> Path:
    """A LLaMA-family SentencePiece tokenizer (32000 pieces): --tokenizer, else the one mistral-common ships."""
    if check.tokenizer:
        return Path(check.tokenizer)
    if installed("mistral-common") is None:
        raise PartFailed("no tokenizer: install the test extra (mistral-common) or pass --tokenizer DIR "
                         "(any LLaMA tokenizer folder, e.g. one copied from lmsys/vicuna-7b-v1.5)")
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import write_llama_tokenizer

    return write_llama_tokenizer(out, legacy=True)


def _data(check: Check) -> Path:
    data = check.work / "data"
    if not (data / "instruct.json").is_file():
        check.run("train", [sys.executable, "-m", "llava.shapesworld", "--out", str(data), "--seed", "0",
                            "--n-pretrain", "64", "--n-instruct", "64", "--n-eval", "12", "--image-size", "48"],
                  timeout=300)
    return data


def _losses(run_dir: Path) -> dict:
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    final = next((h for h in history if "train_runtime" in h), {})
    return {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "train_runtime_s": final.get("train_runtime"), "samples_per_s": final.get("train_samples_per_second")}


def part_train(check: Check) -> dict:
    from llava.serve.process import free_port

    models = _models(check)
    data = _data(check)
    zero2 = installed("deepspeed") is not None
    batch = "2" if check.smoke else "4"
    common_env = {"DEVICE": "cpu" if check.smoke else "gpu", "NUM_GPUS": "1", "RESUME": "0",
                  "DS_CONFIG": str(REPO / "scripts/zero2.json") if zero2 else "none", "PYTHON": sys.executable,
                  "MODEL": str(models["lm"]), "VISION_TOWER": str(models["tower"]), "IMAGE_FOLDER": str(data / "images"),
                  "PER_DEVICE_BATCH": batch, "GLOBAL_BATCH": batch, "SAVE_STEPS": str(max(1, check.steps // 2)),
                  "MASTER_PORT": str(free_port()), "NUM_WORKERS": "2"}
    flags = ["--max_steps", str(check.steps), "--logging_steps", "1", "--model_max_length", "1024",
             "--mm_cluster_centers", "16", "--report_to", "none"]
    report: dict = {"zero2": zero2, "lm_layers": None if check.smoke else check.lm_layers}
    stage1 = check.work / "stage1"
    check.run("train", ["bash", "pretrain.sh", *flags],
              env={**common_env, "DATA_PATH": str(data / "pretrain.json"), "OUTPUT_DIR": str(stage1)}, timeout=900)
    report["stage1"] = _losses(stage1)
    for checkpointing in ("True", "False"):
        out = check.work / f"stage2_ckpt{checkpointing}"
        check.run("train", ["bash", "lora_instruct_tuning.sh", *flags, "--gradient_checkpointing", checkpointing],
                  env={**common_env, "DATA_PATH": str(data / "instruct.json"), "OUTPUT_DIR": str(out),
                       "PRETRAIN_DIR": str(stage1), "MASTER_PORT": str(free_port())}, timeout=900)
        report[f"stage2_checkpointing_{checkpointing.lower()}"] = _losses(out)
    answer = check.run("train", [sys.executable, "-m", "llava.eval.run_llava", "--model-path",
                                 str(check.work / "stage2_ckptTrue"), "--model-base", str(models["lm"]),
                                 "--image-file", str(next((data / "images").iterdir())), "--query", "What is this?",
                                 "--device", check.device, "--max_new_tokens", "8", "--temperature", "0"],
                       timeout=600)
    report["reloaded_answer"] = answer.strip().splitlines()[-1][:80] if answer.strip() else ""
    return report


def part_bench(check: Check) -> dict:
    out = check.out / "bench.json"
    preset = "tiny" if check.smoke else "7b"
    check.run("bench", [sys.executable, "scripts/bench/bench_vlm.py", "--preset", preset, "--out", str(out)],
              timeout=900)
    result = json.loads(out.read_text())
    return {"preset": preset, "rows": len(result.get("train", [])) + len(result.get("generate", []))}


def _pope_layout(check: Check) -> Path:
    """LLaVA-1.5's eval layout (pope/llava_pope_test.jsonl, coco/, val2014/) over the ShapesWorld POPE set."""
    data = _data(check)
    root = check.work / "eval"
    pope = root / "pope"
    check.run("eval", [sys.executable, "-m", "llava.quickstart.evaluate", "--prepare-pope", str(data / "eval/pope"),
                       str(pope / "coco")], timeout=120)
    shutil.move(str(pope / "coco" / "questions.jsonl"), pope / "llava_pope_test.jsonl")
    if not (pope / "val2014").exists():
        (pope / "val2014").symlink_to((data / "images").resolve())
    return root


def _eval_model(check: Check) -> tuple[str, str | None]:
    if check.eval_model:
        return check.eval_model, None
    quickstart = REPO / "checkpoints" / "sqllava-tiny"
    if (quickstart / "config.json").is_file():
        return str(quickstart), None
    stage2 = check.work / "stage2_ckptTrue"
    if not (stage2 / "adapter_config.json").is_file():
        raise PartFailed("no model to evaluate: build the quickstart model, pass --eval-model, or run the train part")
    return str(stage2), str(check.work / "models" / "lm")


def part_eval(check: Check) -> dict:
    root = _pope_layout(check)
    model, base = _eval_model(check)
    env = {"MODEL_PATH": model, "EVAL_DIR": str(root), "CKPT": "gpu-check", "PYTHON": sys.executable,
           "CHUNKS": "1", "BATCH_SIZE": "16", "EXTRA_ARGS": f"--max_new_tokens 4 --device {check.device}"}
    if base:
        env["MODEL_BASE"] = base
    if check.smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""
    check.run("eval", ["bash", "scripts/eval/pope.sh"], env=env, timeout=600)
    result = json.loads((root / "pope/answers/gpu-check/result.json").read_text())
    return {"model": model, "mean_f1": result.get("mean_f1"), "mean_accuracy": result.get("mean_accuracy")}



def part_demo(check: Check) -> dict:
    if installed("gradio") is None or installed("gradio_client") is None:
        return {"not_run": "gradio / gradio_client not installed"}
    from gradio_client import Client, handle_file

    sys.path.insert(0, str(REPO / "tests"))
    from serve_common import running_server  # the demo tests' launcher: start, wait for /config, stop

    model, base = _eval_model(check)
    args = ["-m", "llava.serve.gradio_web_server", "--model-path", model, "--device", check.device] + (
        ["--model-base", base] if base else [])
    start = time.monotonic()
    with running_server(args, check.out / "demo.log", timeout=300) as url:
        up = time.monotonic() - start
        image = next((check.work / "data" / "images").iterdir()) if (check.work / "data").is_dir() else \
            REPO / "llava/serve/examples/shapes_2.png"
        asked = time.monotonic()
        answer = Client(url, verbose=False).predict(handle_file(str(image)), "What color is the circle?", 0.0, 8,
                                                    api_name="/answer")
    return {"startup_s": round(up, 1), "answer_s": round(time.monotonic() - asked, 2), "answer": str(answer)[:80]}


# ---------------------------------------------------------------------------------------------- driver
def write_summary(check: Check, total: float) -> None:
    (check.out / "summary.json").write_text(json.dumps({"total_s": round(total, 1), "parts": check.results},
                                                       indent=1, default=str))
    lines = ["| part | status | seconds | detail |", "|---|---|---|---|"]
    for name, r in check.results.items():
        detail = r.get("error") or json.dumps(r.get("report", {}), default=str)
        detail = detail.replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {name} | {r['status']} | {r['seconds']:.1f} | {detail} |")
    lines.append(f"| total | | {total:.1f} | |")
    (check.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", default=os.environ.get("OUT") or "gpu_check_out", help="output folder")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (CI)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--lm-layers", type=int, default=4, help="LM depth of the train part at 7B widths")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per training run (20; smoke 4)")
    p.add_argument("--tokenizer", default=None, help="LLaMA tokenizer folder (default: mistral-common's)")
    p.add_argument("--eval-model", default=None,
                   help="model for eval/demo (default: checkpoints/sqllava-tiny, else the train part's stage 2)")
    a = p.parse_args(argv)
    parts = [x for x in a.parts.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, a.cpu_smoke, a.lm_layers, a.steps or (4 if a.cpu_smoke else 20), a.eval_model, a.tokenizer)
    check.work.mkdir(exist_ok=True)
    functions = {"env": part_env, "tests": part_tests, "train": part_train, "bench": part_bench,
                 "eval": part_eval, "demo": part_demo}
    t0 = time.monotonic()
    for name in parts:
        start = time.monotonic()
        print(f"[gpu-check] {name} ...", flush=True)
        try:
            report = functions[name](check)
            status = "not run" if "not_run" in report else "ok"
            check.results[name] = {"status": status, "report": report}
        except Exception as err:  # every part is reported, whatever broke it
            check.results[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        check.results[name]["seconds"] = time.monotonic() - start
        print(f"[gpu-check] {name}: {check.results[name]['status']} in {check.results[name]['seconds']:.1f} s",
              flush=True)
    write_summary(check, time.monotonic() - t0)
    return 1 if any(r["status"] == "failed" for r in check.results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
