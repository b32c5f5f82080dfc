"""The web demo's own question path, measured: start the demo, call its `/ask_questions` endpoint on held-out
images, and judge what a user would see (well-formed, grounded, no role markers) with the ShapesWorld judge.

    python -m llava.quickstart.demo_questions --model-path checkpoints/sqllava-tiny --data outputs/quickstart/data \\
        --n 50 --k 3 --out outputs/quickstart/answers/demo_sq.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llava.eval.answer_file import read_jsonl
from llava.shapesworld.export import load_scenes
from llava.shapesworld.judge import score_answer_rows

ROLE_MARKERS = ("VUSER:", "USER:", "ASSISTANT:")


def demo_question_scores(rows: Sequence[dict[str, Any]], scenes_file: Path) -> dict[str, Any]:
    """The judge's scores over the demo's questions, plus how many carry a role marker or the answer instruction."""
    metrics = score_answer_rows(rows, load_scenes(scenes_file), n_examples=4)
    questions = [q for row in rows for q in row["questions"]]
    metrics["role_markers"] = sum(any(m in q for m in ROLE_MARKERS) for q in questions)
    metrics["with_instruction"] = sum("Answer the question" in q or "Answer with" in q for q in questions)
    metrics["images_without_questions"] = sum(not row["questions"] for row in rows)
    return metrics


def ask_demo(model_path: str, images: Sequence[tuple[str, Path]], k: int, seed: int, log: Path,
             threads: int, server_flags: Sequence[str] = ()) -> list[dict[str, Any]]:
    """[{"image", "questions"}] from a freshly started web demo's `/ask_questions`, one call per image."""
    from gradio_client import Client, handle_file

    from llava.serve.process import running_server

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = ["-m", "llava.serve.gradio_web_server", "--model-path", model_path, "--seed", str(seed), *server_flags]
    with running_server(args, log, env) as url:
        client = Client(url, verbose=False)
        return [{"image": name, "questions": list(client.predict(handle_file(str(path)), k, api_name="/ask_questions"))}
                for name, path in images]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m llava.quickstart.demo_questions", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", required=True)
    p.add_argument("--data", type=Path, required=True, help="a ShapesWorld export (its held-out caption images)")
    p.add_argument("--n", type=int, default=50, help="held-out images")
    p.add_argument("--k", type=int, default=3, help="questions asked per image (the demo's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="the questions as JSON lines; scores in <out>.scores.json")
    p.add_argument("server_flags", nargs="*", metavar="-- FLAG",
                   help="more flags for the web demo (after --), e.g. -- --sq_temperature 0.7")
    a = p.parse_args(argv)
    records = read_jsonl(a.data / "eval" / "caption" / "questions.jsonl", "questions")[: a.n]
    images = [(r["image"], a.data / "images" / r["image"]) for r in records]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        try:
            rows = ask_demo(a.model_path, images, a.k, a.seed, log, a.threads, a.server_flags)
        finally:
            if log.is_file():
                (a.out.with_suffix(".server.log")).write_text(log.read_text())
    a.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    metrics = demo_question_scores(rows, a.data / "scenes.jsonl")
    metrics["wall_s"] = round(time.perf_counter() - start, 1)
    a.out.with_suffix(".scores.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"[demo questions] {metrics['n_questions']} questions on {metrics['n_images']} images: well-formed "
          f"{metrics['well_formed']:.3f}, grounded {metrics['grounded']:.3f}, distinct {metrics['distinct']}, "
          f"types {metrics['n_types']}, role markers {metrics['role_markers']}, in {metrics['wall_s']:.0f} s",
          file=sys.stderr)
    return metrics


if __name__ == "__main__":
    main()
