"""OCR-VQA images for LLaVA-1.5's 665K mix, as LLaVA's docs ask: every image saved as `<id>.jpg`.

OCR-VQA ships `dataset.json` ({"<id>": {"imageURL": ..., ...}}) and `loadDataset.py` (a Python 2 loop that saves
each image under its URL's extension, so some come out .gif / .png / .jpeg). This does the same download in
parallel, resumably, straight to `<id>.jpg`, and first renames any `<id>.<ext>` already there (from
loadDataset.py) to `<id>.jpg`; the content is left as it is (the image loader reads it by content, not name).

    python scripts/data/ocr_vqa.py --dataset ocr_vqa/dataset.json --out ocr_vqa/images \
        [--only-in llava_v1_5_mix665k.json ...]   # fetch just the images those training files use
    python scripts/data/ocr_vqa.py --out ocr_vqa/images --rename-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from llava.data.caption_sets import download_files

PREFIX = "ocr_vqa/images/"


def rename_to_jpg(folder: Path) -> int:
    """Rename every `<id>.<ext>` (ext != jpg) in `folder` to `<id>.jpg`; an existing `<id>.jpg` wins. Returns
    the number renamed."""
    renamed = 0
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        if not path.is_file() or path.suffix == ".jpg" or path.name.endswith(".part"):
            continue
        target = path.with_suffix(".jpg")
        if target.exists():
            path.unlink()
        else:
            path.rename(target)
            renamed += 1
    return renamed


def referenced_ids(paths: Sequence[str]) -> set[str]:
    """The OCR-VQA image ids that LLaVA-format files use (`"image": "ocr_vqa/images/<id>.jpg"`)."""
    ids: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records = json.load(f) if not path.endswith(".jsonl") else [json.loads(x) for x in f if x.strip()]
        for rec in records:
            image = rec.get("image") if isinstance(rec, dict) else None
            if isinstance(image, str) and image.startswith(PREFIX):
                ids.add(os.path.splitext(image[len(PREFIX):])[0])
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/data/ocr_vqa.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="OCR-VQA's dataset.json")
    p.add_argument("--out", required=True, help="the images folder (ocr_vqa/images under the data root)")
    p.add_argument("--only-in", nargs="*", default=[], help="LLaVA-format files: fetch only the images they use")
    p.add_argument("--rename-only", action="store_true", help="only rename <id>.<ext> to <id>.jpg")
    p.add_argument("--workers", type=int, default=32)
    args = p.parse_args(argv)
    out = Path(args.out)
    renamed = rename_to_jpg(out)
    print(f"[ocr_vqa] renamed {renamed} images to .jpg in {out}")
    if args.rename_only:
        return 0
    if not args.dataset:
        p.error("--dataset is required unless --rename-only")
    with open(args.dataset, encoding="utf-8") as f:
        dataset = json.load(f)
    wanted = set(dataset)
    only = [x for x in args.only_in if os.path.isfile(x)]
    if only:
        used = referenced_ids(only)
        unknown = used - wanted
        if unknown:
            print(f"[ocr_vqa] WARNING: {len(unknown)} ids used by {', '.join(only)} are not in {args.dataset} "
                  f"(first: {sorted(unknown)[:3]})", file=sys.stderr)
        wanted &= used
        print(f"[ocr_vqa] {len(wanted)} of {len(dataset)} images are used by {', '.join(only)}")
    pairs = [(dataset[k]["imageURL"], out / f"{k}.jpg") for k in sorted(wanted)]
    result = download_files(pairs, workers=args.workers)
    print(f"[ocr_vqa] {out}: {result['ok']} downloaded, {result['skipped']} already there, "
          f"{result['failed']} failed of {result['total']}")
    for url, why in result["failures"][:10]:
        print(f"  failed: {url} ({why})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
