"""Tiny foundation models trained on ShapesWorld (tokenizer, contrastive CLIP tower, LLaMA LM), cached by config hash.

They stand in for vicuna-7b and clip-vit-large-patch14-336 and load through the same `from_pretrained` calls:
- `tokenizer/`: a LLaMA-convention SentencePiece BPE model (unk 0 `<unk>`, bos 1 `<s>`, eos 2 `</s>`, byte
  fallback) trained on ShapesWorld text and the template strings. The system prompts, the short-answer suffix and
  the role names are `user_defined_symbols`: every stage-2 prompt carries the ~90-word v1_sq system prompt, which
  therefore costs one token instead of ~110. transformers' (fast) LlamaTokenizer matches such a piece in the raw
  text; the bare `sentencepiece` library matches user symbols only after whitespace escaping, so it splits them
  (use `AutoTokenizer`, as the whole project does). Pieces never cross whitespace (`split_by_whitespace`), so
  "ASSISTANT:" and "VUSER:" tokenize the same in training prompts and generation cues.
- `vision/`: the vision half of a tiny `CLIPModel` trained contrastively on rendered scenes and discriminative
  captions (every object with size, colour, shape and grid position) with hard negatives (one attribute changed,
  two attributes swapped, an object moved, added or dropped); saved as `CLIPVisionModel` + `CLIPImageProcessor`.
  Patches are aligned with the 3x3 object grid (48 px images, patch 16 -> one patch per cell). The build checks
  held-out image->text top-1 retrieval and retrains with a new seed and more steps when it stays on the plateau.
- `lm/`: a tiny `LlamaForCausalLM` LM-pretrained on ShapesWorld text rendered through the real templates
  (captions, descriptions, multi-turn QA with USER/ASSISTANT/VUSER turns, text-only facts), saved with the tokenizer.

The quickstart uses the set shipped in the repository, `checkpoints/tiny-foundation/`, as a real run uses downloaded
CLIP and Vicuna. It was written by `bash scripts/build_foundation.sh` (`--ship`), which records the command, the
config, the library versions and every file's SHA-256 in its `foundation.json`; `--verify` checks them.
`python -m llava.quickstart.foundation --preset full` builds (or finds) a set under `checkpoints/tiny/<hash>/`
instead (the quickstart's `FOUNDATION=rebuild`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llava.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from llava.conversation import conv_templates
from llava.data.records import apply_self_questioning, build_conversation
from llava.shapesworld import (
    ALL_COLORS,
    CAPTION_PROMPT,
    DETAIL_PROMPT,
    SHORT_ANSWER_SUFFIX,
    Scene,
    SceneObject,
    WorldConfig,
    describe,
    make_captions,
    make_questions,
    position_name,
    render_scene,
    with_suffix,
)
from llava.shapesworld.language import CAPTION_INSTRUCTIONS, DETAIL_PROMPTS, TEXT_ONLY_QA
from llava.shapesworld.scene import derive_seed, scene_stream

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "checkpoints" / "tiny-foundation"
PARTS = ("tokenizer", "vision", "lm")
RECIPE_VERSION = 1  # bump when a build step changes in a way neither the config nor the generated data captures
ROLE_SYMBOLS = ("VUSER", "USER", "ASSISTANT")


@dataclasses.dataclass(frozen=True)
class FoundationConfig:
    """Everything that determines the built models; its hash names the cache folder."""

    seed: int = 0
    image_size: int = 48
    patch_size: int = 16
    # tokenizer
    vocab_size: int = 640
    tokenizer_docs: int = 4000
    # tiny CLIP
    vision_hidden: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    text_hidden: int = 64
    text_layers: int = 2
    clip_scenes: int = 8000
    clip_steps: int = 500
    clip_batch: int = 64
    clip_lr: float = 1e-3
    clip_hard_negatives: int = 2
    clip_min_top1: float = 0.8
    clip_attempts: int = 3
    # tiny LLaMA
    lm_hidden: int = 192
    lm_layers: int = 3
    lm_heads: int = 6
    lm_docs: int = 6000
    lm_steps: int = 600  # POPE adversarial F1 after stage 2: 0.58-0.71 over 3 seeds with 200, 0.78-0.81 over 3 runs with 600
    lm_batch: int = 16
    lm_seq: int = 256
    lm_lr: float = 2e-3

    def world(self) -> WorldConfig:
        return WorldConfig(image_size=self.image_size)

    def key(self) -> str:
        """The cache folder's name: the config, the recipe version and what the generator makes for this config."""
        blob = json.dumps({"recipe": RECIPE_VERSION, "generator": generator_fingerprint(self),
                           **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRESETS: dict[str, FoundationConfig] = {
    "full": FoundationConfig(),
    "ci": FoundationConfig(clip_steps=400, clip_scenes=6000, lm_steps=120, lm_docs=4000),
    # seconds, for unit tests: the files and loading paths, not quality
    "test": FoundationConfig(vocab_size=420, tokenizer_docs=300, vision_hidden=32, vision_layers=2, vision_heads=2,
                             text_hidden=32, text_layers=1, clip_scenes=256, clip_steps=4, clip_batch=16,
                             clip_min_top1=0.0, clip_attempts=1, lm_hidden=32, lm_layers=1, lm_heads=2,
                             lm_docs=64, lm_steps=2, lm_batch=2, lm_seq=64),
}


@dataclasses.dataclass
class Foundation:
    """Paths of one built set of foundation models and the metrics recorded when they were built."""

    root: Path
    config: FoundationConfig
    metrics: dict

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def vision_tower(self) -> Path:
        return self.root / "vision"

    @property
    def language_model(self) -> Path:
        return self.root / "lm"

    def as_dict(self) -> dict:
        return {"root": str(self.root), "key": self.config.key(), "tokenizer": str(self.tokenizer),
                "vision_tower": str(self.vision_tower), "language_model": str(self.language_model),
                "metrics": self.metrics}


def _log(msg: str) -> None:
    print(f"[foundation] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ text
def template_strings() -> list[str]:
    """System prompts and role words of the templates the quickstart uses (v1, llava_v1, v1_sq, plain)."""
    systems = dict.fromkeys(conv_templates[n].system for n in ("v1_sq", "v1", "llava_v1"))
    return [*systems, SHORT_ANSWER_SUFFIX, *ROLE_SYMBOLS]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _turns_for(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """One instruction conversation as (kind, text) turns; the mix follows the exported instruct data.

    Existence questions come from the world's plain stream (`balanced_existence=False`), where the phrase predicts
    the answer ('is there a circle' is always yes). An LM pretrained on that text learns to read the phrase before
    it says yes or no, which stage 2 can turn into looking the phrase up in the image; every foundation whose corpus
    had the exported, balanced questions left POPE at chance (6 of 6 runs; docs/shapesworld.md, "The foundation LM's corpus").
    """
    kind = rng.choices(("qa", "desc_qa", "detail", "caption", "text"), (0.5, 0.3, 0.08, 0.08, 0.04))[0]
    if kind == "text":
        return [t for q, a in rng.sample(TEXT_ONLY_QA, rng.randint(1, 3))
                for t in (("user", with_suffix(q)), ("assistant", a))]
    if kind in ("detail", "desc_qa"):
        turns = [("user", "<image>\n" + (DETAIL_PROMPT if kind == "desc_qa" else rng.choice(DETAIL_PROMPTS))),
                 ("assistant", describe(scene))]
        if kind == "detail":
            return turns
        qas = make_questions(scene, rng, n=rng.randint(1, 4), balanced_existence=False)
    elif kind == "caption":
        return [("user", "<image>\n" + CAPTION_PROMPT), ("assistant", make_captions(scene, rng, 1)[0])]
    else:
        turns, qas = [], make_questions(scene, rng, n=rng.randint(2, 5), balanced_existence=False)
    for qa in qas:
        turns += [("user", ("" if turns else "<image>\n") + qa.prompt()), ("assistant", qa.answer)]
    return turns


def text_documents(seed: int, n: int, world: WorldConfig) -> list[tuple[str, str]]:
    """`n` (template, prompt) pairs: ShapesWorld conversations rendered through v1_sq (SQ rate 0.5), v1 and plain.

    Scenes come from their own stream ('lm-text'), disjoint from the exported train/eval streams.
    """
    scenes = scene_stream(seed, "lm-text", world)
    docs = []
    for i in range(n):
        scene, rng = next(scenes), random.Random(derive_seed(seed, "lm-lang", i))
        if rng.random() < 0.12:  # stage-1 caption format: "<image>" + caption + "\n"
            caption = make_captions(scene, rng, 1)[0]
            conv = build_conversation([("user", "<image>\n" + rng.choice(CAPTION_INSTRUCTIONS)),
                                       ("assistant", caption)], "plain")
            docs.append(("plain", conv.get_prompt()))
            continue
        turns = _turns_for(scene, rng)
        template = "v1_sq" if rng.random() < 0.75 else "v1"
        if template == "v1_sq" and "<image>" in turns[0][1]:
            turns = apply_self_questioning(turns, 0.5, rng)
        docs.append((template, build_conversation(turns, template).get_prompt()))
    return docs


@functools.cache
def generator_fingerprint(config: FoundationConfig, n: int = 64) -> str:
    """A hash of the first `n` documents of the tokenizer and LM corpora and of the first CLIP scenes (captions, a
    hard negative, pixels): an edited ShapesWorld generator or renderer changes it, so the cache never hands back
    models built from another version's data."""
    world = config.world()
    h = hashlib.sha256()
    for seed in (config.seed, config.seed + 7):  # tokenizer corpus, LM corpus (build_tokenizer, lm_documents)
        for template, prompt in text_documents(seed, n, world):
            h.update(f"{template}\0{prompt}\0".encode())
    stream, rng = scene_stream(config.seed, "clip-train", world), random.Random(config.seed)
    scenes = [next(stream) for _ in range(n // 4)]
    for scene in scenes:
        h.update(f"{clip_caption(scene)}\0{clip_caption(perturb_scene(scene, rng, world))}\0".encode())
    h.update(_pixels(scenes, world).numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ tokenizer
def build_tokenizer(out: Path, config: FoundationConfig) -> dict:
    """Train the SentencePiece model and write `tokenizer.model` + `tokenizer_config.json` (LLaMA conventions)."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for _, prompt in text_documents(config.seed, config.tokenizer_docs, config.world()):
        lines += [s for s in prompt.replace("<image>", "\n").split("\n") if s.strip()]
    scenes = scene_stream(config.seed, "tok-captions", config.world())
    lines += [clip_caption(next(scenes)) for _ in range(config.tokenizer_docs // 4)]
    lines += [" ".join(ROLE_SYMBOLS) + ": </s>"] * 10 + list(ALL_COLORS)
    symbols = template_strings()
    prefix = out / "spm"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(prefix), model_type="bpe", vocab_size=config.vocab_size,
        byte_fallback=True, user_defined_symbols=symbols, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", character_coverage=1.0, split_by_whitespace=True,
        split_digits=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        add_dummy_prefix=True, hard_vocab_limit=False, num_threads=2, minloglevel=2,
    )
    shutil.move(str(prefix) + ".model", out / "tokenizer.model")
    os.remove(str(prefix) + ".vocab")
    _drop_build_path(out / "tokenizer.model")
    tok_config = {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": 2048, "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
        "pad_token": None, "padding_side": "right", "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    tok = AutoTokenizer.from_pretrained(str(out))
    probe = conv_templates["v1_sq"].system + " USER: What color is the circle?"
    n_sys = len(tok(conv_templates["v1_sq"].system, add_special_tokens=False).input_ids)
    return {"vocab_size": len(tok), "tokens_v1_sq_system": n_sys,
            "roundtrip": tok.decode(tok(probe).input_ids, skip_special_tokens=True) == probe,
            "user_defined_symbols": len(symbols)}


def _drop_build_path(model_file: Path) -> None:
    """SentencePiece stores the (temporary) output path in the model; without it the file is the same on every
    build, so the shipped set's hashes can be reproduced."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    proto.trainer_spec.model_prefix = ""
    model_file.write_bytes(proto.SerializeToString())


# ------------------------------------------------------------------------------------------ tiny CLIP
def clip_caption(scene: Scene) -> str:
    """Discriminative caption: every object with size, colour, shape and grid position, in reading order."""
    return _join([f"{_article(f'{o.size} {o.color} {o.shape}')} in the {position_name(o.row, o.col)}"
                  for o in scene.objects])


def perturb_scene(scene: Scene, rng: random.Random, world: WorldConfig) -> Scene:
    """A hard negative: the scene with one change (attribute, swap of two objects' attributes, move, add, drop)."""
    objs = list(scene.objects)
    empty = [(r, c) for r in range(3) for c in range(3) if scene.at(r, c) is None]
    ops = ["color", "shape", "size", "move"] + (["swap_color", "swap_shape", "drop"] if len(objs) > 1 else [])
    ops += ["add"] if empty and len(objs) < world.max_objects else []
    for _ in range(20):
        op = rng.choice(ops)
        new = list(objs)
        k = rng.randrange(len(objs))
        o = objs[k]
        if op in ("color", "shape", "size"):
            pool = {"color": world.colors, "shape": world.shapes, "size": world.sizes}[op]
            new[k] = dataclasses.replace(o, **{op: rng.choice([v for v in pool if v != getattr(o, op)])})
        elif op == "move" and empty:
            r, c = rng.choice(empty)
            new[k] = dataclasses.replace(o, row=r, col=c)
        elif op.startswith("swap_"):
            attr = op[5:]
            j = rng.choice([i for i in range(len(objs)) if i != k])
            new[k] = dataclasses.replace(o, **{attr: getattr(objs[j], attr)})
            new[j] = dataclasses.replace(objs[j], **{attr: getattr(o, attr)})
        elif op == "drop":
            new.pop(k)
        elif op == "add":
            r, c = rng.choice(empty)
            new.append(SceneObject(rng.choice(world.shapes), rng.choice(world.colors), rng.choice(world.sizes), r, c))
        candidate = Scene(tuple(new), scene.grid, scene.seed)
        if clip_caption(candidate) != clip_caption(scene):
            return candidate
    return Scene(tuple(objs[:-1]) if len(objs) > 1 else (dataclasses.replace(objs[0], color=next(
        c for c in world.colors if c != objs[0].color)),), scene.grid, scene.seed)


def image_processor_for(image_size: int):
    from llava.model.image_processor import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True,
    )


def _pixels(scenes: list[Scene], world: WorldConfig) -> torch.Tensor:
    """uint8 [N, 3, S, S]; `_normalize` turns it into exactly what CLIPImageProcessor gives (checked in tests)."""
    arr = np.stack([np.asarray(render_scene(s, world), dtype=np.uint8) for s in scenes])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


_MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)


def _normalize(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels.float() / 255.0 - _MEAN) / _STD


class _CaptionEncoder:
    """Token ids for the CLIP text tower: tokenizer pieces (no BOS) + an end-of-text id appended (pooled there)."""

    def __init__(self, tokenizer, max_len: int = 64):
        self.tok, self.eot, self.max_len = tokenizer, len(tokenizer), max_len

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [ids[: self.max_len - 1] + [self.eot] for ids in self.tok(texts, add_special_tokens=False).input_ids]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask


def _clip_model(config: FoundationConfig, vocab: int, seed: int):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    vision = {"hidden_size": config.vision_hidden, "intermediate_size": 4 * config.vision_hidden,
              "num_hidden_layers": config.vision_layers, "num_attention_heads": config.vision_heads,
              "image_size": config.image_size, "patch_size": config.patch_size,
              "projection_dim": config.vision_hidden}
    text = {"vocab_size": vocab + 1, "hidden_size": config.text_hidden, "intermediate_size": 4 * config.text_hidden,
            "num_hidden_layers": config.text_layers, "num_attention_heads": max(1, config.text_hidden // 32),
            "max_position_embeddings": 64, "eos_token_id": vocab, "bos_token_id": vocab, "pad_token_id": 0,
            "projection_dim": config.vision_hidden}
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.vision_hidden)
    return CLIPModel(cfg)


def _clip_embed(model, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    img = model.get_image_features(pixel_values=_normalize(pixels)).pooler_output
    txt = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


@torch.no_grad()
def clip_retrieval(model, encode: _CaptionEncoder, scenes: list[Scene], pixels: torch.Tensor, world: WorldConfig,
                   seed: int = 0) -> dict:
    """Held-out retrieval: image->text top-1 among the batch's captions, and the share of images whose caption beats
    each of two hard negatives (fine-grained binding)."""
    model.eval()
    rng = random.Random(seed)
    captions = [clip_caption(s) for s in scenes]
    negatives = [clip_caption(perturb_scene(s, rng, world)) for s in scenes for _ in range(2)]
    img, txt = _clip_embed(model, pixels, *encode(captions))
    _, neg = _clip_embed(model, pixels[:1], *encode(negatives))
    sims = img @ txt.T
    top1 = (sims.argmax(1) == torch.arange(len(scenes))).float().mean().item()
    pos = sims.diag().unsqueeze(1)
    neg_sims = (img.unsqueeze(1) * neg.view(len(scenes), 2, -1)).sum(-1)
    hard = (pos > neg_sims).float().mean().item()
    model.train()
    return {"i2t_top1": round(top1, 4), "hard_negative_acc": round(hard, 4), "batch": len(scenes)}


def train_clip(config: FoundationConfig, tokenizer, seed: int, steps: int) -> tuple[object, dict]:
    """Contrastive training with hard negatives in the image->text direction; returns (CLIPModel, metrics)."""
    world = config.world()
    t0 = time.perf_counter()
    stream = scene_stream(seed, "clip-train", world)
    scenes = [next(stream) for _ in range(config.clip_scenes)]
    pixels = _pixels(scenes, world)
    captions = [clip_caption(s) for s in scenes]
    val_stream = scene_stream(config.seed, "clip-val", world)
    val_scenes = [next(val_stream) for _ in range(128)]
    val_pixels = _pixels(val_scenes, world)
    encode = _CaptionEncoder(tokenizer)
    model = _clip_model(config, len(tokenizer), seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.clip_lr, weight_decay=0.05, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    b = min(config.clip_batch, len(scenes))
    for step in range(steps):
        idx = torch.randperm(len(scenes), generator=gen)[:b].tolist()
        texts = [captions[i] for i in idx]
        texts += [clip_caption(perturb_scene(scenes[i], rng, world)) for i in idx for _ in range(config.clip_hard_negatives)]
        img, txt = _clip_embed(model, pixels[idx], *encode(texts))
        scale = model.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * img @ txt.T  # [b, b * (1 + K)]
        target = torch.arange(b)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :b].T, target))
        _train_step(model, opt, sched, loss, losses, step, steps, "clip")
    metrics = clip_retrieval(model, encode, val_scenes, val_pixels, world, seed=config.seed)
    metrics.update(seed=seed, steps=steps, final_loss=round(float(np.mean(losses[-50:])), 4),
                   plateau_loss=round(math.log(b), 4), wall_s=round(time.perf_counter() - t0, 1))
    return model, metrics


def build_vision_tower(out: Path, config: FoundationConfig, tokenizer) -> dict:
    """Train the tiny CLIP (retrying on the ln(batch) plateau), save its vision half + image processor."""
    attempts = []
    model = None
    for attempt in range(config.clip_attempts):
        steps = int(config.clip_steps * (1.5 ** attempt))
        model, metrics = train_clip(config, tokenizer, config.seed + 1000 * attempt, steps)
        attempts.append(metrics)
        _log(f"clip attempt {attempt + 1}: {metrics}")
        if metrics["i2t_top1"] >= config.clip_min_top1:
            break
    out.mkdir(parents=True, exist_ok=True)
    model.vision_model.save_pretrained(str(out))
    image_processor_for(config.image_size).save_pretrained(str(out))
    best = attempts[-1]
    return {**best, "attempts": len(attempts), "passed": best["i2t_top1"] >= config.clip_min_top1,
            "history": attempts}


def _train_step(model, opt, sched, loss, losses: list[float], step: int, steps: int, name: str) -> None:
    """Backward, clip to 1.0, step optimizer and schedule, record the loss; log five times per run."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    losses.append(loss.item())
    if (step + 1) % max(1, steps // 5) == 0:
        _log(f"{name} step {step + 1}/{steps} loss {np.mean(losses[-50:]):.3f}")


# ------------------------------------------------------------------------------------------ tiny LLaMA
def lm_documents(config: FoundationConfig, tokenizer) -> list[list[int]]:
    """Token ids of the LM corpus, tokenized exactly as training prompts are (image sentinels dropped)."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.data.tokenization import tokenizer_image_token

    docs = []
    for template, prompt in text_documents(config.seed + 7, config.lm_docs, config.world()):
        ids = [t for t in tokenizer_image_token(prompt, tokenizer) if t != IMAGE_TOKEN_INDEX]
        if template == "plain":  # stage 1 trains no EOS; the LM corpus ends every document with one
            ids.append(tokenizer.eos_token_id)
        docs.append(ids[:256])
    return docs


def build_language_model(out: Path, config: FoundationConfig, tokenizer_dir: Path) -> dict:
    """LM-pretrain a tiny LLaMA on the ShapesWorld corpus; save it with the tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs = lm_documents(config, tokenizer)
    n_val = max(1, len(docs) // 50)
    val, train = docs[:n_val], docs[n_val:]
    torch.manual_seed(config.seed)
    lm_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.lm_hidden, intermediate_size=2 * config.lm_hidden,
        num_hidden_layers=config.lm_layers, num_attention_heads=config.lm_heads,
        num_key_value_heads=config.lm_heads, max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.unk_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(lm_config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lm_lr, weight_decay=0.0, betas=(0.9, 0.98))
    steps = config.lm_steps
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    gen = torch.Generator().manual_seed(config.seed)

    def batch(rows: list[list[int]]) -> dict:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.unk_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    # Documents are packed into fixed-length rows (no padding); each starts with its own BOS.
    stream = [t for i in torch.randperm(len(train), generator=gen).tolist() for t in train[i]]
    rows = [stream[i : i + config.lm_seq] for i in range(0, len(stream) - config.lm_seq + 1, config.lm_seq)]
    losses = []
    for step in range(steps):
        idx = torch.randint(len(rows), (config.lm_batch,), generator=gen).tolist()
        ids = torch.tensor([rows[i] for i in idx])
        loss = model(input_ids=ids, labels=ids).loss
        _train_step(model, opt, sched, loss, losses, step, steps, "lm")
    model.eval()
    with torch.no_grad():
        val_loss = float(np.mean([model(**batch(val[i : i + 32])).loss.item() for i in range(0, len(val), 32)]))
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.unk_token_id
    model.save_pretrained(str(out))
    for name in ("tokenizer.model", "tokenizer_config.json"):  # the very files of tokenizer/, not a re-export
        shutil.copy(tokenizer_dir / name, out / name)
    return {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "steps": steps,
            "final_loss": round(float(np.mean(losses[-50:])), 4), "val_loss": round(val_loss, 4),
            "val_ppl": round(math.exp(val_loss), 3), "docs": len(docs),
            "mean_doc_tokens": round(float(np.mean([len(d) for d in docs])), 1),
            "wall_s": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------------------------------ cache
def build_foundation(root: str | Path = "checkpoints/tiny", config: FoundationConfig | str = "full",
                     force: bool = False, threads: int | None = None) -> Foundation:
    """Build (or find in `root/<config hash>/`) the tokenizer, the vision tower and the LM."""
    if isinstance(config, str):
        config = PRESETS[config]
    final = Path(root) / config.key()
    if (final / "foundation.json").is_file() and not force:
        record = json.loads((final / "foundation.json").read_text())
        _log(f"cached: {final}")
        return Foundation(final, config, {**record["metrics"], "cached": True})
    if threads:
        torch.set_num_threads(threads)
    tmp = Path(root) / f".{config.key()}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    metrics: dict = {}
    timings: dict = {}
    from transformers import AutoTokenizer

    t = time.perf_counter()
    metrics["tokenizer"] = build_tokenizer(tmp / "tokenizer", config)
    timings["tokenizer_s"] = round(time.perf_counter() - t, 1)
    _log(f"tokenizer {metrics['tokenizer']} in {timings['tokenizer_s']} s")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp / "tokenizer"))
    t = time.perf_counter()
    metrics["vision"] = build_vision_tower(tmp / "vision", config, tokenizer)
    timings["vision_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    metrics["lm"] = build_language_model(tmp / "lm", config, tmp / "tokenizer")
    timings["lm_s"] = round(time.perf_counter() - t, 1)
    _log(f"lm {metrics['lm']}")
    metrics["timings"] = timings
    record = {"key": config.key(), "recipe": RECIPE_VERSION, "generator": generator_fingerprint(config),
              "config": dataclasses.asdict(config), "metrics": metrics}
    (tmp / "foundation.json").write_text(json.dumps(record, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return Foundation(final, config, {**metrics, "cached": False})


# ------------------------------------------------------------------------------------------ shipped set
class FoundationError(RuntimeError):
    """A shipped foundation set that is missing, incomplete or altered."""


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file of the three model folders, by path relative to `root`."""
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for part in PARTS for f in sorted((root / part).rglob("*")) if f.is_file()}


def ship(found: Foundation, out: Path, command: str, threads: int | None) -> dict:
    """Copy a built set to `out` with its build record: command, config, versions, file hashes."""
    import transformers

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in PARTS:
        shutil.copytree(found.root / part, tmp / part)
    record = json.loads((found.root / "foundation.json").read_text())
    record["build"] = {"command": command, "threads": threads, "torch": torch.__version__,
                       "transformers": transformers.__version__, "python": sys.version.split()[0]}
    record["files"] = file_hashes(tmp)
    record["size_bytes"] = sum((tmp / name).stat().st_size for name in record["files"])
    (tmp / "foundation.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return record


def verify(root: Path = SHIPPED, check_generator: bool = True) -> Foundation:
    """The shipped set at `root` after checking every recorded hash; warns when ShapesWorld's generator has changed
    since it was built (models trained on another version's data)."""
    record_file = root / "foundation.json"
    if not record_file.is_file():
        raise FoundationError(f"{root} holds no foundation.json: not a shipped foundation set (restore it with "
                              f"`git checkout -- {root}`, or build one: FOUNDATION=rebuild)")
    record = json.loads(record_file.read_text())
    actual = file_hashes(root)
    for name, digest in record.get("files", {}).items():
        if name not in actual:
            raise FoundationError(f"{root / name} is missing (git lfs or a partial checkout?); restore it with "
                                  f"`git checkout -- {root}` or rebuild: FOUNDATION=rebuild")
        if actual[name] != digest:
            raise FoundationError(f"{root / name} differs from the SHA-256 recorded in {record_file}; restore it "
                                  f"with `git checkout -- {root}` or rebuild: FOUNDATION=rebuild")
    extra = sorted(set(actual) - set(record.get("files", {})))
    if extra:
        raise FoundationError(f"{root} holds files its foundation.json does not record: {extra[:3]}")
    config = FoundationConfig(**record["config"])
    if check_generator and record.get("generator") != generator_fingerprint(config):
        _log(f"warning: ShapesWorld's generator changed since {root} was built; models trained on this version's "
             f"data: FOUNDATION=rebuild (or bash scripts/build_foundation.sh to re-ship)")
    return Foundation(root, config, {**record["metrics"], "cached": True})


def main(argv: list[str] | None = None) -> Foundation:
    p = argparse.ArgumentParser(prog="python -m llava.quickstart.foundation", description=__doc__.splitlines()[0])
    p.add_argument("--root", default="checkpoints/tiny")
    p.add_argument("--preset", default="full", choices=sorted(PRESETS))
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override config fields")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shell", action="store_true", help="print shell assignments instead of JSON")
    p.add_argument("--ship", type=Path, metavar="DIR",
                   help="build (or find in --root), then write the set to DIR with its build record "
                        "(scripts/build_foundation.sh)")
    p.add_argument("--verify", type=Path, metavar="DIR", help="use the shipped set in DIR after checking its hashes")
    a = p.parse_args(argv)
    if a.verify:
        try:
            found = verify(a.verify)
        except FoundationError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        _print(found, a.shell)
        return found
    config = PRESETS[a.preset]
    fields = {f.name: f.type for f in dataclasses.fields(FoundationConfig)}
    overrides = {}
    for item in a.set:
        name, value = item.split("=", 1)
        if name not in fields:
            p.error(f"unknown field {name!r}; fields: {sorted(fields)}")
        overrides[name] = type(getattr(config, name))(value)
    config = dataclasses.replace(config, **overrides)
    # Libraries print to stdout while building (DeepSpeed's accelerator notice...); keep stdout for the result.
    with contextlib.redirect_stdout(sys.stderr):
        found = build_foundation(a.root, config, force=a.force, threads=a.threads)
        if a.ship:
            args = list(argv if argv is not None else sys.argv[1:])
            if "--root" in args:  # where the build is cached does not change what is built
                del args[args.index("--root") : args.index("--root") + 2]
            command = "python -m llava.quickstart.foundation " + " ".join(args)
            record = ship(found, a.ship, command, a.threads)
            found = Foundation(a.ship, config, found.metrics)
            _log(f"shipped {len(record['files'])} files, {record['size_bytes'] / 1e6:.1f} MB, to {a.ship}")
    _print(found, a.shell)
    return found


def _print(found: Foundation, shell: bool) -> None:
    if shell:
        print(f"TINY_ROOT={found.root}\nTINY_TOKENIZER={found.tokenizer}\nTINY_VISION_TOWER={found.vision_tower}\n"
              f"TINY_LM={found.language_model}\nTINY_IMAGE_SIZE={found.config.image_size}")
    else:
        print(json.dumps(found.as_dict(), indent=1))


if __name__ == "__main__":
    main()
