"""The up-front image check (llava.data.image_check): a wrong --image_folder or an image set never downloaded stops
the run before any model loads; a few missing files are skipped and counted; stage 1 trains on text-only batches."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava.data.dataset import DataConfig, LazySupervisedDataset
from llava.data.image_check import LIST_MIN_PATHS, MissingImagesError, existing_files, subfolder_of
from llava.data.records import BadRecordError

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none",
          "--dataloader_num_workers", "0", "--use_cpu", "True", "--save_strategy", "no",
          "--mm_projector_type", "mlp2x_gelu", "--learning_rate", "1e-3", "--lr_scheduler_type", "constant"]


def image_record(rid: str, image: str) -> dict:
    return {"id": rid, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "It is red."}]}


def text_record(rid: str) -> dict:
    return {"id": rid, "conversations": [
        {"from": "human", "value": f"What is {rid} plus one?"}, {"from": "gpt", "value": "One more."}]}


def write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)


# ---------------------------------------------------------------------------- existence and grouping
def test_listing_agrees_with_isfile_for_nested_paths_links_and_dirs(tmp_path):
    root = tmp_path / "img"
    paths = []
    for i in range(LIST_MIN_PATHS):
        (root / "coco" / "train2017").mkdir(parents=True, exist_ok=True)
        (root / "coco" / "train2017" / f"{i}.jpg").touch()
        paths.append(root / "coco" / "train2017" / f"{i}.jpg")
    (root / "vg" / "VG_100K" / "deep").mkdir(parents=True)
    (root / "vg" / "VG_100K" / "deep" / "x.jpg").touch()
    (root / "coco" / "train2017" / "adir.jpg").mkdir()  # a directory is no image file
    (root / "coco" / "train2017" / "link.jpg").symlink_to(root / "coco" / "train2017" / "0.jpg")
    (root / "coco" / "train2017" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    paths += [root / "vg" / "VG_100K" / "deep" / "x.jpg", root / "coco" / "train2017" / "adir.jpg",
              root / "coco" / "train2017" / "link.jpg", root / "coco" / "train2017" / "dangling.jpg",
              root / "coco" / "train2017" / "0.jpg" / "under_a_file.jpg"]
    paths += [root / "gqa" / "images" / f"{i}.jpg" for i in range(20)]  # a folder never downloaded
    paths += [root / "coco" / "train2017" / f"gone{i}.jpg" for i in range(40)]
    paths = [str(p) for p in paths]
    assert existing_files(paths) == {p: os.path.isfile(p) for p in paths}
    assert sum(existing_files(paths).values()) == LIST_MIN_PATHS + 2
    assert [subfolder_of(p) for p in ("coco/train2017/1.jpg", "./gqa/images/2.jpg", "3.jpg", "/data/x/4.jpg")] == [
        "coco/", "gqa/", ".", "/data/"]


# ---------------------------------------------------------------------------- the dataset's rules
def build(tmp_path, tokenizer, processor, records, image_folder, **kw) -> LazySupervisedDataset:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    cfg = DataConfig(data_path=str(path), image_folder=str(image_folder) if image_folder else None,
                     template="v1", model_max_length=256, num_image_tokens=4, report_dir=str(tmp_path / "out"), **kw)
    return LazySupervisedDataset(cfg, tokenizer, processor)


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_an_absent_subfolder_stops_whatever_the_policy(tmp_path, tokenizer, processor, capsys, policy):
    """60 coco/ records resolve, the 5 gqa/ ones do not: 7.7% in all (below 10%), but gqa/ is absent."""
    images = tmp_path / "images"
    for i in range(3):
        write_png(images / "coco" / "train2017" / f"{i}.png")
    records = [image_record(f"c{i}", f"coco/train2017/{i % 3}.png") for i in range(60)]
    records += [image_record(f"g{i}", f"gqa/images/{i}.jpg") for i in range(5)] + [text_record("t0")]
    with pytest.raises(MissingImagesError) as info:
        build(tmp_path, tokenizer, processor, records, images, bad_sample_policy=policy)
    message = str(info.value)
    print(message)
    assert "subfolder gqa/ is absent (5 records)" in message and "Missing by subfolder: gqa/ 5 of 5" in message
    assert f"--image_folder {images}" in message and "5 of 65 image records" in message
    assert f"id='g0' (index 60), data.json record 60: {images}/gqa/images/0.jpg" in message
    assert "--max_missing_images 1.0" in message and "more than --max_missing_images" not in message
    table = capsys.readouterr().out
    assert "65 image records, 60 found, 5 missing (7.7%)" in table
    assert [line.split() for line in table.splitlines() if line.strip().startswith(("coco/", "gqa/"))] == [
        ["coco/", "60", "0"], ["gqa/", "5", "5", "100%,", "folder", "absent"]]

    # --max_missing_images 1.0 turns every stop off: the gqa/ records are skipped and counted.
    ds = build(tmp_path, tokenizer, processor, records, images, max_missing_images=1.0)
    assert len(ds) == 61 and ds.skipped_up_front == {"missing_image": 5}


def test_a_mostly_empty_subfolder_stops(tmp_path, tokenizer, processor):
    images = tmp_path / "images"
    for i in range(40):
        write_png(images / ("coco" if i < 36 else "gqa") / f"{i}.png")
    records = [image_record(f"c{i}", f"coco/{i}.png") for i in range(36)]
    records += [image_record(f"g{i}", f"gqa/{i}.png") for i in range(36, 46)]  # 4 of 10 present
    with pytest.raises(MissingImagesError, match=r"subfolder gqa/ lacks 6 of its 10 images"):
        build(tmp_path, tokenizer, processor, records, images, max_missing_images=0.2)  # 6/46 = 13% < 20%


def test_one_missing_file_in_twenty_is_skipped_and_counted(tmp_path, tokenizer, processor, capsys):
    images = tmp_path / "images"
    for i in range(19):
        write_png(images / f"{i}.png")
    # ... and one of two files missing in a small subfolder, which never stops a run on its own
    write_png(images / "small" / "a.png")
    records = [image_record(f"c{i}", f"{i}.png") for i in range(20)]  # 19.png does not exist
    records += [image_record("s-a", "small/a.png"), image_record("s-b", "small/b.png"), text_record("t0")]
    ds = build(tmp_path, tokenizer, processor, records, images)
    out = capsys.readouterr().out
    assert len(ds) == 21 and ds.skipped_up_front == {"missing_image": 2}
    assert "22 image records, 20 found, 2 missing (9.1%)" in out and "23 records, 2 skipped: missing_image=2" in out
    assert f"missing: id='c19' (index 19), data.json record 19: {images}/19.png" in out
    with pytest.raises(MissingImagesError, match=r"more than --max_missing_images 0\.05"):
        build(tmp_path, tokenizer, processor, records, images, max_missing_images=0.05)
    with pytest.raises(BadRecordError, match="c19"):  # below the thresholds, the policy decides as before
        build(tmp_path, tokenizer, processor, records, images, bad_sample_policy="error")


# ---------------------------------------------------------------------------- real processes
@pytest.fixture(scope="module")
def poisoned(tmp_path_factory, tiny_foundation) -> dict:
    """The tiny LM with its weights replaced by garbage: any run that gets as far as loading the model dies."""
    root = tmp_path_factory.mktemp("image_check")
    bad_lm = root / "bad_lm"
    shutil.copytree(tiny_foundation["lm"], bad_lm)
    for weights in bad_lm.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    images = root / "images"
    for i in range(20):
        write_png(images / "coco" / f"{i}.png")
    records = [image_record(f"c{i}", f"coco/{i}.png") for i in range(20)] + [text_record(f"t{i}") for i in range(6)]
    (root / "data.json").write_text(json.dumps(records))
    return {"root": root, "bad_lm": bad_lm, "images": images, "data": root / "data.json", **tiny_foundation}


def run_train(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llava.train.train", *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_a_wrong_image_folder_stops_before_the_model_loads(poisoned, stage):
    out = poisoned["root"] / f"out_{stage}"
    wrong = poisoned["root"] / "no_such_images"
    flags = (["--version", "v1", "--tune_mm_mlp_adapter", "True"] if stage == "stage1"
             else ["--version", "v1_sq", "--sq_r", "0.5", "--lora_enable", "True", "--lora_r", "4"])
    proc = run_train(["--model_name_or_path", str(poisoned["bad_lm"]), "--vision_tower", str(poisoned["tower"]),
                      "--data_path", str(poisoned["data"]), "--image_folder", str(wrong), "--output_dir", str(out),
                      "--max_steps", "1", *flags, *COMMON])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: 20 of 20 image records have no image file under --image_folder {wrong} "
                           "(which does not exist): "), last
    assert "subfolder coco/ is absent (20 records)" in last and f"{wrong}/coco/0.png" in last
    assert "image check under" in proc.stdout and "coco/" in proc.stdout
    # The model never loaded: its weights are garbage, and nothing was summarised or written.
    assert "stage pretrain" not in proc.stdout and "stage lora" not in proc.stdout
    assert not any(p.suffix in (".bin", ".safetensors") for p in out.rglob("*"))


def test_stage1_trains_on_a_text_only_first_batch(poisoned, tmp_path):
    """Stage 1 (projector only, LM frozen) with text-only records: a text-only batch used to fail in backward
    ("element 0 of tensors does not require grad"); the tower now runs on a dummy image for it. The seed is
    chosen so that the modality-grouped sampler hands out the text-only batch first."""
    from llava.train.sampler import epoch_generator, get_modality_length_grouped_indices

    images = tmp_path / "images"
    records = [text_record(f"t{i}") for i in range(4)]
    for i in range(4):
        write_png(images / f"{i}.png")
        records.append(image_record(f"c{i}", f"{i}.png"))
    (tmp_path / "data.json").write_text(json.dumps(records))
    signed = [-5] * 4 + [10] * 4  # dataset order: the text-only records first
    seed = next(s for s in range(20)
                if max(get_modality_length_grouped_indices(signed, 4, 1, epoch_generator(s, 0))[:4]) < 4)
    out = tmp_path / "out"
    proc = run_train(["--model_name_or_path", str(poisoned["lm"]), "--vision_tower", str(poisoned["tower"]),
                      "--version", "v1", "--tune_mm_mlp_adapter", "True",
                      "--data_path", str(tmp_path / "data.json"), "--image_folder", str(images),
                      "--group_by_modality_length", "True", "--seed", str(seed), "--output_dir", str(out),
                      "--max_steps", "2", *COMMON])
    assert proc.returncode == 0, proc.stderr[-4000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    curve = [h["loss"] for h in history if "loss" in h]
    assert len(curve) == 2 and all(math.isfinite(x) for x in curve)
    assert (out / "mm_projector.bin").is_file()


def test_text_only_batch_backward_needs_the_vision_path(tiny_model_factory):
    """The in-process view of the stage-1 crash and of its fix."""
    from types import SimpleNamespace

    from llava.train import stage

    model = tiny_model_factory("mlp2x_gelu").train()
    model_args = SimpleNamespace(tune_mm_mlp_adapter=True, freeze_backbone=False, unfreeze_mm_vision_tower=False,
                                 pretrain_lora=None)
    train_args = SimpleNamespace(lora_enable=False, vit_lora_enable=False, freeze_mm_mlp_adapter=False)
    plan = stage.plan_for(model_args, train_args)
    stage.apply(model, plan, model_args, train_args)
    assert not plan.trains_language_model
    batch = {"input_ids": torch.tensor([[1, 450, 338, 263, 1243]]), "labels": torch.tensor([[-100, 450, 338, 263, 1243]])}
    with pytest.raises(RuntimeError, match="does not require grad"):
        model(**batch).loss.backward()
    model.run_vision_on_text_only_batches = True
    model(**batch).loss.backward()
    grads = [p.grad for p in model.mm_projector.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)
