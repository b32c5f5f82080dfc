"""Caption evaluation sets from their public annotation files, in the layout `scripts/eval/captioning.sh` reads:

    playground/data/eval/caption/<set>/questions.jsonl   {"question_id", "image", "image_id", "text"} per image
    playground/data/eval/caption/<set>/references.json   {"<image_id>": ["reference", ...]}
    playground/data/eval/caption/<set>/images            a relative symlink to --images (nothing is copied)

`question_id` and `image_id` are the same id (one question per image); `image` is the file name under images/.
`python -m llava.eval.model_cap` reads the questions (and carries image / image_id / label to the answers'
metadata), `python -m llava.eval.eval_caption` joins answers to references.json by that id.

Builders (the file formats they read):

    coco-karpathy  Karpathy's dataset_coco.json (caption_datasets.zip), split "test": 5,000 val2014 images;
                   id = COCO id, image = COCO_val2014_<id>.jpg, --images = the COCO val2014 folder
    flickr30k      Karpathy's dataset_flickr30k.json, split "test": 1,000 images; id = the Flickr photo id
                   (the file name's stem), --images = the flickr30k-images folder
    nocaps         nocaps_val_4500_captions.json (COCO-style, images carry "domain"): writes nocaps_in,
                   nocaps_near and nocaps_out (in-, near-, out-domain) under --out; id = the NoCaps image id
    conceptual     Conceptual Captions' validation TSV (caption<TAB>url, no header): id = the 0-based row,
                   image = <row>.jpg (what `download-images conceptual` writes), the one caption = reference
                   and `label`; --drop-missing leaves out rows whose image could not be downloaded
    concadia       Concadia's wiki_split.json, split "test"; id = the file name's stem; references = the
                   Wikipedia caption (--reference description: the alt description; both: the two)

    download-images {nocaps,conceptual} --annotations F --dest DIR   fetch the images those files point to
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llava.data.image_check import existing_files

CAPTION_ROOT = os.path.join("playground", "data", "eval", "caption")
# The reference's caption question files are not public, so its prompt is unknown (docs/reference.md#caption-prompts). This is
# LLaVA-1.5's short-caption instruction (its TextCaps prompt), also the prompt of the ShapesWorld caption set;
# --prompt replaces it.
DEFAULT_PROMPT = "Provide a one-sentence caption for the provided image."
NOCAPS_DOMAINS = {"in": "in-domain", "near": "near-domain", "out": "out-domain"}
SET_NAMES = {
    "coco-karpathy": "coco_karpathy_test",
    "flickr30k": "flickr30k_test",
    "conceptual": "conceptual",
    "concadia": "concadia",
}


@dataclasses.dataclass
class CaptionItem:
    """One image of a caption set: its id, its file name under images/ and its reference captions."""

    id: int | str
    image: str
    references: list[str]
    label: str | None = None


class CaptionSetError(ValueError):
    """An annotation file that is not in the expected format, or an output that cannot be written; names both."""


# --------------------------------------------------------------------------------------------------------------
# Readers of the public annotation files
# --------------------------------------------------------------------------------------------------------------


def _load_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise CaptionSetError(f"{path}: cannot read it as JSON ({err})") from err


def _numeric(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _clean(text: Any) -> str:
    return " ".join(str(text).split())


def _merge(items: Iterable[CaptionItem]) -> list[CaptionItem]:
    """One item per id, in first-seen order; references of repeated ids are concatenated."""
    by_id: dict[str, CaptionItem] = {}
    for item in items:
        key = str(item.id)
        if key in by_id:
            by_id[key].references.extend(item.references)
        else:
            by_id[key] = item
    return list(by_id.values())


def karpathy_items(path: str | os.PathLike, split: str, id_of: Callable[[dict], int | str]) -> list[CaptionItem]:
    """Images of `split` in a Karpathy split file ({"images": [{filename, split, sentences: [{raw}]}]})."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionSetError(f"{path}: not a Karpathy split file (no \"images\" list)")
    items = []
    for img in data["images"]:
        if img.get("split") != split:
            continue
        refs = [_clean(s["raw"]) for s in img.get("sentences", []) if _clean(s.get("raw", ""))]
        items.append(CaptionItem(id=id_of(img), image=img["filename"], references=refs))
    if not items:
        splits = sorted({str(img.get("split")) for img in data["images"]})
        raise CaptionSetError(f"{path}: no image in split {split!r} (splits here: {', '.join(splits)})")
    return _merge(items)


def coco_karpathy(path: str | os.PathLike, split: str = "test") -> list[CaptionItem]:
    """Karpathy's COCO split: id = the COCO image id (`cocoid`), image = the val2014 file name."""

    def id_of(img: dict) -> int | str:
        if "cocoid" in img:
            return int(img["cocoid"])
        raise CaptionSetError(f"{path}: image {img.get('filename')!r} has no cocoid (is this dataset_coco.json?)")

    return karpathy_items(path, split, id_of)


def flickr30k(path: str | os.PathLike, split: str = "test") -> list[CaptionItem]:
    """Karpathy's Flickr30k split: id = the Flickr photo id, the file name's stem (1000092795.jpg -> 1000092795)."""
    return karpathy_items(path, split, lambda img: _numeric(Path(img["filename"]).stem))


def nocaps(path: str | os.PathLike) -> dict[str, list[CaptionItem]]:
    """NoCaps val by domain: {"in": [...], "near": [...], "out": [...]}; id = the NoCaps image id."""
    data = _load_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise CaptionSetError(f"{path}: not a NoCaps captions file (needs \"images\" and \"annotations\")")
    refs: dict[str, list[str]] = {}
    for ann in data["annotations"]:
        refs.setdefault(str(ann["image_id"]), []).append(_clean(ann["caption"]))
    by_domain: dict[str, list[CaptionItem]] = {short: [] for short in NOCAPS_DOMAINS}
    domain_names = {full: short for short, full in NOCAPS_DOMAINS.items()}
    for img in data["images"]:
        domain = img.get("domain")
        if domain not in domain_names:
            raise CaptionSetError(f"{path}: image {img.get('id')} has domain {domain!r}, expected one of "
                                  f"{', '.join(NOCAPS_DOMAINS.values())}")
        by_domain[domain_names[domain]].append(
            CaptionItem(id=img["id"], image=img["file_name"], references=refs.get(str(img["id"]), [])))
    return by_domain


def conceptual_image_name(row: int) -> str:
    """The file name of row `row` (0-based) of the Conceptual Captions TSV under images/."""
    return f"{row}.jpg"


def _conceptual_rows(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """(row, caption, url) of a Conceptual Captions TSV (caption<TAB>url, no header)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(fields) < 2:
                raise CaptionSetError(f"{path}: line {row + 1} is not caption<TAB>url: {fields!r}")
            rows.append((row, _clean(fields[0]), fields[1].strip()))
    return rows


def conceptual(path: str | os.PathLike) -> list[CaptionItem]:
    """Conceptual Captions val: id = the row, image = <row>.jpg, its one caption the reference and the label."""
    return [CaptionItem(id=row, image=conceptual_image_name(row), references=[caption], label=caption)
            for row, caption, _ in _conceptual_rows(path)]


def concadia(path: str | os.PathLike, split: str = "test", reference: str = "caption") -> list[CaptionItem]:
    """Concadia (wiki_split.json: {"images": [{filename, split, caption: {raw}, description: {raw}}]})."""
    fields = {"caption": ("caption",), "description": ("description",), "both": ("caption", "description")}[reference]
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionSetError(f"{path}: not Concadia's wiki_split.json (no \"images\" list)")
    items = []
    for img in data["images"]:
        if img.get("split") != split:
            continue
        refs = []
        for name in fields:
            value = img.get(name)
            text = _clean(value.get("raw", "") if isinstance(value, dict) else value or "")
            if text:
                refs.append(text)
        items.append(CaptionItem(id=_numeric(Path(img["filename"]).stem), image=img["filename"], references=refs))
    if not items:
        raise CaptionSetError(f"{path}: no image in split {split!r}")
    return _merge(items)


# --------------------------------------------------------------------------------------------------------------
# Writing a set
# --------------------------------------------------------------------------------------------------------------


def link_images(out: Path, images: Path) -> str:
    """Make out/images a relative symlink to `images` (an existing link is replaced); returns what it points to."""
    link = out / "images"
    target = Path(os.path.relpath(images.resolve(), out.resolve()))
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        if link.resolve() == images.resolve():
            return str(link)
        raise CaptionSetError(f"{link} is a real folder, not a link: remove it, or pass --images {link}")
    link.symlink_to(target, target_is_directory=True)
    return str(target)


def write_set(
    items: Sequence[CaptionItem],
    out: str | os.PathLike,
    images: str | os.PathLike | None = None,
    prompt: str = DEFAULT_PROMPT,
    drop_missing: bool = False,
) -> dict[str, Any]:
    """Write out/questions.jsonl and out/references.json (and out/images -> `images`); returns a report."""
    out = Path(out)
    present: dict[str, bool] | None = None
    if images is not None:
        images = Path(images)
        if images.is_dir():
            found = existing_files(str(images / item.image) for item in items)
            present = {item.image: found[str(images / item.image)] for item in items}
        elif drop_missing:
            raise CaptionSetError(f"--drop-missing: the images folder {images} does not exist")
    elif drop_missing:
        raise CaptionSetError("--drop-missing needs --images")
    kept = [it for it in items if not drop_missing or (present is not None and present[it.image])]
    no_refs = [str(it.id) for it in kept if not it.references]
    if no_refs:
        raise CaptionSetError(f"{len(no_refs)} images have no reference caption (first: {no_refs[:5]})")
    if not kept:
        raise CaptionSetError(f"no image left to write to {out}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "questions.jsonl.tmp", "w", encoding="utf-8") as f:
        for it in kept:
            row: dict[str, Any] = {"question_id": it.id, "image": it.image, "image_id": it.id, "text": prompt}
            if it.label is not None:
                row["label"] = it.label
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / "references.json.tmp", "w", encoding="utf-8") as f:
        json.dump({str(it.id): it.references for it in kept}, f, ensure_ascii=False, indent=1)
    os.replace(out / "questions.jsonl.tmp", out / "questions.jsonl")
    os.replace(out / "references.json.tmp", out / "references.json")
    report: dict[str, Any] = {
        "out": str(out),
        "images": len(kept),
        "references": sum(len(it.references) for it in kept),
        "dropped_missing": len(items) - len(kept),
        "images_link": None,
        "images_found": None,
    }
    if images is not None:
        report["images_link"] = link_images(out, images)
        if present is not None:
            report["images_found"] = sum(present[it.image] for it in kept)
    return report


def describe(report: dict[str, Any]) -> str:
    line = f"{report['out']}: {report['images']} images, {report['references']} references"
    if report["dropped_missing"]:
        line += f", {report['dropped_missing']} left out (no image file)"
    if report["images_link"] is None:
        line += "; images/ not linked (no --images): put the image files in images/"
    else:
        line += f"; images -> {report['images_link']}"
        if report["images_found"] is None:
            line += " (that folder does not exist yet)"
        else:
            line += f" ({report['images_found']} of {report['images']} image files found)"
    return line


# --------------------------------------------------------------------------------------------------------------
# Downloading the images of NoCaps / Conceptual Captions
# --------------------------------------------------------------------------------------------------------------


def _fetch_one(url: str, dest: Path, timeout: float, verify: bool) -> str:
    """"ok", "skipped" (already there) or the reason it failed; writes dest.part first, then renames."""
    if dest.is_file() and dest.stat().st_size > 0:
        return "skipped"
    part = dest.with_name(dest.name + ".part")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (llava caption_sets)"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as f:
            while chunk := response.read(1 << 16):
                f.write(chunk)
        if verify:
            from PIL import Image

            with Image.open(part) as img:
                img.verify()
        os.replace(part, dest)
        return "ok"
    except Exception as err:  # network errors, HTTP errors, HTML error pages that are not images
        part.unlink(missing_ok=True)
        return f"{type(err).__name__}: {err}"


def download_files(
    pairs: Sequence[tuple[str, Path]], workers: int = 16, timeout: float = 30.0, verify: bool = False
) -> dict[str, Any]:
    """Fetch each (url, dest) not already present, in parallel; failures are counted and listed, never fatal."""
    for _, dest in pairs:
        dest.parent.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    failures: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda p: _fetch_one(p[0], p[1], timeout, verify), pairs)
        for done, ((url, _), status) in enumerate(zip(pairs, results), 1):
            if status in ("ok", "skipped"):
                counts[status] += 1
            else:
                counts["failed"] += 1
                failures.append((url, status))
            if done % 1000 == 0:
                print(f"[download] {done}/{len(pairs)}: {counts}", file=sys.stderr, flush=True)
    return {**counts, "total": len(pairs), "failures": failures}


def nocaps_urls(path: str | os.PathLike, dest: Path) -> list[tuple[str, Path]]:
    data = _load_json(path)
    return [(img["coco_url"], dest / img["file_name"]) for img in data["images"]]


def conceptual_urls(path: str | os.PathLike, dest: Path) -> list[tuple[str, Path]]:
    return [(url, dest / conceptual_image_name(row)) for row, _, url in _conceptual_rows(path)]


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.data.caption_sets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def builder(name: str, annotations_help: str, out_help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=annotations_help)
        p.add_argument("--annotations", required=True, help=annotations_help)
        p.add_argument("--images", default=None,
                       help="folder holding the image files; <out>/images becomes a relative symlink to it")
        p.add_argument("--out", default=None, help=out_help)
        p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the caption instruction (default: %(default)r)")
        p.add_argument("--drop-missing", action="store_true",
                       help="leave out images whose file is not in --images (default: keep and count them)")
        return p

    p = builder("coco-karpathy", "Karpathy's dataset_coco.json",
                f"set folder (default {CAPTION_ROOT}/coco_karpathy_test)")
    p.add_argument("--split", default="test")
    p = builder("flickr30k", "Karpathy's dataset_flickr30k.json", f"set folder (default {CAPTION_ROOT}/flickr30k_test)")
    p.add_argument("--split", default="test")
    p = builder("nocaps", "nocaps_val_4500_captions.json",
                f"parent folder of nocaps_in/ nocaps_near/ nocaps_out/ (default {CAPTION_ROOT})")
    p.add_argument("--domains", nargs="+", choices=sorted(NOCAPS_DOMAINS), default=["in", "near", "out"])
    builder("conceptual", "Conceptual Captions validation TSV (caption<TAB>url)",
            f"set folder (default {CAPTION_ROOT}/conceptual)")
    p = builder("concadia", "Concadia's wiki_split.json", f"set folder (default {CAPTION_ROOT}/concadia)")
    p.add_argument("--split", default="test")
    p.add_argument("--reference", choices=("caption", "description", "both"), default="caption",
                   help="which Concadia text is the reference (default: %(default)s)")

    p = sub.add_parser("download-images", help="fetch the images of NoCaps val or Conceptual Captions val")
    p.add_argument("kind", choices=("nocaps", "conceptual"))
    p.add_argument("--annotations", required=True, help="nocaps_val_4500_captions.json or the CC validation TSV")
    p.add_argument("--dest", required=True, help="folder the images go to (files already there are skipped)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="keep files without checking they open as images (default: check; CC links often "
                        "return error pages)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "download-images":
            dest = Path(args.dest)
            urls = nocaps_urls if args.kind == "nocaps" else conceptual_urls
            result = download_files(urls(args.annotations, dest), args.workers, args.timeout, args.verify)
            print(f"[download] {args.kind} -> {dest}: {result['ok']} downloaded, {result['skipped']} already "
                  f"there, {result['failed']} failed of {result['total']}")
            for url, why in result["failures"][:10]:
                print(f"  failed: {url} ({why})", file=sys.stderr)
            return 0
        if args.command == "nocaps":
            by_domain = nocaps(args.annotations)
            parent = Path(args.out or CAPTION_ROOT)
            for short in args.domains:
                report = write_set(by_domain[short], parent / f"nocaps_{short}", args.images, args.prompt,
                                   args.drop_missing)
                print(describe(report))
            return 0
        if args.command == "coco-karpathy":
            items = coco_karpathy(args.annotations, args.split)
        elif args.command == "flickr30k":
            items = flickr30k(args.annotations, args.split)
        elif args.command == "conceptual":
            items = conceptual(args.annotations)
        else:
            items = concadia(args.annotations, args.split, args.reference)
        out = args.out or os.path.join(CAPTION_ROOT, SET_NAMES[args.command])
        print(describe(write_set(items, out, args.images, args.prompt, args.drop_missing)))
        return 0
    except (CaptionSetError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
