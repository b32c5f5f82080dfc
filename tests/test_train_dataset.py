"""Training data pipeline: up-front and lazy bad-sample handling, collation, SQ draws, augmentation."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from llava.data.augment import TrainAugment
from llava.data.collator import DataCollatorForSupervisedDataset
from llava.data.dataset import DataConfig, LazySupervisedDataset, make_supervised_data_module
from llava.data.records import BadRecordError
from llava.data.tokenization import tokenizer_image_token
from llava.mm_utils import load_image, process_images

N_IMG = 4  # the tiny tower: 32 px, patch 16


# ---------------------------------------------------------------------------- fixtures


def _picture(size=(40, 30)) -> Image.Image:
    w, h = size
    arr = np.fromfunction(lambda y, x, c: (x * 7 + y * 3 + c * 50) % 256, (h, w, 3)).astype("uint8")
    return Image.fromarray(arr, "RGB")


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_images(folder: Path) -> None:
    """Good images in every awkward mode (kept, converted) and broken files of every kind."""
    folder.mkdir(parents=True, exist_ok=True)
    pic = _picture()
    pic.save(folder / "good.png")
    pic.save(folder / "good.jpg", quality=90)
    _picture((24, 48)).save(folder / "tall.png")
    pic.convert("RGBA").save(folder / "rgba.png")
    pic.convert("P").save(folder / "palette.png")
    pic.convert("L").save(folder / "gray.png")
    pic.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.arange(1200, dtype="uint16").reshape(30, 40) * 50).save(folder / "gray16.png")
    assert Image.open(folder / "gray16.png").mode == "I;16"
    png = bytearray((folder / "good.png").read_bytes())
    start = png.index(b"IDAT") + 8
    png[start : start + 32] = bytes(b ^ 0x5A for b in png[start : start + 32])
    (folder / "corrupt.png").write_bytes(bytes(png))
    jpeg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "text.png").write_text("this is a text file, not a PNG\n")
    # A decompression bomb that costs nothing: a PNG header claiming 100000 x 100000 pixels.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
    (folder / "bomb.png").write_bytes(bomb + _png_chunk(b"IEND", b""))


def conv(*turns, image=True):
    out = []
    for j, text in enumerate(turns):
        out.append({"from": "human" if j % 2 == 0 else "gpt", "value": text})
    if image:
        out[0]["value"] = "<image>\n" + out[0]["value"]
    return out


def rec(rid, *turns, image="good.png"):
    r = {"id": rid, "conversations": conv(*turns, image=image is not None)}
    if image is not None:
        r["image"] = image
    return r


MULTI = ("What is shown?", "Stripes.", "Which colours?", "Red and green.", "How many stripes?", "Many.",
         "Is it bright?", "Yes.", "Any text?", "No.", "Where is it?", "Indoors.")


def good_records() -> list[dict]:
    out = []
    for k, image in enumerate(["good.png", "good.jpg", "tall.png", "rgba.png", "palette.png", "gray.png",
                               "cmyk.jpg", "gray16.png"]):
        out.append(rec(f"ok-{image}", f"Describe picture {k}.", f"A small test picture number {k}.", image=image))
    for k in range(6):
        out.append(rec(f"ok-multi-{k}", *MULTI, image="good.png" if k % 2 else "gray.png"))
    for k in range(8):
        out.append(rec(f"ok-text-{k}", f"What is {k} plus {k}?", f"It is {2 * k}.", image=None))
    return out


def bad_records() -> tuple[list[dict], dict[str, str]]:
    """Records broken in every listed way, and the kind each must be reported as."""
    long_question = " ".join(["word"] * 400)
    records = [
        (rec("bad-missing-file", "Q?", "A.", image="nowhere.png"), "missing_image"),
        (rec("bad-corrupt", "Q?", "A.", image="corrupt.png"), "image_corrupt"),
        (rec("bad-truncated", "Q?", "A.", image="truncated.jpg"), "image_corrupt"),
        (rec("bad-textfile", "Q?", "A.", image="text.png"), "image_unsupported"),
        (rec("bad-bomb", "Q?", "A.", image="bomb.png"), "image_too_large"),
        ({"id": "bad-no-marker", "image": "good.png", "conversations": conv("Q?", "A.", image=False)},
         "missing_image_marker"),
        (rec("bad-extra-marker", "Q <image>?", "A."), "extra_image_marker"),
        ({"id": "bad-order", "image": "good.png",
          "conversations": [{"from": "gpt", "value": "<image>\nA."}, {"from": "human", "value": "Q?"}]},
         "role_order"),
        (rec("bad-empty-answer", "Q?", "   "), "empty_turn"),
        ({"id": "bad-non-string", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": 7}]},
         "non_string"),
        (rec("bad-too-long", long_question, "The answer."), "no_trained_tokens"),
        ({"id": "bad-malformed", "conversations": "not a list"}, "malformed"),
        ({"id": "bad-image-type", "image": ["a.png"], "conversations": conv("Q?", "A.")}, "malformed"),
    ]
    return [r for r, _ in records], {r["id"]: kind for r, kind in records}


def write_broken_dataset(tmp: Path) -> tuple[str, str, dict[str, str], set[str]]:
    """Two files (a JSON list and a JSONL with a syntax error); ~1/3 of the records are bad."""
    images = tmp / "images"
    write_images(images)
    good, (bad, kinds) = good_records(), bad_records()
    rng = random.Random(0)
    mixed = good + bad
    rng.shuffle(mixed)
    half = len(mixed) // 2
    list_file, jsonl_file = tmp / "part1.json", tmp / "part2.jsonl"
    list_file.write_text(json.dumps(mixed[:half], indent=1))
    lines = [json.dumps(r) for r in mixed[half:]]
    lines.insert(3, '{"id": "bad-json-line", "conversations": [')
    jsonl_file.write_text("\n".join(lines) + "\n")
    kinds = dict(kinds, **{"<jsonl line 4>": "malformed"})
    return f"{list_file},{jsonl_file}", str(images), kinds, {r["id"] for r in good}


def config(data_path, image_folder, tmp_path=None, **kw) -> DataConfig:
    kw.setdefault("template", "v1")
    kw.setdefault("model_max_length", 256)
    kw.setdefault("num_image_tokens", N_IMG)
    return DataConfig(data_path=str(data_path), image_folder=image_folder,
                      report_dir=str(tmp_path / "out") if tmp_path else None, **kw)


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def trained(labels) -> list[int]:
    return [int(t) for t in labels if t != IGNORE_INDEX]


# ---------------------------------------------------------------------------- bad samples
def test_broken_dataset_skip_policy(tmp_path, tokenizer, processor, capsys):
    data_path, images, kinds, good_ids = write_broken_dataset(tmp_path)
    cfg = config(data_path, images, tmp_path, template="v1_sq", sq_r=0.5)
    ds = LazySupervisedDataset(cfg, tokenizer, processor)
    printed = capsys.readouterr().out
    print(printed)
    n_bad = len(kinds)
    assert ds.num_records == len(good_ids) + n_bad
    upfront = {"missing_image", "missing_image_marker", "extra_image_marker", "role_order", "empty_turn",
               "non_string", "malformed"}
    n_upfront = sum(k in upfront for k in kinds.values())
    assert f"{ds.num_records} records, {n_upfront} skipped: " in printed
    assert len(ds) == ds.num_records - n_upfront

    seen_ids = set()
    for i in range(len(ds)):
        item = ds[i]
        record = ds.record(item["index"])
        seen_ids.add(record["id"])
        assert record["id"] in good_ids
        assert len(trained(item["labels"])) > 0
        n_sentinels = int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum())
        if "image" in record:
            assert n_sentinels == 1 and item["pixel_values"].shape == (1, 3, 32, 32)
            assert torch.isfinite(item["pixel_values"]).all()
        else:
            assert n_sentinels == 0 and item["pixel_values"] is None
        assert len(item["input_ids"]) + n_sentinels * (N_IMG - 1) <= cfg.model_max_length
    assert seen_ids == good_ids  # every valid sample, the awkward image modes included

    expected = {}
    for kind in kinds.values():
        expected[kind] = expected.get(kind, 0) + 1
    assert ds.bad_samples.summary() == expected
    entries = [json.loads(line) for line in (tmp_path / "out" / "bad_samples.jsonl").read_text().splitlines()]
    assert len(entries) == n_bad
    assert {e["id"] for e in entries} == set(kinds) - {"<jsonl line 4>"} | {None}
    assert all({"index", "id", "image", "kind", "reason"} <= set(e) for e in entries)
    assert {e["kind"] for e in entries if e["id"] == "bad-corrupt"} == {"image_corrupt"}
    summary = json.loads(ds.bad_samples.write_summary().read_text())
    assert summary == {"total": n_bad, "by_kind": expected}
    print("summary:", expected)

    # A second pass (next epoch) reports nothing new and substitutes the same way.
    ds.set_epoch(1)
    assert [ds[i]["index"] for i in range(len(ds))] == [ds[i]["index"] for i in range(len(ds))]
    assert ds.bad_samples.summary() == expected


def test_bad_samples_found_in_dataloader_workers_are_counted(tmp_path, tokenizer, processor):
    data_path, images, kinds, good_ids = write_broken_dataset(tmp_path)
    module = make_supervised_data_module(config(data_path, images, tmp_path), tokenizer, processor)
    ds = module["train_dataset"]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=module["data_collator"])
    rows = sum(batch["input_ids"].shape[0] for batch in loader)
    assert rows == len(ds)
    counts = ds.bad_samples.summary()
    assert sum(counts.values()) == len(kinds)
    assert counts["image_corrupt"] == 2 and counts["image_too_large"] == 1 and counts["no_trained_tokens"] == 1


def test_error_policy_raises_at_first_bad_record(tmp_path, tokenizer, processor):
    data_path, images, kinds, _ = write_broken_dataset(tmp_path)
    with pytest.raises(BadRecordError) as info:
        LazySupervisedDataset(config(data_path, images, bad_sample_policy="error"), tokenizer, processor)
    # The first bad record of part1.json in file order.
    part1 = json.loads(Path(data_path.split(",")[0]).read_text())
    first_bad = next(r for r in part1 if r["id"] in kinds and kinds[r["id"]] not in
                     ("image_corrupt", "image_unsupported", "image_too_large", "no_trained_tokens"))
    assert repr(first_bad["id"]) in str(info.value) and info.value.kind == kinds[first_bad["id"]]


def test_error_policy_raises_on_lazy_failure(tmp_path, tokenizer, processor):
    write_images(tmp_path / "img")
    path = write_json(tmp_path / "d.json", [rec("fine", "Q?", "A."), rec("broken-jpeg", "Q?", "A.", image="truncated.jpg")])
    ds = LazySupervisedDataset(config(path, str(tmp_path / "img"), bad_sample_policy="error"), tokenizer, processor)
    assert len(ds) == 2
    ds[0]
    with pytest.raises(BadRecordError, match="broken-jpeg") as info:
        ds[1]
    assert info.value.kind == "image_corrupt"


def test_lazy_failure_substitutes_next_sample_wrapping(tmp_path, tokenizer, processor):
    write_images(tmp_path / "img")
    records = [rec("a", "Q?", "A."), rec("b", "Q?", "A.", image="corrupt.png"), rec("c", "Q?", "A.", image="bomb.png")]
    ds = LazySupervisedDataset(config(write_json(tmp_path / "d.json", records), str(tmp_path / "img")),
                               tokenizer, processor)
    assert [ds[i]["index"] for i in range(3)] == [0, 0, 0]  # 1 -> 2 -> wraps to 0
    assert ds.bad_samples.summary() == {"image_corrupt": 1, "image_too_large": 1}


def test_json_syntax_error_names_file_and_line(tmp_path, tokenizer, processor):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"id": "a", "conversations": []},\n {"id": "b" "conversations": []}\n]\n')
    with pytest.raises(ValueError, match=r"broken\.json:3:"):
        LazySupervisedDataset(config(path, None), tokenizer, processor)


def test_no_usable_record_is_an_error(tmp_path, tokenizer, processor):
    path = write_json(tmp_path / "d.json", [rec("x", "Q?", "", image=None)])
    with pytest.raises(ValueError, match="no usable training record"):
        LazySupervisedDataset(config(path, None), tokenizer, processor)


# ---------------------------------------------------------------------------- lengths, templates
def test_lengths_and_modality_lengths(tmp_path, tokenizer, processor):
    write_images(tmp_path / "img")
    records = [rec("i", "one two", "three four five"), rec("t", "one two", "three", image=None)]
    ds = LazySupervisedDataset(config(write_json(tmp_path / "d.json", records), str(tmp_path / "img")),
                               tokenizer, processor)
    # "<image>\none two" splits into 3 words.
    assert ds.lengths == [6 + N_IMG, 3]
    assert ds.modality_lengths == [6 + N_IMG, -3]


def test_plain_template_is_image_caption_newline(tmp_path, tokenizer, processor):
    write_images(tmp_path / "img")
    records = [rec("p", "Describe this briefly.", "A striped picture."), rec("text", "Q?", "A.", image=None),
               rec("two-turns", "Q?", "A.", "Q2?", "A2.")]
    ds = LazySupervisedDataset(config(write_json(tmp_path / "d.json", records), str(tmp_path / "img"),
                                      template="plain"), tokenizer, processor)
    assert len(ds) == 1 and ds.bad_samples.summary() == {"template_mismatch": 2}
    item = ds[0]
    expected = tokenizer_image_token("<image>A striped picture.\n", tokenizer)
    assert item["input_ids"].tolist() == expected
    assert item["labels"].tolist()[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert item["labels"].tolist()[2:] == expected[2:]


# ---------------------------------------------------------------------------- collator
def test_collator_pads_masks_and_orders_images(tmp_path, tokenizer, processor):
    write_images(tmp_path / "img")
    records = [rec("short", "Q?", "A.", image="good.png"), rec("text", "What is one plus one?", "Two.", image=None),
               rec("long", *MULTI, image="tall.png")]
    ds = LazySupervisedDataset(config(write_json(tmp_path / "d.json", records), str(tmp_path / "img")),
                               tokenizer, processor)
    items = [ds[i] for i in range(3)]
    collator = DataCollatorForSupervisedDataset(tokenizer, num_image_tokens=N_IMG, model_max_length=256)
    assert collator.pad_token_id == tokenizer.unk_token_id == 0
    batch = collator(items)
    lens = [len(it["input_ids"]) + (N_IMG - 1) * (it["pixel_values"] is not None) for it in items]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, max(lens))
    assert batch["attention_mask"].sum(1).tolist() == lens
    for row, (item, n) in enumerate(zip(items, lens)):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        assert (ids[n:] == 0).all() and (labels[n:] == IGNORE_INDEX).all()
        img = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        if item["pixel_values"] is None:
            assert img == []
        else:
            s = item["input_ids"].tolist().index(IMAGE_TOKEN_INDEX)
            assert img == list(range(s, s + N_IMG))
            assert (labels[img] == IGNORE_INDEX).all()
        assert trained(labels) == trained(item["labels"])
    assert torch.equal(batch["pixel_values"], torch.cat([items[0]["pixel_values"], items[2]["pixel_values"]]))

    text_only = collator([items[1], items[1]])
    assert "pixel_values" not in text_only
    with pytest.raises(ValueError, match="model_max_length"):
        DataCollatorForSupervisedDataset(tokenizer, num_image_tokens=N_IMG, model_max_length=8)(items)


# ---------------------------------------------------------------------------- SQ
def _sq_dataset(tmp_path, tokenizer, processor, template="v1_sq", sq_r=0.5, seed=42):
    write_images(tmp_path / "img")
    path = tmp_path / "sq.json"
    if not path.exists():
        write_json(path, [rec(f"m{k}", *MULTI) for k in range(3)])
    return LazySupervisedDataset(config(path, str(tmp_path / "img"), template=template, sq_r=sq_r, seed=seed),
                                 tokenizer, processor)


def test_sq_draws_depend_on_seed_epoch_index_only(tmp_path, tokenizer, processor):
    a = _sq_dataset(tmp_path, tokenizer, processor)
    b = _sq_dataset(tmp_path, tokenizer, processor)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            assert torch.equal(a[i]["labels"], b[i]["labels"])
    patterns = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        patterns.add(tuple(a[0]["labels"].tolist()))
    assert len(patterns) > 1  # the VUSER pattern changes with the epoch
    a.set_epoch(0)
    assert len({tuple(a[i]["labels"].tolist()) for i in range(3)}) > 1  # ... and with the index


def test_vuser_count_of_the_first_epoch_is_printed(tmp_path, tokenizer, processor, capsys):
    """The printed count equals the VUSER turns the epoch-1 rendering really holds (3 samples x 5 later questions)."""
    from llava.conversation import get_template
    from llava.data.tokenization import render_record

    for sq_r in (0.5, 0.0):
        dataset = _sq_dataset(tmp_path, tokenizer, processor, sq_r=sq_r, seed=7)
        vuser_role = get_template("v1_sq").vuser_role
        rendered = sum(
            role == vuser_role
            for i in range(len(dataset))
            for role, _ in render_record(dataset.record(i), "v1_sq", has_image=True, sq_r=sq_r, seed=7, epoch=0,
                                         index=dataset.record_index(i)).messages)
        out = capsys.readouterr().out
        assert (f"self-questioning: --sq_r {sq_r}: {rendered} of the 15 questions after the first of the 3 image "
                "samples become VUSER turns in epoch 1") in out
        assert (rendered > 0) == (sq_r > 0)


def test_v1_sq_defaults_to_the_reference_sq_r():
    from llava.train.arguments import SQ_R_REFERENCE_DEFAULT, parse_args

    base = ["--model_name_or_path", "/nonexistent", "--vision_tower", "/nonexistent", "--data_path", "/d.json",
            "--output_dir", "/nonexistent/out", "--use_cpu", "True", "--report_to", "none"]
    assert parse_args(base + ["--version", "v1_sq"])[1].sq_r == SQ_R_REFERENCE_DEFAULT == 0.3
    assert parse_args(base + ["--version", "v1_sq", "--sq_r", "0"])[1].sq_r == 0.0  # explicit 0 stays 0
    assert parse_args(base + ["--version", "v1"])[1].sq_r == 0.0


def test_v1_sq_without_sq_masks_like_v1(tmp_path, tokenizer, processor):
    sq = _sq_dataset(tmp_path, tokenizer, processor, sq_r=0.0)
    v1 = _sq_dataset(tmp_path, tokenizer, processor, template="v1", sq_r=0.0)
    with_sq = _sq_dataset(tmp_path, tokenizer, processor, sq_r=1.0)
    for i in range(len(sq)):
        x, y = sq[i], v1[i]
        sx = x["input_ids"].tolist().index(IMAGE_TOKEN_INDEX)
        sy = y["input_ids"].tolist().index(IMAGE_TOKEN_INDEX)
        assert x["input_ids"].tolist()[:sx] != y["input_ids"].tolist()[:sy]  # different system prompts
        assert x["input_ids"].tolist()[sx:] == y["input_ids"].tolist()[sy:]
        assert x["labels"].tolist()[sx:] == y["labels"].tolist()[sy:]
        assert set(x["labels"].tolist()[:sx]) == set(y["labels"].tolist()[:sy]) == {IGNORE_INDEX}
        assert len(trained(with_sq[i]["labels"])) > len(trained(x["labels"]))  # questions trained


# ---------------------------------------------------------------------------- images
def test_preprocessing_without_augmentation_equals_process_images(tmp_path, tokenizer, processor):
    write_images(tmp_path / "img")
    for aspect in ("pad", "square"):
        records = [rec("t", "Q?", "A.", image="tall.png")]
        ds = LazySupervisedDataset(config(write_json(tmp_path / "d.json", records), str(tmp_path / "img"),
                                          image_aspect_ratio=aspect), tokenizer, processor)
        want = process_images([load_image(tmp_path / "img" / "tall.png")], processor, aspect)
        first = ds[0]["pixel_values"]
        ds.set_epoch(5)
        assert torch.equal(first, want) and torch.equal(ds[0]["pixel_values"], want)


def test_augmentation_is_random_but_shaped_and_normalised(tmp_path, tokenizer, processor):
    write_images(tmp_path / "img")
    records = [rec(f"t{k}", "Q?", "A.", image="good.png") for k in range(2)]
    ds = LazySupervisedDataset(config(write_json(tmp_path / "d.json", records), str(tmp_path / "img"),
                                      data_aug=True), tokenizer, processor)
    plain = process_images([load_image(tmp_path / "img" / "good.png")], processor, "square")
    lo = torch.tensor([(0 - m) / s for m, s in zip(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)]).view(1, 3, 1, 1)
    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(2):
            x = ds[i]["pixel_values"]
            assert x.shape == plain.shape and x.dtype == torch.float32
            assert (x >= lo - 1e-5).all() and (x <= hi + 1e-5).all()
            seen.append(x)
    assert all(not torch.equal(a, b) for k, a in enumerate(seen) for b in seen[k + 1 :])
    assert all(not torch.equal(a, plain) for a in seen)
    ds.set_epoch(1)
    assert torch.equal(ds[0]["pixel_values"], seen[2])  # reproducible for (seed, epoch, index)

    augment = TrainAugment(processor)
    rng = random.Random(0)
    image = load_image(tmp_path / "img" / "good.png")
    a, b = augment(image, rng), augment(image, rng)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)


def test_awkward_image_modes_are_converted(tmp_path):
    write_images(tmp_path)
    for name in ("rgba.png", "palette.png", "gray.png", "cmyk.jpg", "gray16.png"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (40, 30)
    assert Image.open(io.BytesIO((tmp_path / "cmyk.jpg").read_bytes())).mode == "CMYK"


def test_set_epoch_reaches_persistent_workers(tmp_path, tokenizer, processor):
    ds = _sq_dataset(tmp_path, tokenizer, processor, sq_r=0.5)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1, persistent_workers=True)
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        got = [item["labels"].tolist() for item in loader]
        assert got == [ds[i]["labels"].tolist() for i in range(len(ds))]
    assert len({tuple(x) for x in got}) > 1


def test_collated_batch_runs_through_the_model(tmp_path, tokenizer, processor, tiny_model_factory):
    model = tiny_model_factory()
    write_images(tmp_path / "img")
    records = [rec("a", *MULTI[:4], image="rgba.png"), rec("t", "Hi?", "Hello.", image=None),
               rec("b", "Q?", "A.", image="tall.png")]
    module = make_supervised_data_module(
        config(write_json(tmp_path / "d.json", records), str(tmp_path / "img"), template="v1_sq", sq_r=0.5,
               num_image_tokens=model.num_image_tokens), tokenizer, processor)
    batch = module["data_collator"]([module["train_dataset"][i] for i in range(3)])
    assert batch["pixel_values"].shape[0] == 2
    loss = model(**batch).loss
    assert torch.isfinite(loss)
