"""CLI: `python -m llava.shapesworld --out DIR ...` writes training data and eval sets for one seed."""

from __future__ import annotations

import argparse
import json
import time

from .export import INSTRUCT_KINDS, INSTRUCT_MIXES, export, parse_instruct_mix
from .scene import ALL_SHAPES, DEFAULT_SHAPES, WorldConfig


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava.shapesworld", description=__doc__)
    p.add_argument("--out", required=True, help="output folder (images/, *.json, eval/...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pretrain", type=int, default=1000, help="stage-1 caption records (one image each)")
    p.add_argument("--n-instruct", type=int, default=1000, help="stage-2 records (text-only ones have no image)")
    p.add_argument("--n-eval", type=int, default=200, help="held-out eval images (shared by all eval sets)")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--cell-size", type=int, default=None, help="grid cell in px (default image-size // 3)")
    p.add_argument("--offset", type=int, default=None, help="grid offset in px (default: centred)")
    p.add_argument("--jitter", type=float, default=0.0, help="object centre jitter, fraction of a cell")
    p.add_argument("--noise", type=float, default=0.0, help="per-pixel Gaussian noise std (0..255 units)")
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), choices=ALL_SHAPES)
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--vqa-per-image", type=int, default=3)
    p.add_argument("--pope-per-image", type=int, default=2, help="positives (= negatives) per image and split")
    p.add_argument("--instruct-mix", default=None, metavar="NAME|KIND=W,...",
                   help=f"stage-2 record kinds and weights: one of {', '.join(INSTRUCT_MIXES)} or KIND=W items "
                   "(default qa-heavy: " + ",".join(f"{k}={w:g}" for k, w in INSTRUCT_KINDS) + ")")
    a = p.parse_args(argv)
    try:
        mix = parse_instruct_mix(a.instruct_mix) if a.instruct_mix else INSTRUCT_KINDS
    except ValueError as e:
        p.error(str(e))
    config = WorldConfig(image_size=a.image_size, cell_size=a.cell_size, offset=a.offset, jitter=a.jitter,
                         noise=a.noise, shapes=tuple(a.shapes), max_objects=a.max_objects)
    start = time.perf_counter()
    summary = export(a.out, a.seed, a.n_pretrain, a.n_instruct, a.n_eval, config, a.vqa_per_image,
                     a.pope_per_image, mix)
    shown = {k: v for k, v in summary.items() if k not in ("vocabulary", "prompts")}
    shown["vocabulary_size"] = len(summary["vocabulary"])
    shown["wall_s"] = round(time.perf_counter() - start, 2)
    print(json.dumps(shown, indent=1))
    return summary


if __name__ == "__main__":
    main()
