"""Collect scorer outputs into one results table (markdown + JSON) for the caption sweep and the 12 benchmarks.

    python -m llava.eval.results_table captions --eval-dir playground/data/eval --ckpt NAME --out results/NAME_captions
    python -m llava.eval.results_table benchmarks --eval-dir playground/data/eval --ckpt NAME --out results/NAME_bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CAPTION_SETS = ("coco_karpathy_test", "flickr30k_test", "nocaps_in", "nocaps_near", "nocaps_out", "conceptual",
                "concadia")
CAPTION_METRICS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")

# benchmark -> (result file relative to <eval-dir>, how to read the headline number, unit)
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "VQAv2": ("vqav2/answers_upload/llava_vqav2_mscoco_test-dev2015/{ckpt}.json", "submission", "EvalAI"),
    "GQA": ("gqa/data/testdev_balanced_predictions.json", "submission", "official eval.py"),
    "VizWiz": ("vizwiz/answers_upload/{ckpt}.json", "submission", "EvalAI"),
    "SQA-IMG": ("scienceqa/answers/{ckpt}/result.json", "img_acc", "%"),
    "TextVQA": ("textvqa/answers/{ckpt}/result.json", "accuracy*100", "%"),
    "POPE": ("pope/answers/{ckpt}/result.json", "mean_f1*100", "F1 %"),
    "MME": ("MME/eval_tool/answers/{ckpt}", "submission", "calculation.py"),
    "MMBench": ("mmbench/answers_upload/mmbench_dev_20230712/{ckpt}.xlsx", "submission", "OpenCompass"),
    "MMBench-CN": ("mmbench_cn/answers_upload/mmbench_dev_cn_20231003/{ckpt}.xlsx", "submission", "OpenCompass"),
    "SEED-Bench": ("seed_bench/answers_upload/{ckpt}.jsonl", "submission", "per-type accuracy printed"),
    "LLaVA-Bench": ("llava-bench-in-the-wild/reviews/{ckpt}.jsonl", "submission", "summarize_gpt_review"),
    "MM-Vet": ("mm-vet/results/{ckpt}.json", "submission", "official grader"),
}


def _number(data: dict[str, Any], how: str) -> float:
    key, _, scale = how.partition("*")
    return float(data[key]) * (float(scale) if scale else 1.0)


def caption_rows(eval_dir: Path, ckpt: str, sets: tuple[str, ...] = CAPTION_SETS) -> list[dict[str, Any]]:
    rows = []
    for name in sets:
        file = eval_dir / "caption" / name / "answers" / ckpt / "metrics.json"
        row: dict[str, Any] = {"set": name, "file": str(file)}
        if file.is_file():
            data = json.loads(file.read_text())
            row.update({m: data[m] for m in CAPTION_METRICS if m in data})
            row["images"] = data.get("n_images")
        else:
            row["missing"] = True
        rows.append(row)
    return rows


def benchmark_rows(eval_dir: Path, ckpt: str) -> list[dict[str, Any]]:
    rows = []
    for name, (pattern, how, unit) in BENCHMARKS.items():
        path = eval_dir / pattern.format(ckpt=ckpt)
        row: dict[str, Any] = {"benchmark": name, "file": str(path), "unit": unit}
        if not path.exists():
            row["missing"] = True
        elif how == "submission":
            row["score"] = "submit"
        else:
            row["score"] = round(_number(json.loads(path.read_text()), how), 2)
        rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col, "missing" if row.get("missing") else "")
            cells.append(f"{value:.4f}" if isinstance(value, float) and col in CAPTION_METRICS else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["captions", "benchmarks"])
    parser.add_argument("--eval-dir", default="playground/data/eval")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--sets", nargs="*", default=list(CAPTION_SETS))
    parser.add_argument("--out", required=True, help="output path without extension (.md and .json are written)")
    args = parser.parse_args(argv)
    eval_dir = Path(args.eval_dir)
    if args.kind == "captions":
        rows = caption_rows(eval_dir, args.ckpt, tuple(args.sets))
        table = to_markdown(rows, ["set", *CAPTION_METRICS, "images"])
    else:
        rows = benchmark_rows(eval_dir, args.ckpt)
        table = to_markdown(rows, ["benchmark", "score", "unit"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(f"# {args.ckpt}: {args.kind}\n\n{table}")
    out.with_suffix(".json").write_text(json.dumps({"ckpt": args.ckpt, "kind": args.kind, "rows": rows}, indent=2))
    print(table, end="")
    print(f"written {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
