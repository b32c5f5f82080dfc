"""Ours vs transformers' LlavaForConditionalGeneration in one run: training steps, projectors, generation; table + JSON.

    python scripts/bench/bench_vlm.py --preset 7b --out bench_7b.json     # one GPU, LLaVA-1.5-7B shapes
    python scripts/bench/bench_vlm.py --preset tiny --out bench_tiny.json # any CPU, seconds

Random weights built from configs (nothing is downloaded). See scripts/bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flops  # noqa: E402
import meter as meters  # noqa: E402
import presets  # noqa: E402

BENCHES = ("projector", "generate", "engine", "stage1", "stage2", "stage2_fast", "varlen")
IMPLS = ("ours", "hf")
IMPL_NAMES = {"ours": "ours", "hf": "transformers"}


def log(kind: str, row: dict) -> None:
    """One line per finished row on stderr, so that a run cut short by a time limit still shows its numbers."""
    keys = ("bench", "projector", "impl", "path", "variant", "batch", "tokens_per_s", "mfu", "fwd_bwd_ms",
            "samples_per_s", "peak_mem_gib", "error")
    parts = [f"{k}={row[k]:.4g}" if isinstance(row.get(k), float) else f"{k}={row[k]}" for k in keys if k in row]
    print(f"[{kind}] " + " ".join(parts), file=sys.stderr, flush=True)


@dataclasses.dataclass
class Context:
    preset: presets.Preset
    device: torch.device
    dtype: torch.dtype
    meter: meters.Meter
    peak_tflops: float
    cost: flops.ModelCost
    warmup: int
    steps: int
    gen_batches: tuple[int, ...]
    train_projector: str


# ---------------------------------------------------------------------------------------------- training
def _unwrap(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def projector_of(model: nn.Module, impl: str) -> nn.Module:
    return model.mm_projector if impl == "ours" else _unwrap(model).model.multi_modal_projector


def setup_stage1(model: nn.Module, impl: str) -> nn.Module:
    model.requires_grad_(False)
    projector_of(model, impl).requires_grad_(True)
    return model


def setup_stage2(model: nn.Module, impl: str, preset: presets.Preset) -> nn.Module:
    """LoRA on every LLM Linear but lm_head (the project's rule for ours, the same targets for transformers'), plus
    the projector."""
    model.requires_grad_(False)
    if impl == "ours":
        from llava.model import lora

        config = lora.llm_lora_config(model.language_model, preset.lora_r, preset.lora_alpha, preset.lora_dropout)
        lora.add_llm_lora(model, config)
    else:
        from peft import LoraConfig, get_peft_model

        targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
        model = get_peft_model(model, LoraConfig(r=preset.lora_r, lora_alpha=preset.lora_alpha,
                                                 lora_dropout=preset.lora_dropout, target_modules=targets))
    projector_of(model, impl).requires_grad_(True)
    return model


def set_checkpointing(model: nn.Module, on: bool) -> None:
    if on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _to_device(batch: dict, ctx: Context) -> dict:
    out = {}
    for key, value in batch.items():
        value = value.to(ctx.device)
        out[key] = value.to(ctx.dtype) if value.is_floating_point() else value
    return out


def _timed_steps(ctx: Context, model: nn.Module, trainable: list, inputs: dict, kwargs: dict) -> tuple[float, float]:
    """Seconds per optimizer step (forward, backward, AdamW; fused on CUDA) after the warm-up, and the last loss."""
    optimizer = torch.optim.AdamW(trainable, lr=1e-6, fused=ctx.device.type == "cuda")

    def step() -> torch.Tensor:
        loss = model(**inputs, **kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    ctx.meter.reset_peak()
    for _ in range(ctx.warmup):
        step()
    start = ctx.meter.now()
    for _ in range(ctx.steps):
        loss = step()
    return (ctx.meter.now() - start) / ctx.steps, float(loss)


def run_train(ctx: Context, model: nn.Module, impl: str, bench: str, variant: str, batch: dict, lengths: list[int],
              ckpt: bool, forward_kwargs: dict | None = None) -> dict:
    """Optimizer steps on one fixed batch: warm-up, then `steps` timed steps (forward, backward, fused AdamW)."""
    shape = tuple(batch["input_ids"].shape)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_adapters = flops.lora_params(model)
    n_projector = flops.count_params(projector_of(model, impl))
    step_flops = ctx.cost.step_flops(lengths, len(lengths), n_adapters=n_adapters, n_projector=n_projector)
    row = {"bench": bench, "impl": IMPL_NAMES[impl], "variant": variant, "samples": len(lengths),
           "rows_x_width": list(shape), "tokens_per_step": sum(lengths), "ckpt": ckpt,
           "trainable_params": sum(p.numel() for p in trainable), "lora_params": n_adapters,
           "flops_per_step": step_flops}
    try:
        set_checkpointing(model, ckpt)
        model.train()
        seconds, loss = _timed_steps(ctx, model, trainable, _to_device(batch, ctx), forward_kwargs or {})
        tflops = step_flops / seconds / 1e12
        row.update(step_s=seconds, tokens_per_s=sum(lengths) / seconds, tflops=tflops,
                   mfu=tflops / ctx.peak_tflops, peak_mem_gib=ctx.meter.peak_gib(), loss=loss)
    except Exception as err:  # an out-of-memory row is a result; anything else is a bug
        if not meters.is_oom(err):
            raise
        row["error"] = "out of memory"
    finally:
        model.zero_grad(set_to_none=True)
        set_checkpointing(model, False)
        ctx.meter.free()
    log("train", row)
    return row


def train_benches(ctx: Context, model: nn.Module, impl: str, only: set[str], sink: list[dict],
                  save=lambda: None) -> nn.Module:
    """The training rows of one implementation, appended to `sink` (and saved) one by one; returns the model."""
    preset = ctx.preset

    def add(row: dict) -> None:
        sink.append(row)
        save()

    # ours: the default (chunked loss) and the plain path (full logits) side by side.
    variants = [("default", {}), ("plain CE (full logits)", {"return_logits": True})] if impl == "ours" else [
        ("default", {})]

    def fixed(shape: presets.TrainShape) -> tuple[dict, list[int]]:
        items = presets.samples(preset, [shape.seq] * shape.batch)
        batch = presets.padded_batch(preset, items)
        return (presets.to_hf_batch(preset, batch) if impl == "hf" else batch), [shape.seq] * shape.batch

    if "stage1" in only:
        setup_stage1(model, impl)
        batch, lengths = fixed(preset.stage1)
        for name, kwargs in variants:
            add(run_train(ctx, model, impl, "stage1", name, batch, lengths, preset.stage1.ckpt, kwargs))
    if only & {"stage2", "stage2_fast", "varlen"}:
        model = setup_stage2(model, impl, preset)
        if "stage2" in only:
            batch, lengths = fixed(preset.stage2)
            for name, kwargs in variants:
                add(run_train(ctx, model, impl, "stage2", name, batch, lengths, preset.stage2.ckpt, kwargs))
        if "stage2_fast" in only:
            batch, lengths = fixed(preset.stage2_fast)
            add(run_train(ctx, model, impl, "stage2_fast", "default", batch, lengths, preset.stage2_fast.ckpt))
        if "varlen" in only:
            lengths = presets.varlen_lengths(preset)
            items = presets.samples(preset, lengths)
            padded = presets.padded_batch(preset, items)
            if impl == "hf":
                add(run_train(ctx, model, impl, "varlen", "padded", presets.to_hf_batch(preset, padded),
                              lengths, preset.stage2.ckpt))
            else:
                add(run_train(ctx, model, impl, "varlen", "padded", padded, lengths, preset.stage2.ckpt))
                for row_tokens in preset.varlen.row_tokens:
                    name = f"packed (rows <= {row_tokens})" if row_tokens else "packed (one row)"
                    add(run_train(ctx, model, impl, "varlen", name, presets.packed_batch(preset, items, row_tokens),
                                  lengths, preset.stage2.ckpt))
    return model


# ---------------------------------------------------------------------------------------------- generation
def _timed_batches(ctx: Context, run, min_time: float) -> tuple[float, int, object]:
    """Warm up once, then repeat `run` until `min_time` seconds have passed (at least once)."""
    run()
    start = ctx.meter.now()
    count, result = 0, None
    while True:
        result = run()
        count += 1
        elapsed = ctx.meter.now() - start
        if elapsed >= min_time:
            return elapsed, count, result


def generate_benches(ctx: Context, model: nn.Module, impl: str) -> list[dict]:
    """model.generate on prompts of image + text positions, exactly gen_new_tokens new tokens, greedy."""
    preset, rows = ctx.preset, []
    model.eval()
    new = preset.gen_new_tokens
    kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "use_cache": True, "pad_token_id": 0}
    for bs in ctx.gen_batches:
        row = {"impl": IMPL_NAMES[impl], "path": "model.generate", "batch": bs,
               "prompt_tokens": preset.image_tokens + preset.gen_text_tokens, "new_tokens": new}
        try:
            inputs = _to_device(presets.generation_inputs(preset, bs, impl), ctx)
            ctx.meter.reset_peak()
            with torch.inference_mode():
                seconds, count, out = _timed_batches(ctx, partial(model.generate, **inputs, **kwargs),
                                                     preset.gen_min_time_s)
            produced = out.shape[1] - (inputs["input_ids"].shape[1] if impl == "hf" else 0)
            row.update(samples_per_s=bs * count / seconds, new_tokens_per_s=bs * count * produced / seconds,
                       batch_s=seconds / count, new_tokens_observed=int(produced), peak_mem_gib=ctx.meter.peak_gib())
        except Exception as err:
            if not meters.is_oom(err):
                raise
            row["error"] = "out of memory"
        finally:
            ctx.meter.free()
        log("generate", row)
        rows.append(row)
    return rows


def paired_generate_benches(ctx: Context, models: dict[str, nn.Module]) -> list[dict]:
    """model.generate of both implementations in alternating rounds (the order flips every round), so drift of a
    shared machine hits both alike; each row's samples/s is batch / the median round time. Used on the CPU, where
    both models fit beside each other and run-to-run drift is larger than the difference being measured."""
    preset, rows = ctx.preset, []
    new = preset.gen_new_tokens
    kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "use_cache": True, "pad_token_id": 0}
    for bs in ctx.gen_batches:
        inputs = {impl: _to_device(presets.generation_inputs(preset, bs, impl), ctx) for impl in models}
        times: dict[str, list[float]] = {impl: [] for impl in models}
        produced: dict[str, int] = {}
        with torch.inference_mode():
            for impl, model in models.items():
                model.eval()
                model.generate(**inputs[impl], **kwargs)  # warm-up
            start, rnd = ctx.meter.now(), 0
            while rnd < 5 or ctx.meter.now() - start < 2 * preset.gen_min_time_s:
                order = list(models) if rnd % 2 == 0 else list(models)[::-1]
                for impl in order:
                    t0 = ctx.meter.now()
                    out = models[impl].generate(**inputs[impl], **kwargs)
                    times[impl].append(ctx.meter.now() - t0)
                    produced[impl] = out.shape[1] - (inputs[impl]["input_ids"].shape[1] if impl == "hf" else 0)
                rnd += 1
        for impl in models:
            median = sorted(times[impl])[len(times[impl]) // 2]
            row = {"impl": IMPL_NAMES[impl], "path": "model.generate", "batch": bs,
                   "prompt_tokens": preset.image_tokens + preset.gen_text_tokens, "new_tokens": new,
                   "samples_per_s": bs / median, "new_tokens_per_s": bs * produced[impl] / median, "batch_s": median,
                   "new_tokens_observed": int(produced[impl]), "rounds": len(times[impl]), "paired": True,
                   "peak_mem_gib": ctx.meter.peak_gib()}  # the process's, both models resident
            log("generate", row)
            rows.append(row)
    return rows


def engine_benches(ctx: Context, model: nn.Module) -> list[dict]:
    """The project's InferenceEngine end to end: PIL images -> preprocessing -> prompts -> generate -> text."""
    from PIL import Image

    from llava.inference.engine import GenerationSettings, InferenceEngine

    preset, rows = ctx.preset, []
    model.eval()
    lm_config = model.language_model.generation_config
    saved_eos, lm_config.eos_token_id = lm_config.eos_token_id, None  # random weights must not stop early
    try:
        tokenizer = presets.synthetic_tokenizer(model.config.vocab_size)
        engine = InferenceEngine(tokenizer, model, presets.image_processor(preset), conv_mode="v1",
                                 device=ctx.device)
        question, n_text = presets.engine_question(engine, preset.gen_text_tokens)
        width, height = preset.engine_image_size
        gen = torch.Generator().manual_seed(0)
        image = Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=gen, dtype=torch.uint8).numpy())
        settings = GenerationSettings(max_new_tokens=preset.gen_new_tokens)
        for bs in ctx.gen_batches:
            requests = [engine.request(question, image.copy(), id=i) for i in range(bs)]
            row = {"impl": "ours", "path": "engine", "batch": bs, "prompt_tokens": preset.image_tokens + n_text,
                   "new_tokens": preset.gen_new_tokens}
            try:
                ctx.meter.reset_peak()
                seconds, count, answers = _timed_batches(ctx, partial(engine.generate_batch, requests, settings),
                                                         preset.gen_min_time_s)
                observed = min(len(a.split()) for a in answers)
                row.update(samples_per_s=bs * count / seconds,
                           new_tokens_per_s=bs * count * preset.gen_new_tokens / seconds, batch_s=seconds / count,
                           new_tokens_observed=observed, peak_mem_gib=ctx.meter.peak_gib())
            except Exception as err:
                if not meters.is_oom(err):
                    raise
                row["error"] = "out of memory"
            finally:
                ctx.meter.free()
            log("generate", row)
            rows.append(row)
    finally:
        lm_config.eos_token_id = saved_eos
    return rows


def generation_summary(rows: list[dict]) -> list[dict]:
    out = []
    for key in dict.fromkeys((r["impl"], r["path"]) for r in rows):
        ok = [r for r in rows if (r["impl"], r["path"]) == key and "samples_per_s" in r]
        if not ok:
            continue
        best = max(ok, key=lambda r: r["samples_per_s"])
        one = next((r for r in ok if r["batch"] == 1), None)
        out.append({"impl": key[0], "path": key[1], "batch1_samples_per_s": one["samples_per_s"] if one else None,
                    "best_batch": best["batch"], "best_samples_per_s": best["samples_per_s"]})
    return out


# ---------------------------------------------------------------------------------------------- projectors
class BroadcastCluster(nn.Module):
    """The reference `Clustering` forward with its two [B, K, L, D] broadcasts, on a ClusterProjector's
    weights: the form the peer baseline timed (57 ms, 9.6 GiB at batch 16)."""

    def __init__(self, cluster: nn.Module):
        super().__init__()
        self.inner = cluster

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from llava.model.multimodal_projector.cluster import pool_tokens

        p = self.inner
        value, feature = p.v(x), p.f(x)
        centers, pooled = pool_tokens(x, p.num_centers), pool_tokens(feature, p.num_centers)
        value_hat = F.normalize(value, dim=1).transpose(1, 2)
        for _ in range(p.num_iters):
            centers = p.c(centers)
            centers = (F.normalize(centers, dim=-1) @ value_hat).softmax(dim=1) @ feature
        cos = F.normalize(centers, dim=-1) @ F.normalize(x, dim=-1).transpose(1, 2)
        gate = torch.sigmoid(p.sim_beta + p.sim_alpha * cos)
        mask = torch.zeros_like(gate).scatter_(1, gate.argmax(dim=1, keepdim=True), 1.0)
        kept = gate * mask
        agg = ((feature.unsqueeze(1) * kept.unsqueeze(-1)).sum(dim=2) + pooled) / (mask.sum(-1, keepdim=True) + 1.0)
        y = x + (agg.unsqueeze(2) * kept.unsqueeze(-1)).sum(dim=1)
        return p.mlp(y)


def _projector_step(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None) -> torch.Tensor:
    out = module(x)
    out.backward(grad_out if grad_out is not None else torch.ones_like(out))
    module.zero_grad(set_to_none=True)
    return out.detach()


def projector_benches(ctx: Context) -> list[dict]:
    """Forward + backward (parameter gradients; the tower is frozen) at batch projector_batch, 576 x D -> H."""
    from transformers import LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    from llava.model.multimodal_projector.builder import build_vision_projector

    preset, rows = ctx.preset, []
    d, h = preset.vision["hidden_size"], preset.text["hidden_size"]
    cfg = dict(mm_hidden_size=d, hidden_size=h, mm_cluster_centers=preset.cluster_centers,
               mm_cluster_iters=preset.cluster_iters, num_latents=preset.num_latents)

    def ours(kind: str) -> nn.Module:
        return build_vision_projector(SimpleNamespace(mm_projector_type=kind, **cfg))

    def theirs() -> nn.Module:
        config = LlavaConfig(vision_config=presets.vision_config(preset).to_dict(),
                             text_config=presets.text_config(preset).to_dict(), projector_hidden_act="gelu",
                             multimodal_projector_bias=True, vision_feature_layer=-2)
        return LlavaMultiModalProjector(config)

    torch.manual_seed(0)
    cluster = ours("cluster")
    entries = [("mlp2x_gelu", "ours", ours("mlp2x_gelu")), ("mlp2x_gelu", "transformers", theirs()),
               ("cluster", "ours (matmul)", cluster), ("cluster", "reference (broadcast)", BroadcastCluster(cluster)),
               ("cross_attn", "ours", ours("cross_attn"))]
    x = torch.randn(preset.projector_batch, preset.image_tokens, d, device=ctx.device, dtype=ctx.dtype)
    for name, impl, module in entries:
        module.to(device=ctx.device, dtype=ctx.dtype).train().requires_grad_(True)
        row = {"projector": name, "impl": impl, "batch": preset.projector_batch,
               "params": flops.count_params(module)}
        try:
            ctx.meter.free()
            ctx.meter.reset_peak()
            grad_out = torch.randn_like(_projector_step(module, x, None))
            start = ctx.meter.now()
            for _ in range(preset.projector_iters):
                out = _projector_step(module, x, grad_out)
            row.update(fwd_bwd_ms=(ctx.meter.now() - start) / preset.projector_iters * 1e3,
                       peak_mem_gib=ctx.meter.peak_gib(), output_shape=list(out.shape))
            if isinstance(module, BroadcastCluster):
                with torch.no_grad():
                    row["max_abs_diff_vs_ours"] = float((module(x[:1]) - cluster(x[:1])).abs().max())
        except Exception as err:
            if not meters.is_oom(err):
                raise
            row["error"] = "out of memory"
        log("projector", row)
        rows.append(row)
    del entries, cluster, x
    ctx.meter.free()
    return rows


# ---------------------------------------------------------------------------------------------- report
def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(result: dict) -> str:
    meta, lines = result["meta"], []
    base = meta.get("baseline") or {}
    lines.append(f"preset {meta['preset']} on {meta['device_name']} ({meta['dtype']}, attention {meta['attn']}), peak "
                 f"{meta['peak_tflops']:.4g} TFLOP/s ({meta['peak_source']}); memory = {meta['memory_kind']}")
    if result["train"]:
        lines += ["", f"{'training':<12} {'impl':<13} {'variant':<26} {'rows x width':>13} {'ckpt':>4} "
                      f"{'tok/s':>9} {'step s':>8} {'MFU':>6} {'peak GiB':>9} {'loss':>7}  peer (tok/s, MFU, GiB)"]
        for r in result["train"]:
            peer = base.get(r["bench"]) if r["impl"] == "transformers" or r["variant"] == "default" else None
            peer_s = f"{peer['tokens_per_s']:.0f}, {peer['mfu']:.0%}, {peer['peak_mem_gib']}" if peer else ""
            shape = "x".join(str(v) for v in r["rows_x_width"])
            if "error" in r:
                lines.append(f"{r['bench']:<12} {r['impl']:<13} {r['variant']:<26} {shape:>13} {r['ckpt']!s:>4} "
                             f"{r['error']}")
                continue
            lines.append(f"{r['bench']:<12} {r['impl']:<13} {r['variant']:<26} {shape:>13} {str(r['ckpt'])[0]:>4} "
                         f"{r['tokens_per_s']:>9.0f} {r['step_s']:>8.3f} {r['mfu']:>6.1%} {r['peak_mem_gib']:>9.2f} "
                         f"{r['loss']:>7.3f}  {peer_s}")
        lines.append("  " + meta["mfu_formula"])
    if result["projector"]:
        peer = base.get("projector", {})
        lines += ["", f"{'projector':<12} {'impl':<24} {'batch':>5} {'fwd+bwd ms':>11} {'peak GiB':>9}  peer"]
        for r in result["projector"]:
            key = "cluster (reference broadcast)" if "broadcast" in r["impl"] else r["projector"]
            p = peer.get(key) if r["impl"] in ("transformers", "reference (broadcast)") else None
            tail = f"{p['fwd_bwd_ms']} ms, {p['peak_mem_gib']} GiB" if p else ""
            if "max_abs_diff_vs_ours" in r:
                tail += f"  (max|ours-reference| {r['max_abs_diff_vs_ours']:.2e})"
            if "error" in r:
                lines.append(f"{r['projector']:<12} {r['impl']:<24} {r['batch']:>5} {r['error']}")
                continue
            lines.append(f"{r['projector']:<12} {r['impl']:<24} {r['batch']:>5} {r['fwd_bwd_ms']:>11.2f} "
                         f"{r['peak_mem_gib']:>9.2f}  {tail}")
    if result["generate"]:
        peer = base.get("generate", {})
        lines += ["", f"{'generation':<14} {'path':<15} {'batch':>5} {'samples/s':>10} {'new tok/s':>10} "
                      f"{'peak GiB':>9}  peer samples/s"]
        for r in result["generate"]:
            p = peer.get(str(r["batch"])) if r["impl"] == "transformers" else None
            if "error" in r:
                lines.append(f"{r['impl']:<14} {r['path']:<15} {r['batch']:>5} {r['error']}")
                continue
            lines.append(f"{r['impl']:<14} {r['path']:<15} {r['batch']:>5} {r['samples_per_s']:>10.2f} "
                         f"{r['new_tokens_per_s']:>10.1f} {r['peak_mem_gib']:>9.2f}  {_fmt(p, '')}")
        for s in result["generate_summary"]:
            lines.append(f"  {s['impl']} {s['path']}: batch 1 {_fmt(s['batch1_samples_per_s'], '.2f')} samples/s, "
                         f"best batch {s['best_batch']} {s['best_samples_per_s']:.2f} samples/s")
        rate = {(r["impl"], r["batch"]): r["samples_per_s"] for r in result["generate"]
                if r["path"] == "model.generate" and "samples_per_s" in r}
        for (impl, batch), ours in rate.items():
            if impl == "ours" and ("transformers", batch) in rate:
                paired = " (alternating rounds)" if any(r.get("paired") for r in result["generate"]) else ""
                lines.append(f"  ours / transformers model.generate at batch {batch}: "
                             f"{ours / rate[('transformers', batch)]:.3f}x{paired}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets.PRESETS), default="tiny")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    parser.add_argument("--dtype", default=None, help="default: the preset's on cuda, float32 on cpu")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma list of {','.join(BENCHES)}")
    parser.add_argument("--impl", default=",".join(IMPLS), help="comma list of ours,hf")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps per training row")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before them")
    parser.add_argument("--gen-batches", default=None, help="comma list of generation batch sizes")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="MFU denominator; default: a dense matmul measured at the start of the run")
    parser.add_argument("--train-projector", default="mlp2x_gelu", help="ours: projector type in training rows")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation of both models: sdpa, eager, "
                        "flex_attention, flash_attention_2 (if installed)")
    args = parser.parse_args(argv)
    for name, allowed in (("only", BENCHES), ("impl", IMPLS)):
        values = [v for v in getattr(args, name).split(",") if v]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            parser.error(f"--{name}: unknown {unknown}; choose from {list(allowed)}")
        setattr(args, name, values)
    return args


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "llava"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing_* renames
    started = time.perf_counter()
    preset = presets.PRESETS[args.preset]
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (preset.torch_dtype if device.type == "cuda"
                                                           else torch.float32)
    meter = meters.Meter(device)
    peak = args.peak_tflops or meters.matmul_tflops(device, dtype, meter)
    ctx = Context(
        preset=preset, device=device, dtype=dtype, meter=meter, peak_tflops=peak,
        cost=flops.ModelCost.from_configs(presets.text_config(preset), presets.vision_config(preset)),
        warmup=preset.warmup if args.warmup is None else args.warmup,
        steps=preset.steps if args.steps is None else args.steps,
        gen_batches=tuple(int(b) for b in args.gen_batches.split(",")) if args.gen_batches else preset.gen_batches,
        train_projector=args.train_projector,
    )
    only = set(args.only)
    shapes = {k: v for k, v in dataclasses.asdict(preset).items() if k != "baseline"}
    result = {
        "meta": {
            "preset": preset.name, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or platform.machine(),
            "dtype": str(dtype).replace("torch.", ""), "attn": args.attn, "peak_tflops": peak,
            "peak_source": "--peak-tflops" if args.peak_tflops else "measured dense matmul",
            "mfu_formula": flops.FORMULA, "memory_kind": meter.memory_kind, "versions": _versions(),
            "shapes": shapes, "steps": ctx.steps, "warmup": ctx.warmup, "gen_batches": list(ctx.gen_batches),
            "benches": args.only, "impls": args.impl, "n_lm_linear": ctx.cost.n_lm, "n_vit": ctx.cost.n_vit,
            "baseline": preset.baseline,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "malloc_env": {k: os.environ.get(k) for k in CPU_MALLOC_ENV},
        },
        "train": [], "projector": [], "generate": [], "generate_summary": [],
    }
    def save() -> None:  # after every block: a run stopped by a time limit keeps what it measured
        result["generate_summary"] = generation_summary(result["generate"])
        result["meta"]["elapsed_s"] = time.perf_counter() - started
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))

    if "projector" in only:
        result["projector"] = projector_benches(ctx)
        save()
    def build(impl: str) -> nn.Module:
        torch.manual_seed(0)
        if impl == "ours":
            return presets.build_ours(preset, device, dtype, projector_type=args.train_projector, attn=args.attn)
        return presets.build_hf(preset, device, dtype, attn=args.attn)

    paired = "generate" in only and device.type == "cpu" and len(args.impl) == 2
    if paired:  # both models at once, alternating rounds (paired_generate_benches)
        result["generate"] += paired_generate_benches(ctx, {impl: build(impl) for impl in args.impl})
        meter.free()
        save()
    for impl in args.impl:
        model = build(impl)
        if "generate" in only and not paired:
            result["generate"] += generate_benches(ctx, model, impl)
        if "engine" in only and impl == "ours":
            result["generate"] += engine_benches(ctx, model)
        save()
        model = train_benches(ctx, model, impl, only, result["train"], save)
        del model
        meter.free()
    save()
    print(render(result), flush=True)
    if args.out is not None:
        print(f"wrote {args.out}")
    return result


# glibc's malloc raises its mmap threshold only as it sees large blocks freed, so on the CPU whichever model is
# measured first pays page faults the second does not: an order effect of 5-15% on `--preset small` generation
# (ours first: batch 8 0.95x transformers; the same two models in the other order: 1.12x; operator for operator
# the two runs are the same 233 matmuls). Fixed thresholds make the order irrelevant. See scripts/bench/README.md.
CPU_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "134217728", "MALLOC_TRIM_THRESHOLD_": "268435456"}


def pin_cpu_allocator(argv: list[str]) -> None:
    """Re-run this script with CPU_MALLOC_ENV when it measures on the CPU and the variables are not set."""
    on_cpu = "--device" in argv and argv[argv.index("--device") + 1] == "cpu" or not torch.cuda.is_available()
    if on_cpu and any(k not in os.environ for k in CPU_MALLOC_ENV):
        os.environ.update({k: os.environ.get(k, v) for k, v in CPU_MALLOC_ENV.items()})
        os.execv(sys.executable, [sys.executable, *sys.argv])


if __name__ == "__main__":
    pin_cpu_allocator(sys.argv[1:])
    main()
