"""scripts/data/*.sh: syntax, DRY_RUN=1 (what each would fetch, and where; nothing written), skipping what is there,
and the download + extract + image-check path of pretrain.sh on local file:// archives (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["pretrain.sh", "instruct.sh", "sharegpt4v.sh", "eval.sh"]


def run(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, DATA_ROOT=str(tmp_path / "data"), PYTHON=sys.executable,
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    full.pop("HF_TOKEN", None)
    return subprocess.run(["bash", f"scripts/data/{script}"], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("script", [*SCRIPTS, "_lib.sh"])
def test_syntax(script):
    assert subprocess.run(["bash", "-n", f"scripts/data/{script}"], cwd=REPO).returncode == 0


TARGETS = {
    "pretrain.sh": ["LLaVA-Pretrain/blip_laion_cc_sbu_558k.json", "LLaVA-Pretrain/images"],
    "instruct.sh": ["llava_v1_5_mix665k.json", "coco/train2017", "gqa/images", "ocr_vqa/images",
                    "textvqa/train_images", "vg/VG_100K", "vg/VG_100K_2"],
    "sharegpt4v.sh": ["sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json",
                      "share-captioner_coco_lcs_sam_1246k_1107.json", "llava/llava_pretrain/images",
                      "sam/images", "share_textvqa/images", "web-celebrity/images", "web-landmark/images",
                      "wikiart/images", "LLaVA-Pretrain/images", "coco/train2017", "vg/VG_100K_2"],
    "eval.sh": ["eval/vqav2/test2015", "eval/gqa/data/images", "eval/gqa/data/testdev_balanced_questions.json",
                "eval/vizwiz/test", "eval/scienceqa/images/test", "eval/textvqa/train_images",
                "eval/textvqa/TextVQA_0.5.1_val.json", "eval/pope/coco/coco_pope_random.json", "eval/pope/val2014",
                "eval/mmbench/mmbench_dev_20230712.tsv", "eval/mmbench_cn/mmbench_dev_cn_20231003.tsv",
                "eval/seed_bench/SEED-Bench-image", "eval/llava-bench-in-the-wild", "eval/mm-vet",
                "eval/qbench/images", "eval/caption/coco_karpathy_test", "eval/caption/flickr30k_test",
                "eval/caption/nocaps/images", "eval/caption/concadia"],
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_names_every_target_and_writes_nothing(script, tmp_path):
    proc = run(script, tmp_path, DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "DRY_RUN=1" in out and "dry run: nothing was downloaded" in out
    for target in TARGETS[script]:
        assert f"{tmp_path}/data/{target}" in out, target
    assert not (tmp_path / "data").exists()
    if script != "eval.sh":
        assert "would check images: " in out and "-m llava.data.inspect" in out and "--image-folder" in out


def test_dry_run_skips_what_is_there(tmp_path):
    present = tmp_path / "data" / "coco" / "train2017"
    present.mkdir(parents=True)
    (present / "000000000009.jpg").write_bytes(b"x")
    (tmp_path / "data" / "gqa" / "images").mkdir(parents=True)  # empty: not there yet
    out = run("instruct.sh", tmp_path, DRY_RUN="1").stdout
    assert f"have {present}" in out and "train2017.zip" not in out
    assert "nlp/data/gqa/images.zip" in out


def test_eval_subset_and_manual_notes(tmp_path):
    assert "eval.zip" not in run("eval.sh", tmp_path, DRY_RUN="1", BENCHMARKS="caption").stdout
    out = run("eval.sh", tmp_path, DRY_RUN="1", BENCHMARKS="mme caption").stdout
    assert "eval.zip" in out and "VQAv2" not in out  # MME's question file comes with eval.zip
    assert "MANUAL: MME is licence-gated" in out and "MANUAL: Flickr30k images are licence-gated" in out
    assert "MANUAL: Conceptual Captions val" in out
    assert out.count("zips/val2014.zip") == 1  # COCO val2014 once, for the Karpathy test set
    # the eval sets reuse the training images when present
    (tmp_path / "data" / "textvqa" / "train_images").mkdir(parents=True)
    (tmp_path / "data" / "textvqa" / "train_images" / "a.jpg").write_bytes(b"x")
    out = run("eval.sh", tmp_path, DRY_RUN="1", BENCHMARKS="textvqa").stdout
    assert f"would link {tmp_path}/data/eval/textvqa/train_images -> {tmp_path}/data/textvqa/train_images" in out


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buf, format="JPEG")
    return buf.getvalue()


def test_pretrain_downloads_extracts_and_checks(tmp_path, tokenizer_dir_legacy):
    hub = tmp_path / "hub" / "datasets" / "liuhaotian" / "LLaVA-Pretrain" / "resolve" / "main"
    records = [{"id": f"00000/{i:09d}", "image": f"00000/{i:09d}.jpg",
                "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A cat."}]}
               for i in range(3)]
    hub.mkdir(parents=True)
    (hub / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records))
    _zip(hub / "images.zip", {f"00000/{i:09d}.jpg": _jpeg() for i in range(2)} | {"00001/000010000.jpg": _jpeg()})
    env = {"HF_ENDPOINT": (tmp_path / "hub").as_uri(), "TOKENIZER": str(tokenizer_dir_legacy)}
    proc = run("pretrain.sh", tmp_path, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = tmp_path / "data" / "LLaVA-Pretrain"
    assert sorted(p.name for p in (data / "images" / "00000").iterdir()) == ["000000000.jpg", "000000001.jpg"]
    assert not list((tmp_path / "data" / ".downloads").glob("*.zip"))  # archives deleted once extracted
    assert not list(data.glob(".*unpacking"))
    # the image check of python -m llava.data.inspect: 3 image records, one missing
    assert "3 image records, 2 found, 1 missing" in proc.stdout, proc.stdout
    again = run("pretrain.sh", tmp_path, CHECK="0", **env)
    assert again.returncode == 0 and f"have {data}/images" in again.stdout and "fetching" not in again.stdout


def test_unpack_strips_lone_folders_and_merges(tmp_path):
    """ShareGPT4V's web zips nest their images (data/wikiart/images/...); eval.zip / mm-vet.zip land in folders
    that already exist."""
    nested = _zip(tmp_path / "wikiart.zip", {"data/wikiart/images/a.jpg": b"a", "data/wikiart/images/b.jpg": b"b",
                                             "__MACOSX/._a.jpg": b""})
    merged = _zip(tmp_path / "mm-vet.zip", {"mm-vet/images/v1_0.png": b"p", "mm-vet/mm-vet.json": b"{}",
                                            "mm-vet/llava-mm-vet.jsonl": b"new"})
    target = tmp_path / "data" / "eval" / "mm-vet"
    target.mkdir(parents=True)
    (target / "llava-mm-vet.jsonl").write_text("old")
    script = (f'source scripts/data/_lib.sh; unpack "{nested}" "{tmp_path}/data/wikiart/images"; '
              f'unpack "{merged}" "{target}"')
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, DATA_ROOT=str(tmp_path / "data")), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "wikiart" / "images").iterdir()) == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in target.iterdir()) == ["images", "llava-mm-vet.jsonl", "mm-vet.json"]
    assert (target / "llava-mm-vet.jsonl").read_text() == "old"  # merging keeps what is there
    assert not nested.exists() and not merged.exists()
