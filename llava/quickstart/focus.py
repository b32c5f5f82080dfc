"""The quickstart's focus phase: a low-lr short-answer fine-tune of the merged stage-2 model, with stage-2 replay.

Stage 2 teaches the tiny model to describe, answer and ask; how well its short answers come out varies with the
seed (docs/shapesworld.md, "Seed runs"). This phase continues training the merged checkpoint on one-question
samples drawn fresh from ShapesWorld (balanced existence questions, POPE-style probes and, with `--other`, the other
short-answer types), the loss on the answer tokens only, mixed with a share of the stage-2 records with their usual
labels (`--replay`, in the model's training template) so the model keeps describing and asking. The LM (without its embeddings and head) and
the projector train whole with AdamW after a warm-up; the tower stays frozen.

    python -m llava.quickstart.focus --model checkpoints/sqllava-tiny --data outputs/quickstart/data \\
        --steps 1000 --other 0.3 --replay 0.25 --save outputs/focused

`--save` writes a merged checkpoint that the evaluation entry points read. With `--held-out N` it also prints
accuracy on N balanced existence questions and N probes drawn from scenes no export uses, and on the export's VQA
existence questions, every `--eval-every` steps (the binding experiments of docs/shapesworld.md).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from PIL import Image

from llava.data.collator import DataCollatorForSupervisedDataset
from llava.data.reader import read_records
from llava.data.tokenization import tokenize_conversation
from llava.inference.engine import InferenceEngine
from llava.shapesworld.language import existence_probe, make_question, with_suffix
from llava.shapesworld.render import render_scene
from llava.shapesworld.scene import WorldConfig, scene_stream
from llava.train import progress

Sample = tuple[Image.Image, str, str]  # image, question with the short-answer suffix, answer
OTHER_TYPES = ("color", "shape", "count", "position", "size")


def draw_sample(scene, rng: random.Random, world: WorldConfig, probe: float, other: float) -> Sample | None:
    """One short-answer sample: another type with odds `other`, else a probe with odds `probe`, else a balanced
    existence question (None when the scene admits none)."""
    if rng.random() < other:
        qa = make_question(scene, rng, rng.choice(OTHER_TYPES))
    elif rng.random() < probe:
        qa = existence_probe(scene, rng)
    else:
        qa = make_question(scene, rng, "existence")
    return None if qa is None else (render_scene(scene, world), with_suffix(qa.question), qa.answer)


def held_out(world: WorldConfig, stream: str, n: int, probe: float) -> list[Sample]:
    rng, out = random.Random(stream), []
    for scene in scene_stream(7, stream, world):
        sample = draw_sample(scene, rng, world, probe, 0.0)
        if sample is not None:
            out.append(sample)
        if len(out) == n:
            return out
    raise AssertionError("unreachable: scene_stream is endless")


def export_existence(data: Path) -> list[Sample]:
    """The export's VQA existence questions (the benchmark's rows), with their images."""
    rows = read_records(data / "eval/vqa/questions.jsonl", what="question")
    answers = {row["question_id"]: row["answer"] for row in read_records(data / "eval/vqa/answers.jsonl")}
    return [(Image.open(data / "images" / r["image"]).convert("RGB"), r["text"], answers[r["question_id"]])
            for r in rows if r["category"] == "existence"]


class Focus:
    """The model, its trainable parameters and the two passes the experiment needs."""

    def __init__(self, engine: InferenceEngine, lora_rank: int):
        self.engine, self.model, self.tokenizer = engine, engine.model, engine.tokenizer
        if lora_rank:
            from llava.model.lora import add_llm_lora, llm_lora_config

            add_llm_lora(self.model, llm_lora_config(self.model.language_model, lora_rank, 2 * lora_rank, 0.0))
        for param in self.model.parameters():
            param.requires_grad = False
        for name, param in self.model.named_parameters():
            in_lm = "language_model" in name and "embed_tokens" not in name and "lm_head" not in name
            if (in_lm and (not lora_rank or "lora_" in name)) or "mm_projector" in name:
                param.requires_grad = True  # embeddings, LM head and tower stay frozen, as in stage 2
        self.collate = DataCollatorForSupervisedDataset(self.tokenizer, self.model.num_image_tokens,
                                                        model_max_length=None)
        self.yes, self.no = (self.answer_ids(word)[0] for word in ("yes", "no"))
        if self.yes == self.no:
            raise ValueError("'yes' and 'no' start with the same token in this tokenizer; accuracy is read from "
                             "their first tokens")

    def answer_ids(self, answer: str) -> list[int]:
        """The ids an answer adds after the assistant cue, as the template renders it."""
        request = self.engine.request("?", Image.new("RGB", (1, 1)))
        prompt = self.engine.tokenize(request)
        request.conversation.messages[-1][1] = answer
        return self.engine.tokenize(request)[len(prompt):]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, batch: list[Sample]) -> torch.Tensor:
        """The model's loss on one-turn prompts, rendered, masked and collated as in training: the answer tokens and
        the template's closing `</s>` are trained."""
        pixels = self.engine.pixel_values([image for image, _, _ in batch])
        instances = []
        for row, (_, question, answer) in enumerate(batch):
            conv = self.engine.build_conversation(question)
            conv.messages[-1][1] = answer
            sample = tokenize_conversation(conv, self.tokenizer)
            instances.append({"input_ids": sample.input_ids, "labels": sample.labels,
                              "pixel_values": pixels[row : row + 1]})
        return self.model(**self.collate(instances)).loss

    @torch.no_grad()
    def yes_no_accuracy(self, samples: list[Sample], batch_size: int = 100) -> tuple[float, float]:
        """Accuracy and yes share when "yes" is predicted iff its logit beats "no"'s at the answer position."""
        self.model.eval()
        right = said_yes = 0
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            # the engine's own batching (left padding), so prompts are exactly what the eval entry points see
            inputs = self.engine._inputs([self.engine.request(q, img) for img, q, _ in chunk])
            logits = self.model(**inputs).logits[:, -1]
            yes = (logits[:, self.yes] > logits[:, self.no]).tolist()
            right += sum(y == (a == "yes") for y, (_, _, a) in zip(yes, chunk))
            said_yes += sum(yes)
        self.model.train()
        return right / len(samples), said_yes / len(samples)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m llava.quickstart.focus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a merged checkpoint (the quickstart's MERGED)")
    parser.add_argument("--data", type=Path, required=True, help="the ShapesWorld export the model was trained on")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="after the warm-up: constant, or cosine decay to 0 at the last step")
    parser.add_argument("--lora", type=int, default=0, help="LoRA rank on the LM (alpha = 2 x rank); 0 trains it whole")
    parser.add_argument("--probe", type=float, default=0.5, help="share of POPE-style probes among existence samples")
    parser.add_argument("--other", type=float, default=0.0, help="share of the other short-answer types")
    parser.add_argument("--replay", type=float, default=0.0,
                        help="share of each batch drawn from the export's stage-2 records (instruct.json, in the "
                             "checkpoint's template, with --sq-r for v1_sq; their usual labels), against forgetting how "
                             "to ask and describe")
    parser.add_argument("--sq-r", type=float, default=0.5, help="VUSER probability of replayed records (v1_sq)")
    parser.add_argument("--held-out", type=int, default=0, help="size of each drawn held-out set (0: none)")
    parser.add_argument("--eval-every", type=int, default=250, help="held-out scoring interval (with --held-out)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="write the merged result here")
    parser.add_argument("--curve", type=Path, help="write the accuracy curve here as JSON")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    world = WorldConfig.from_dict(json.loads((args.data / "world.json").read_text())["config"])
    focus = Focus(InferenceEngine.from_pretrained(args.model, device="cpu", dtype="float32"), args.lora)
    sets = {}
    if args.held_out:
        sets = {"balanced": held_out(world, "focus-balanced", args.held_out, 0.0),
                "probe": held_out(world, "focus-probe", args.held_out, 1.0),
                "vqa_existence": export_existence(args.data)}
        sets = {name: samples for name, samples in sets.items() if samples}  # a small export may hold no existence row
    optimizer = torch.optim.AdamW(focus.parameters(), lr=args.lr, weight_decay=0.0)
    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / args.warmup)
        if args.schedule == "constant":
            return warm
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, args.steps))))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    rng, scenes = random.Random(args.seed), scene_stream(args.seed, "focus-train", world)
    n_replay = round(args.batch * args.replay)
    if n_replay:
        from llava.conversation import get_template
        from llava.data.dataset import DataConfig, make_supervised_data_module

        template = focus.engine.conv_mode  # the checkpoint's training template; VUSER turns only where it has them
        replay = make_supervised_data_module(
            DataConfig(data_path=str(args.data / "instruct.json"), image_folder=str(args.data / "images"),
                       template=template, model_max_length=512, num_image_tokens=focus.model.num_image_tokens,
                       sq_r=args.sq_r if get_template(template).vuser_role else 0.0, seed=args.seed),
            focus.tokenizer, focus.engine.image_processor)
        replay_order = torch.randperm(len(replay["train_dataset"]), generator=torch.Generator().manual_seed(args.seed))
    curve: list[dict] = []
    losses: list[float] = []
    start = time.perf_counter()

    def report(step: int) -> None:
        if not sets:
            return
        row = {"step": step, "seconds": round(time.perf_counter() - start, 1)}
        for name, samples in sets.items():
            row[name], row[name + "_yes"] = (round(x, 3) for x in focus.yes_no_accuracy(samples))
        curve.append(row)
        print(json.dumps(row), flush=True)

    report(0)
    for step in range(1, args.steps + 1):
        batch: list[Sample] = []
        while len(batch) < args.batch - n_replay:
            sample = draw_sample(next(scenes), rng, world, args.probe, args.other)
            if sample is not None:
                batch.append(sample)
        loss = focus.loss(batch)
        if n_replay:
            picks = [replay_order[(step * n_replay + k) % len(replay_order)].item() for k in range(n_replay)]
            records = replay["data_collator"]([replay["train_dataset"][i] for i in picks])
            loss = (1 - args.replay) * loss + args.replay * focus.model(**records).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress.due(step, args.steps):
            print(progress.progress_line(step, args.steps, time.perf_counter() - start, sum(losses[-50:]) /
                                         len(losses[-50:])), flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            report(step)
    if args.curve:
        args.curve.parent.mkdir(parents=True, exist_ok=True)
        args.curve.write_text(json.dumps(curve, indent=1))
    if args.save:
        from llava.model.builder import save_pretrained_llava

        if args.lora:
            focus.model.language_model = focus.model.language_model.merge_and_unload()
        save_pretrained_llava(focus.model.eval(), args.save, tokenizer=focus.tokenizer,
                              image_processor=focus.engine.image_processor)
    return curve


if __name__ == "__main__":
    main()
