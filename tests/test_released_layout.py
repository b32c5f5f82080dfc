"""A tiny replica of the released SQ-LLaVA repository layout (ZachSun/sqllava-lora-7b): adapter_config.json +
adapter_model.bin + non_lora_trainables.bin + Vit-lora/ + a config.json, whose tower and base are paths on the
authors' machine. A benchmark entry point answers with --model-base/--vision-tower, and without them stops with one
line naming each missing path and its flag; a base other than the released one is a warning (same shapes) or an
error naming the right base (other shapes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_eval_scripts import _answering_calls, fake_python  # noqa: F401 - fake_python is a fixture

from llava.eval import model_vqa_loader
from llava.model import compat, lora, released
from llava.model.builder import CheckpointFormatError, load_pretrained_model
from llava.serve import cli

ROOT = Path(__file__).resolve().parents[1]
AUTHORS_TOWER = "/home/authors/ShareGPT4V-7B_Pretrained_vit-large336-l12"
AUTHORS_BASE = "/home/authors/checkpoints/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5"
RIGHT_BASE = released.SHAREGPT4V_7B_LLM


pytestmark = pytest.mark.usefixtures("one_thread")


def _to_bin(directory: Path, stem: str) -> None:
    """The released files are torch pickles (`.bin`), not safetensors."""
    file = directory / f"{stem}.safetensors"
    if file.is_file():
        torch.save(load_file(str(file)), directory / f"{stem}.bin")
        file.unlink()


def write_released_replica(out: Path, model) -> dict:
    """The released layout, written with our savers and then made to look like the release: .bin files, the
    reference's duplicate ViT-LoRA tensors in the LLM adapter (docs/reference.md#d14-duplicate-vit-lora-tensors), no tokenizer or processor files, a config.json
    without the tower's config whose mm_vision_tower and adapter base are paths on the authors' machine."""
    lora.add_llm_lora(model, lora.llm_lora_config(model.language_model, r=4, alpha=8, dropout=0.05))
    lora.add_vit_lora(model, lora.vit_lora_config(r=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    lora.save_llm_adapter(model, out)
    lora.save_vit_adapter(model, out / compat.VIT_LORA_DIR)
    compat.save_non_lora_trainables({f"mm_projector.{k}": v for k, v in model.mm_projector.state_dict().items()}, out)
    _to_bin(out, "adapter_model")
    _to_bin(out / compat.VIT_LORA_DIR, "adapter_model")
    _to_bin(out, "non_lora_trainables")
    adapter = torch.load(out / "adapter_model.bin", weights_only=True)
    vit = torch.load(out / compat.VIT_LORA_DIR / "adapter_model.bin", weights_only=True)
    adapter.update({k.replace("base_model.model.", "base_model.model.model.vision_tower.", 1): v for k, v in vit.items()})
    torch.save(adapter, out / "adapter_model.bin")
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = AUTHORS_BASE
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))

    data = model.config.to_dict()
    data.pop("mm_vision_config", None)
    data.update(model_type="llava", architectures=["LlavaLlamaForCausalLM"], mm_vision_tower=AUTHORS_TOWER,
                image_aspect_ratio="pad", dtype="float32")
    (out / "config.json").write_text(json.dumps(data))
    (out / "trainer_state.json").write_text("{}")
    expected = {"lm": model.language_model.merge_and_unload().state_dict(),
                "tower": model.vision_tower.merge_and_unload().state_dict()}
    assert sorted(p.name for p in out.iterdir()) == ["Vit-lora", "adapter_config.json", "adapter_model.bin",
                                                      "config.json", "non_lora_trainables.bin", "trainer_state.json"]
    return expected


@pytest.fixture(scope="module")
def replica(tmp_path_factory, tiny_foundation):
    from llava.model.builder import load_language_model, load_vision_tower
    from llava.model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.tiny import tiny_llava_config

    torch.manual_seed(3)
    config = tiny_llava_config(tiny_foundation["lm"], tiny_foundation["tower"], "cluster")
    model = LlavaLlamaForCausalLM(config, language_model=load_language_model(tiny_foundation["lm"], config, torch.float32),
                                  vision_tower=load_vision_tower(config, None, torch.float32)).eval()
    out = tmp_path_factory.mktemp("hub") / "sqllava-lora-7b"
    out.mkdir()
    expected = write_released_replica(out, model)
    return {"dir": out, "expected": expected}


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("released_eval")
    (root / "images").mkdir()
    for i in range(2):
        g = torch.Generator().manual_seed(i)
        Image.fromarray((torch.rand(20 + 8 * i, 28, 3, generator=g) * 255).to(torch.uint8).numpy()).save(
            root / "images" / f"{i}.png")
    rows = [{"question_id": f"q{i}", "image": f"{i % 2}.png", "text": f"What is in the image? ({i})"} for i in range(3)]
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _eval_args(replica_dir: Path, questions: Path, answers: Path, *extra: str) -> list[str]:
    return ["--model-path", str(replica_dir), "--image-folder", str(questions / "images"),
            "--question-file", str(questions / "questions.jsonl"), "--answers-file", str(answers),
            "--device", "cpu", "--dtype", "fp32", "--max_new_tokens", "4", "--batch-size", "2",
            "--num-workers", "1", "--no-progress", *extra]


def test_benchmark_answers_with_base_and_tower_overrides(replica, questions, tiny_foundation, tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    model_vqa_loader.main(_eval_args(replica["dir"], questions, answers, "--model-base", str(tiny_foundation["lm"]),
                                     "--vision-tower", str(tiny_foundation["tower"])))
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == ["q0", "q1", "q2"]
    assert all("error" not in r and r["text"] for r in rows)
    meta = json.loads((tmp_path / "answers.jsonl.meta.json").read_text())
    assert meta["fingerprint"]["vision_tower"] == str(tiny_foundation["tower"])
    assert meta["runs"][-1]["engine"]["vision_tower"] == str(tiny_foundation["tower"])
    err = capsys.readouterr().err
    # The tiny base is not ShareGPT4V's LLM: the released checkpoint is recognised and the right base named.
    assert "[llava] WARNING" in err and f"--model-base {RIGHT_BASE}" in err and "sqllava-lora-7b" in err


def test_overrides_load_the_trained_weights(replica, tiny_foundation, tmp_path, capsys):
    """The base given under ShareGPT4V's name: no warning; LLM LoRA and Vit-lora are merged onto the given tower."""
    base = tmp_path / "ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5"
    os.symlink(tiny_foundation["lm"], base)
    _, model, processor, _ = load_pretrained_model(replica["dir"], model_base=base, vision_tower=tiny_foundation["tower"])
    assert "WARNING" not in capsys.readouterr().err
    assert model.config.mm_vision_tower == str(tiny_foundation["tower"]) and processor.crop_size["height"] == 32
    key = "encoder.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(model.vision_tower.vision_tower.state_dict()[key],
                               replica["expected"]["tower"][f"vision_tower.{key}"])
    lm_key = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(model.language_model.state_dict()[lm_key], replica["expected"]["lm"][lm_key])


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_without_overrides_one_line_names_paths_and_flags(replica, questions, tiny_foundation, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        model_vqa_loader.main(_eval_args(replica["dir"], questions, tmp_path / "a.jsonl"))
    assert exit_info.value.code == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert AUTHORS_BASE in line and f"--model-base {RIGHT_BASE}" in line
    assert AUTHORS_TOWER in line and f"--vision-tower {released.SHAREGPT4V_7B_TOWER}" in line

    # --model-base alone: only the tower is left to name.
    with pytest.raises(SystemExit):
        model_vqa_loader.main(_eval_args(replica["dir"], questions, tmp_path / "a.jsonl",
                                         "--model-base", str(tiny_foundation["lm"])))
    (line,) = _error_lines(capsys.readouterr().err)
    assert AUTHORS_TOWER in line and "--vision-tower" in line and AUTHORS_BASE not in line
    assert not (tmp_path / "a.jsonl").exists() or not (tmp_path / "a.jsonl").read_text()

    # An override that does not exist is named as such.
    with pytest.raises(SystemExit):
        model_vqa_loader.main(_eval_args(replica["dir"], questions, tmp_path / "a.jsonl", "--model-base",
                                         str(tiny_foundation["lm"]), "--vision-tower", "./nowhere/tower"))
    (line,) = _error_lines(capsys.readouterr().err)
    assert "--vision-tower ./nowhere/tower does not exist" in line


def test_base_of_other_shape_is_an_error_naming_the_right_base(replica, tiny_foundation, tmp_path):
    from llava.model.tiny import write_tiny_language_model

    vicuna = write_tiny_language_model(tmp_path / "vicuna-7b-v1.5", tiny_foundation["tokenizer"], hidden_size=48)
    with pytest.raises(CheckpointFormatError) as info:
        load_pretrained_model(replica["dir"], model_base=vicuna, vision_tower=tiny_foundation["tower"])
    message = str(info.value)
    assert f"--model-base {vicuna} does not fit" in message and "hidden_size 48 vs 32" in message
    assert f"--model-base {RIGHT_BASE}" in message


def test_recorded_base_is_the_default(tmp_path, tiny_model_factory, tiny_foundation, capsys):
    """Our own LoRA checkpoint without --model-base loads onto the adapter's recorded base, with no warning."""
    out = tmp_path / "run-lora"
    out.mkdir()
    model = tiny_model_factory("mlp2x_gelu", seed=5)
    write_released_replica(out, model)
    data = json.loads((out / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = str(tiny_foundation["lm"])
    (out / "adapter_config.json").write_text(json.dumps(data))
    data = json.loads((out / "config.json").read_text())
    data["mm_vision_tower"] = str(tiny_foundation["tower"])
    (out / "config.json").write_text(json.dumps(data))
    _, loaded, _, _ = load_pretrained_model(out)
    assert "WARNING" not in capsys.readouterr().err
    assert loaded.language_model.config.hidden_size == 32
    # Another base of the same shape, passed explicitly, is this checkpoint's business: no released name, no warning.
    other = tmp_path / "vicuna-7b-v1.5"
    os.symlink(tiny_foundation["lm"], other)
    load_pretrained_model(out, model_base=other)
    assert "WARNING" not in capsys.readouterr().err


def test_identify_released_checkpoints(tmp_path):
    entry = released.RELEASED[0]
    assert released.identify(tmp_path, {}, AUTHORS_BASE)[0] == entry
    assert released.identify(tmp_path, {}, RIGHT_BASE)[0] == entry
    assert released.identify(tmp_path, {"mm_vision_tower": AUTHORS_TOWER}, None)[0] == entry
    assert released.identify(tmp_path, {"mm_vision_tower": released.SHAREGPT4V_13B_TOWER}, None)[0].repo == \
        "ZachSun/sqllava-lora-13b"
    cache = tmp_path / "models--ZachSun--sqllava-lora-7b" / "snapshots" / "abc123"
    assert released.identify(cache, {"mm_vision_tower": released.CLIP_L14_336}, None)[0] == entry
    # A run of ours on Vicuna + the OpenAI tower is none of them, whatever its folder is called.
    own = {"mm_vision_tower": released.CLIP_L14_336}
    assert released.identify(tmp_path / "run-lora", own, "lmsys/vicuna-7b-v1.5") is None
    assert released.identify(tmp_path / "sqllava-lora-7b", own, "lmsys/vicuna-7b-v1.5") is None
    # Names of a base: its folder, the repo of a hub cache path, the _name_or_path in its config.json.
    local = tmp_path / "my-base"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": RIGHT_BASE}))
    assert released.same_model(local, RIGHT_BASE) and released.same_model(RIGHT_BASE, RIGHT_BASE)
    assert released.same_model("/x/models--Lin-Chen--ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5/"
                               "snapshots/0d4ba7a", RIGHT_BASE)
    assert not released.same_model("lmsys/vicuna-7b-v1.5", RIGHT_BASE)


def test_missing_local_paths():
    assert released.is_missing_local_path(AUTHORS_TOWER) and released.is_missing_local_path("./not/here")
    assert released.is_missing_local_path("a/b/c") and released.is_missing_local_path("~/nothing-here-xyz")
    assert not released.is_missing_local_path("openai/clip-vit-large-patch14-336")  # a hub id
    assert not released.is_missing_local_path(None) and not released.is_missing_local_path(".")


@pytest.mark.parametrize("module", [model_vqa_loader, cli])
def test_vision_tower_flag(module):
    base = ["--question-file", "q", "--answers-file", "a", "--model-path", "m"] if module is model_vqa_loader else []
    args = module.build_parser().parse_args([*base, "--vision-tower", "t"])
    assert args.vision_tower == "t"
    assert module.build_parser().parse_args([*base, "--vision_tower", "u"]).vision_tower == "u"
    assert module.build_parser().parse_args(base).vision_tower is None


def test_full_checkpoint_naming_a_missing_tower(tmp_path, tiny_foundation):
    """A merged reference checkpoint holds the tower's weights but only names its config: --vision-tower supplies it."""
    from conftest import write_tiny_checkpoint

    out = write_tiny_checkpoint(tmp_path / "merged", tiny_foundation, seed=2)
    data = json.loads((out / "config.json").read_text())
    data.pop("mm_vision_config")
    data["mm_vision_tower"] = AUTHORS_TOWER
    (out / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointFormatError, match=f"names the vision tower {AUTHORS_TOWER}.*--vision-tower "
                                                    f"{released.SHAREGPT4V_7B_TOWER}"):
        load_pretrained_model(out)
    _, model, _, _ = load_pretrained_model(out, vision_tower=tiny_foundation["tower"])
    assert model.config.mm_vision_tower == str(tiny_foundation["tower"])


def test_eval_scripts_pass_model_base_and_vision_tower(fake_python):  # noqa: F811 - the imported fixture
    env, read_calls = fake_python
    env = dict(env, CHUNKS="1", MODEL_BASE="./checkpoints/b", VISION_TOWER="./checkpoints/t")
    done = subprocess.run(["bash", "scripts/eval/pope.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ((_, _, args),) = _answering_calls(read_calls())
    assert (args.model_base, args.vision_tower) == ("./checkpoints/b", "./checkpoints/t")


def _download(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), "scripts/download_models.sh", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_download_script_dry_run_and_errors(tmp_path):
    env = dict(os.environ, DRY_RUN="1", MODELS="7b train-7b sqllava-lora-7b")
    done = _download(env, "--max-workers", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    repos = [line.split()[2] for line in lines]
    assert repos == ["ZachSun/sqllava-lora-7b", RIGHT_BASE, released.SHAREGPT4V_7B_TOWER, "lmsys/vicuna-7b-v1.5",
                     released.CLIP_L14_336, "ZachSun/Sophon-projector-cluster-pretrain"]  # once each, in order
    assert lines[1].split()[1] == "download" and lines[1].split()[0] in ("hf", "huggingface-cli")
    assert lines[1].endswith(f"--local-dir ./checkpoints/{RIGHT_BASE.split('/')[1]} --max-workers 2")
    everything = _download(dict(env, MODELS="all")).stdout.splitlines()
    for repo in ("ZachSun/sqllava-lora-13b", released.SHAREGPT4V_13B_LLM, released.SHAREGPT4V_13B_TOWER,
                 "lmsys/vicuna-13b-v1.5", "ZachSun/sqllava-13b-vlora-665k"):
        assert any(line.split()[2] == repo for line in everything)

    unknown = _download(dict(env, MODELS="7b vicuna"))
    assert unknown.returncode == 2 and "unknown model 'vicuna'" in unknown.stderr and not unknown.stdout

    bin_dir = tmp_path / "bin"  # a PATH with neither hf nor huggingface-cli
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    missing = _download(dict(env, DRY_RUN="0", PATH=str(bin_dir)))
    assert missing.returncode == 127 and "pip install -U huggingface_hub" in missing.stderr
    assert not missing.stdout
