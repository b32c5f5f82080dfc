"""`python -m llava.data.caption_sets`: each builder on a few records in its public format, read back by the caption
entry point's question reader (llava.eval.model_cap) and the caption scorer's reference reader and join
(llava.eval.eval_caption); the image downloads on file:// URLs; scripts/data/ocr_vqa.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llava.data import caption_sets as cs
from llava.eval import cli_common as cc
from llava.eval import eval_caption, model_cap

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format="JPEG")
    return path


def _read_back(out: Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Questions as model_cap reads them (its jobs must find every image under out/images), references as
    eval_caption reads them; answers shaped like model_cap's must join every reference by id."""
    questions = cc.read_questions(out / "questions.jsonl")
    jobs = model_cap.jobs_from_questions(questions, str(out / "images"))
    for job in jobs:
        assert job.question == cs.DEFAULT_PROMPT
        assert all(os.path.isfile(p) for p in job.images), job.images
    refs, aliases = eval_caption.load_references(str(out / "references.json"))
    rows = [{"question_id": j.row["question_id"], "prompt": j.question, "text": "a picture", "answer_id": "x",
             "model_id": "m", "metadata": j.metadata} for j in jobs]
    preds, joined, report = eval_caption.join_captions(rows, refs, aliases)
    assert report["n_missing_predictions"] == 0 and report["n_unmatched_predictions"] == 0, report
    assert set(preds) == set(refs) == {str(q["question_id"]) for q in questions}
    assert all(joined[k] for k in joined)
    return questions, refs


def _assert_link(out: Path, images: Path) -> None:
    link = out / "images"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == images.resolve()


def test_coco_karpathy(tmp_path):
    val = tmp_path / "coco" / "val2014"
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "cocoid": 391895, "imgid": 0,
         "split": "test", "sentids": [0, 1], "sentences": [
             {"raw": "A man riding a bike. ", "tokens": ["a"], "imgid": 0, "sentid": 0},
             {"raw": "Someone on a  bicycle", "tokens": ["b"], "imgid": 0, "sentid": 1}]},
        {"filepath": "val2014", "filename": "COCO_val2014_000000522418.jpg", "cocoid": 522418, "imgid": 1,
         "split": "test", "sentids": [2], "sentences": [{"raw": "A woman cutting a cake.", "tokens": [], "sentid": 2}]},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "cocoid": 9, "imgid": 2,
         "split": "restval", "sentids": [3], "sentences": [{"raw": "Food.", "tokens": []}]},
    ]}
    ann = tmp_path / "dataset_coco.json"
    ann.write_text(json.dumps(data))
    for img in data["images"][:2]:
        _image(val / img["filename"])
    out = tmp_path / "caption" / "coco_karpathy_test"
    assert cs.main(["coco-karpathy", "--annotations", str(ann), "--images", str(val), "--out", str(out)]) == 0
    questions, refs = _read_back(out)
    assert questions[0] == {"question_id": 391895, "image": "COCO_val2014_000000391895.jpg", "image_id": 391895,
                            "text": cs.DEFAULT_PROMPT}
    assert refs == {"391895": ["A man riding a bike.", "Someone on a bicycle"], "522418": ["A woman cutting a cake."]}
    _assert_link(out, val)
    # rebuilding replaces the link; a real folder in the way is an error
    assert cs.main(["coco-karpathy", "--annotations", str(ann), "--images", str(val), "--out", str(out)]) == 0
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    assert cs.main(["coco-karpathy", "--annotations", str(ann), "--images", str(val), "--out", str(other)]) == 1


def test_flickr30k_without_images_then_with(tmp_path, capsys):
    data = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "imgid": 0, "split": "test",
         "sentences": [{"raw": "Two young guys with shaggy hair look at their hands.", "tokens": []},
                       {"raw": "Two friends enjoy time spent together.", "tokens": []}]},
        {"filename": "10002456.jpg", "imgid": 1, "split": "train", "sentences": [{"raw": "Workers.", "tokens": []}]},
        {"filename": "1007129816.jpg", "imgid": 2, "split": "test", "sentences": [{"raw": "A man in a hat.", "tokens": []}]},
    ]}
    ann = tmp_path / "dataset_flickr30k.json"
    ann.write_text(json.dumps(data))
    out = tmp_path / "flickr30k_test"
    assert cs.main(["flickr30k", "--annotations", str(ann), "--out", str(out)]) == 0
    assert "images/ not linked" in capsys.readouterr().out
    assert not (out / "images").exists()
    imgs = tmp_path / "flickr30k-images"
    _image(imgs / "1000092795.jpg")
    _image(imgs / "1007129816.jpg")
    assert cs.main(["flickr30k", "--annotations", str(ann), "--images", str(imgs), "--out", str(out)]) == 0
    assert "2 of 2 image files found" in capsys.readouterr().out
    questions, refs = _read_back(out)
    assert [q["question_id"] for q in questions] == [1000092795, 1007129816]
    assert refs["1007129816"] == ["A man in a hat."]


def _nocaps_file(tmp_path: Path, url_root: Path | None = None) -> Path:
    images, anns = [], []
    for i, domain in enumerate(["in-domain", "near-domain", "out-domain", "out-domain"]):
        name = f"{i:016x}.jpg"
        url = (url_root / name).as_uri() if url_root else f"https://s3.amazonaws.com/nocaps/val/{name}"
        images.append({"id": i, "open_images_id": f"{i:016x}", "file_name": name, "height": 8, "width": 8,
                       "coco_url": url, "domain": domain})
        anns += [{"image_id": i, "id": 10 * i + k, "caption": f"caption {k} of image {i}"} for k in range(2)]
    path = tmp_path / "nocaps_val_4500_captions.json"
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns}))
    return path


def test_nocaps_three_domains_and_image_download(tmp_path):
    source = tmp_path / "s3"
    for i in range(4):
        _image(source / f"{i:016x}.jpg", "blue")
    ann = _nocaps_file(tmp_path, url_root=source)
    dest = tmp_path / "caption" / "nocaps" / "images"
    assert cs.main(["download-images", "nocaps", "--annotations", str(ann), "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == [f"{i:016x}.jpg" for i in range(4)]
    result = cs.download_files(cs.nocaps_urls(ann, dest))
    assert result["skipped"] == 4 and result["ok"] == 0  # a rerun fetches nothing

    root = tmp_path / "caption"
    assert cs.main(["nocaps", "--annotations", str(ann), "--images", str(dest), "--out", str(root)]) == 0
    sizes = {}
    for short in ("in", "near", "out"):
        out = root / f"nocaps_{short}"
        _assert_link(out, dest)
        questions, refs = _read_back(out)
        sizes[short] = len(questions)
        assert all(len(v) == 2 for v in refs.values())
    assert sizes == {"in": 1, "near": 1, "out": 2}


def test_conceptual_drop_missing_and_label(tmp_path):
    source = tmp_path / "web"
    _image(source / "a.jpg")
    _image(source / "c.jpg")
    (source / "error.html").write_text("<html>404</html>")  # a dead link that still answers
    tsv = tmp_path / "Validation_GCC-1.1.0-Validation.tsv"
    rows = [("a dog on the beach", (source / "a.jpg").as_uri()),
            ('actor "quoted" at the premiere', (source / "missing.jpg").as_uri()),
            ("a city at night", (source / "c.jpg").as_uri()),
            ("some page", (source / "error.html").as_uri())]
    tsv.write_text("".join(f"{c}\t{u}\n" for c, u in rows), encoding="utf-8")
    dest = tmp_path / "conceptual" / "images"
    result = cs.download_files(cs.conceptual_urls(tsv, dest), verify=True)
    assert (result["ok"], result["failed"]) == (2, 2)
    assert sorted(p.name for p in dest.iterdir()) == ["0.jpg", "2.jpg"]  # no .part files, no error page

    out = tmp_path / "conceptual"
    assert cs.main(["conceptual", "--annotations", str(tsv), "--images", str(dest), "--out", str(out),
                    "--drop-missing"]) == 0
    questions, refs = _read_back(out)
    assert [(q["question_id"], q["image"], q["label"]) for q in questions] == [
        (0, "0.jpg", "a dog on the beach"), (2, "2.jpg", "a city at night")]
    assert refs == {"0": ["a dog on the beach"], "2": ["a city at night"]}
    assert not (out / "images").is_symlink()  # --images is out/images itself: left as it is
    # without --drop-missing every row is kept (and the missing ones counted)
    keep = tmp_path / "conceptual_all"
    assert cs.main(["conceptual", "--annotations", str(tsv), "--images", str(dest), "--out", str(keep)]) == 0
    assert len(cc.read_questions(keep / "questions.jsonl")) == 4


def test_concadia_reference_choice(tmp_path):
    def entry(row: int, split: str) -> dict:
        return {"article_id": "Art", "filename": f"{row}.jpg", "orig_filename": f"File:{row}.png", "split": split,
                "description": {"raw": f"alt text {row}", "tokens": []},
                "caption": {"raw": f"caption {row}", "tokens": []},
                "context": {"raw": "a paragraph", "tokens": []}}

    ann = tmp_path / "wiki_split.json"
    ann.write_text(json.dumps({"images": [entry(1, "train"), entry(17, "test"), entry(23, "test"), entry(5, "val")]}))
    resized = tmp_path / "concadia" / "resized"
    _image(resized / "17.jpg")
    _image(resized / "23.jpg")
    out = tmp_path / "concadia"
    assert cs.main(["concadia", "--annotations", str(ann), "--images", str(resized), "--out", str(out)]) == 0
    questions, refs = _read_back(out)
    assert [q["question_id"] for q in questions] == [17, 23]
    assert refs == {"17": ["caption 17"], "23": ["caption 23"]}
    assert cs.main(["concadia", "--annotations", str(ann), "--images", str(resized), "--out", str(out),
                    "--reference", "both"]) == 0
    assert eval_caption.load_references(str(out / "references.json"))[0]["17"] == ["caption 17", "alt text 17"]


def test_wrong_format_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"annotations": []}))
    assert cs.main(["coco-karpathy", "--annotations", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "not a Karpathy split file" in capsys.readouterr().err
    assert cs.main(["nocaps", "--annotations", str(bad), "--out", str(tmp_path / "o")]) == 1


def test_ocr_vqa_images(tmp_path):
    source = tmp_path / "amazon"
    for k in ("111", "222", "333"):
        _image(source / f"{k}.gif", "green")
    dataset = {k: {"imageURL": (source / f"{k}.gif").as_uri(), "questions": ["Who wrote this book?"],
                   "answers": ["x"], "title": "t", "authorName": "a", "genre": "g", "split": 1}
               for k in ("111", "222", "333")}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    mix = [{"id": "111", "image": "ocr_vqa/images/111.jpg", "conversations": []},
           {"id": "c", "image": "coco/train2017/1.jpg", "conversations": []},
           {"id": "222", "image": "ocr_vqa/images/222.jpg", "conversations": []}]
    (tmp_path / "mix.json").write_text(json.dumps(mix))
    out = tmp_path / "ocr_vqa" / "images"
    _image(out / "222.png")  # what loadDataset.py leaves: the URL's extension
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "scripts/data/ocr_vqa.py", "--dataset", str(tmp_path / "dataset.json"),
                           "--out", str(out), "--only-in", str(tmp_path / "mix.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "renamed 1 images" in proc.stdout and "2 of 3 images are used" in proc.stdout
    assert "1 downloaded, 1 already there, 0 failed of 2" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["111.jpg", "222.jpg"]


@pytest.mark.parametrize("command", ["coco-karpathy", "flickr30k", "nocaps", "conceptual", "concadia"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cs.main([command, "--help"])
    assert exc.value.code == 0 and "--annotations" in capsys.readouterr().out
