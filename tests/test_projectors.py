"""Projector tests: cluster math vs a float64 re-statement of the reference, memory, key layouts, registry."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from llava.model.multimodal_projector import (
    PROJECTOR_REGISTRY,
    ClusterProjector,
    CrossAttnProjector,
    build_vision_projector,
    register_projector,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_config(projector_type: str | None = "cluster", d: int = 16, h: int = 32, **extra) -> SimpleNamespace:
    cfg = SimpleNamespace(mm_hidden_size=d, hidden_size=h, **extra)
    if projector_type is not None:
        cfg.mm_projector_type = projector_type
    return cfg


def cluster_reference_shapes(d: int, h: int) -> dict[str, tuple[int, ...]]:
    """The reference `Clustering` module's state dict, written out by hand."""
    return {
        "sim_alpha": (1, 1, 1),
        "sim_beta": (1, 1, 1),
        "c.weight": (d, d),
        "c.bias": (d,),
        "v.weight": (d, d),
        "v.bias": (d,),
        "f.weight": (d, d),
        "f.bias": (d,),
        "ln_1.weight": (d,),
        "ln_1.bias": (d,),
        "mlp.0.weight": (h, d),
        "mlp.0.bias": (h,),
        "mlp.2.weight": (h, h),
        "mlp.2.bias": (h,),
    }


def random_cluster_state(d: int, h: int, seed: int) -> dict[str, torch.Tensor]:
    """Non-trivial weights (alpha, beta and every Linear random) so a wrong formula shows up."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in cluster_reference_shapes(d, h).items():
        fan_in = shape[-1] if len(shape) == 2 else 1
        state[name] = torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)
    state["sim_alpha"] = torch.full((1, 1, 1), 3.7, dtype=torch.float64)
    state["sim_beta"] = torch.full((1, 1, 1), -0.4, dtype=torch.float64)
    return {name: value.float().double() for name, value in state.items()}  # exact in fp32 and fp64


def cluster_reference(
    x: torch.Tensor,
    p: dict[str, torch.Tensor],
    k: int,
    t: int,
    value_norm_dim: int = 1,
    assigned: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference forward in the naive broadcast form, float64. Returns (output, y = x + write-back, top-2 gate gap).

    `assigned` ([B, 1, L]) overrides the argmax, to compare continuous math when rounding flips near-ties.
    """

    def linear(name: str, inp: torch.Tensor) -> torch.Tensor:
        return inp @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def l2_normalise(inp: torch.Tensor, dim: int) -> torch.Tensor:
        return inp / inp.norm(dim=dim, keepdim=True).clamp_min(1e-12)

    def pool(inp: torch.Tensor) -> torch.Tensor:  # torch's adaptive windows: [floor(iL/K), ceil((i+1)L/K))
        n = inp.shape[1]
        windows = [inp[:, (i * n) // k : -((-(i + 1) * n) // k)].mean(dim=1) for i in range(k)]
        return torch.stack(windows, dim=1)

    value = linear("v", x)  # [B, L, D]
    feature = linear("f", x)
    centers, pooled = pool(x), pool(feature)
    value_hat = l2_normalise(value, dim=value_norm_dim)  # dim=1: over the token axis (the reference quirk)
    for _ in range(t):
        centers = linear("c", centers)
        scores = torch.einsum("bkd,bld->bkl", l2_normalise(centers, -1), value_hat)
        weights = torch.exp(scores - scores.amax(dim=1, keepdim=True))
        weights = weights / weights.sum(dim=1, keepdim=True)  # softmax over the centre axis
        centers = torch.einsum("bkl,bld->bkd", weights, feature)
    cos = torch.einsum("bkd,bld->bkl", l2_normalise(centers, -1), l2_normalise(x, -1))
    gate = 1.0 / (1.0 + torch.exp(-(p["sim_beta"] + p["sim_alpha"] * cos)))
    _, idx = gate.max(dim=1, keepdim=True)  # as the reference
    if assigned is not None:
        idx = assigned.long()
    mask = torch.zeros_like(gate).scatter_(1, idx, 1.0)
    kept = gate * mask
    agg = ((feature.unsqueeze(1) * kept.unsqueeze(-1)).sum(dim=2) + pooled) / (
        mask.sum(-1, keepdim=True) + 1.0
    )
    y = x + (agg.unsqueeze(2) * kept.unsqueeze(-1)).sum(dim=1)  # [B, K, L, D] broadcast, summed over K
    hidden = linear("mlp.0", y)
    out = linear("mlp.2", hidden * torch.sigmoid(1.702 * hidden))
    top2 = gate.topk(2, dim=1).values if k > 1 else torch.cat([gate, gate - 1], dim=1)
    return out, y, (top2[:, 0] - top2[:, 1]).min()


def build_cluster(
    d: int, h: int, k: int, t: int, state: dict[str, torch.Tensor], dtype: torch.dtype
) -> nn.Module:
    module = build_vision_projector(make_config("cluster", d, h, mm_cluster_centers=k, mm_cluster_iters=t))
    module.to(dtype).load_state_dict(state, strict=True)
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


# ---------------------------------------------------------------------------------------------------- cluster math


@pytest.mark.parametrize(
    ("b", "n", "d", "h", "k", "t"),
    [(2, 20, 16, 24, 8, 2), (3, 5, 8, 8, 8, 3), (1, 36, 12, 20, 9, 1)],
    ids=["overlapping-windows", "fewer-tokens-than-centres", "one-iteration"],
)
def test_cluster_matches_float64_reference(b, n, d, h, k, t):
    state = random_cluster_state(d, h, seed=n + k)
    x = torch.randn(b, n, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ref_out, ref_y, gap = cluster_reference(x, state, k, t)
    assert gap > 1e-9, "near-tie in the gate: pick another seed"

    module = build_cluster(d, h, k, t, state, torch.float64)
    with torch.no_grad():
        y = module.extract_prototypes(x)
        out = module(x)
    err_out, err_update = rel_err(out, ref_out), rel_err(y - x, ref_y - x)
    print(f"float64 max relative error: output {err_out:.2e}, write-back {err_update:.2e}")
    assert err_out < 1e-6 and err_update < 1e-6


def test_cluster_float32_matches_float64_reference():
    """Moderate size in fp32. With random weights the final centres are nearly identical (the E-step softmax is
    close to uniform), so gate gaps between centres are tiny; a few outlier tokens (as CLIP has) and a checked
    seed keep the argmax away from a tie at fp32 resolution."""
    b, n, d, h, k, t = 2, 144, 64, 128, 32, 2
    state = random_cluster_state(d, h, seed=0)
    x = torch.randn(b, n, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[:, ::12] *= 20
    ref_out, ref_y, gap = cluster_reference(x, state, k, t)
    assert gap > 1e-6, "near-tie in the gate: pick another seed"

    module = build_cluster(d, h, k, t, state, torch.float32)
    with torch.no_grad():
        y = module.extract_prototypes(x.float())
        out = module(x.float())
    err_out, err_update = rel_err(out, ref_out), rel_err(y - x.float(), ref_y - x)
    print(f"float32 max relative error: output {err_out:.2e}, write-back {err_update:.2e}")
    assert err_out < 1e-4 and err_update < 1e-4


def test_reference_comparison_is_sensitive_to_the_quirks():
    """The comparison can fail: the 'fixed' E-step (V normalised over features) gives different numbers."""
    b, n, d, h, k, t = 2, 20, 16, 24, 8, 2
    state = random_cluster_state(d, h, seed=n + k)
    x = torch.randn(b, n, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    module = build_cluster(d, h, k, t, state, torch.float64)
    with torch.no_grad():
        y = module.extract_prototypes(x)
    _, y_feature_axis, _ = cluster_reference(x, state, k, t, value_norm_dim=-1)
    assert rel_err(y - x, y_feature_axis - x) > 1e-3
    state["sim_beta"] = state["sim_beta"] + 1e-3
    _, y_beta, _ = cluster_reference(x, state, k, t)
    assert rel_err(y - x, y_beta - x) > 1e-5


def test_cluster_ties_pick_the_first_centre():
    """With `c` zeroed every centre is identical, so every gate ties: all tokens go to centre 0."""
    b, n, d, h, k, t = 2, 12, 8, 8, 4, 2
    state = random_cluster_state(d, h, seed=5)
    state["c.weight"].zero_()
    state["c.bias"].zero_()
    x = torch.randn(b, n, d, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    module = build_cluster(d, h, k, t, state, torch.float64)
    with torch.no_grad():
        y = module.extract_prototypes(x)
    feature = x @ state["f.weight"].T + state["f.bias"]
    center = feature.mean(dim=1, keepdim=True)  # softmax of all-zero scores is uniform: M.F = mean(F) * L / K
    center = center * n / k
    cos = torch.nn.functional.cosine_similarity(center, x, dim=-1)  # [B, L]
    gate = torch.sigmoid(state["sim_beta"][0, 0] + state["sim_alpha"][0, 0] * cos)
    pooled0 = feature[:, : -((-n) // k)].mean(dim=1)  # the first adaptive window
    agg0 = ((gate.unsqueeze(-1) * feature).sum(dim=1) + pooled0) / (n + 1)
    expected = x + gate.unsqueeze(-1) * agg0.unsqueeze(1)
    assert rel_err(y, expected) < 1e-12
    ref_out, _, _ = cluster_reference(x, state, k, t)
    assert rel_err(module(x).detach(), ref_out) < 1e-12


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cluster_runs_in_half_precision(dtype, monkeypatch):
    """Half precision flips many near-tied assignments, so the continuous math is checked under the module's
    own assignment: given the same n*(l), the output matches float64 to half-precision accuracy."""
    d, h, k = 16, 32, 8
    state = random_cluster_state(d, h, seed=2)
    module = build_cluster(d, h, k, 2, state, dtype)
    recorded = []
    monkeypatch.setattr(
        module, "assign", lambda gate: recorded.append(ClusterProjector.assign(gate)) or recorded[-1]
    )
    x = torch.randn(2, 24, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        out = module(x.to(dtype))
    assert out.dtype == dtype and out.shape == (2, 24, h) and torch.isfinite(out).all()
    ref_out, _, _ = cluster_reference(x, state, k, 2, assigned=recorded[0])
    err = ((out.double() - ref_out).norm() / ref_out.norm()).item()
    print(f"{dtype} relative error (norm) under the same assignment: {err:.2e}")
    assert err < (2e-2 if dtype == torch.bfloat16 else 3e-3)


def test_cluster_gradients_reach_every_used_parameter():
    module = build_vision_projector(make_config("cluster", 16, 24, mm_cluster_centers=6, mm_cluster_iters=2))
    module.load_state_dict({k: v.float() for k, v in random_cluster_state(16, 24, seed=9).items()})
    module(torch.randn(2, 18, 16)).square().mean().backward()
    for name, param in module.named_parameters():
        if name.startswith("ln_1."):
            assert param.grad is None, f"{name} is unused in the reference and must stay gradient-free"
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient for {name}"


def test_cluster_memory_stays_linear_in_tokens():
    """B=8, L=576, D=1024 -> H=4096, fp32 forward+backward: the reference's [B,K,L,D] broadcasts alone are 4.8 GB."""
    code = textwrap.dedent(
        """
        import resource, types, torch
        from llava.model.multimodal_projector import build_vision_projector
        cfg = types.SimpleNamespace(mm_projector_type="cluster", mm_hidden_size=1024, hidden_size=4096)
        module = build_vision_projector(cfg)
        out = module(torch.randn(8, 576, 1024))
        assert out.shape == (8, 576, 4096)
        out.float().square().mean().backward()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    peak_mb = float(proc.stdout.strip().splitlines()[-1])
    print(f"cluster B=8 L=576 D=1024 H=4096 fp32 forward+backward peak RSS: {peak_mb:.0f} MB")
    assert peak_mb < 2048, f"peak RSS {peak_mb:.0f} MB"


# ------------------------------------------------------------------------------------------- state-dict layouts


def test_cluster_state_dict_matches_the_reference_layout():
    module = build_vision_projector(make_config("cluster", 16, 24))
    expected = cluster_reference_shapes(16, 24)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    state = {k: v.float() for k, v in random_cluster_state(16, 24, seed=0).items()}
    result = module.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert module.sim_alpha.item() == pytest.approx(3.7) and torch.equal(
        module.mlp[2].weight, state["mlp.2.weight"]
    )
    assert isinstance(module, ClusterProjector) and module.num_centers == 256 and module.num_iters == 2


def test_cluster_initial_values():
    module = build_vision_projector(make_config("cluster", 16, 24))
    assert module.sim_alpha.item() == 1.0 and module.sim_beta.item() == 0.0


def count_params_on_meta(projector_type: str, d: int, h: int) -> int:
    with torch.device("meta"):
        module = build_vision_projector(make_config(projector_type, d, h))
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_released_checkpoints():
    assert count_params_on_meta("cluster", 1024, 4096) == 24_130_562
    assert count_params_on_meta("cluster", 1024, 5120) == 34_618_370
    assert count_params_on_meta("mlp2x_gelu", 1024, 4096) == 20_979_712


@pytest.mark.parametrize(
    ("projector_type", "expected"),
    [
        ("linear", {"weight": (24, 16), "bias": (24,)}),
        ("mlp2x_gelu", {"0.weight": (24, 16), "0.bias": (24,), "2.weight": (24, 24), "2.bias": (24,)}),
        (
            "mlp3x_gelu",
            {
                "0.weight": (24, 16),
                "0.bias": (24,),
                "2.weight": (24, 24),
                "2.bias": (24,),
                "4.weight": (24, 24),
                "4.bias": (24,),
            },
        ),
        (
            "cross_attn",
            {
                "in_proj.weight": (24, 16),
                "in_proj.bias": (24,),
                "latents": (1, 5, 24),
                "attn_norm.weight": (24,),
                "attn_norm.bias": (24,),
                **{
                    f"{n}_proj.{s}": (24, 24) if s == "weight" else (24,)
                    for n in "qkv"
                    for s in ("weight", "bias")
                },
                "out_proj.weight": (24, 24),
                "out_proj.bias": (24,),
                "ffn_norm.weight": (24,),
                "ffn_norm.bias": (24,),
                "ffn.fc1.weight": (24, 24),
                "ffn.fc1.bias": (24,),
                "ffn.fc2.weight": (24, 24),
                "ffn.fc2.bias": (24,),
            },
        ),
    ],
)
def test_state_dict_layouts(projector_type, expected):
    module = build_vision_projector(make_config(projector_type, 16, 24, num_latents=5, mm_cross_attn_heads=4))
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    assert module.load_state_dict({k: torch.randn(s) for k, s in expected.items()}, strict=True)


def test_identity_has_no_state():
    module = build_vision_projector(make_config("identity", 16, 16))
    x = torch.randn(2, 3, 16)
    assert module.state_dict() == {} and module(x) is x


# ----------------------------------------------------------------------------------------------------- registry


def test_default_type_is_linear():
    module = build_vision_projector(make_config(None, 16, 24))
    assert isinstance(module, nn.Linear) and module.weight.shape == (24, 16)
    assert build_vision_projector(make_config(None, 16, 24, mm_projector_type=None)).weight.shape == (24, 16)


def test_mlp3x_gelu_structure():
    module = build_vision_projector(make_config("mlp3x_gelu", 16, 24))
    kinds = [type(m) for m in module]
    assert kinds == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert module[0].in_features == 16 and all(
        m.out_features == 24 for m in module if isinstance(m, nn.Linear)
    )
    assert module[1].approximate == "none"
    assert module(torch.randn(2, 5, 16)).shape == (2, 5, 24)


@pytest.mark.parametrize("bad", ["mlp0x_gelu"])
def test_mlp_depth_zero_is_rejected(bad):
    with pytest.raises(ValueError, match="N >= 1"):
        build_vision_projector(make_config(bad))


@pytest.mark.parametrize("bad", ["resampler", "mlp2x_relu", "cluster2", "xlinear", "linear "])
def test_unknown_type_lists_the_valid_types(bad):
    with pytest.raises(ValueError) as info:
        build_vision_projector(make_config(bad))
    message = str(info.value)
    assert repr(bad) in message
    for name in ("linear", "identity", "cluster", "cross_attn", r"^mlp(\d+)x_gelu$"):
        assert name in message


def test_identity_width_mismatch_is_an_error():
    with pytest.raises(ValueError, match="mm_hidden_size == hidden_size"):
        build_vision_projector(make_config("identity", 16, 24))


def test_register_custom_projector_and_reject_duplicates():
    @register_projector(r"^test_scaled_(\d+)$")
    def _build(config, match, **kwargs):
        return nn.Linear(config.mm_hidden_size, config.hidden_size * int(match.group(1)))

    try:
        assert build_vision_projector(make_config("test_scaled_3", 4, 5)).out_features == 15
        with pytest.raises(ValueError, match="already registered"):
            register_projector(r"^test_scaled_(\d+)$")(_build)
    finally:
        del PROJECTOR_REGISTRY[r"^test_scaled_(\d+)$"]


def test_builder_passes_through_reference_kwargs():
    assert build_vision_projector(make_config("mlp2x_gelu"), delay_load=False) is not None


@pytest.mark.parametrize(
    ("projector_type", "expected"),
    [("linear", 576), ("mlp2x_gelu", 576), ("identity", 576), ("cluster", 576), ("cross_attn", 7)],
)
def test_num_output_tokens(projector_type, expected):
    d = 24 if projector_type == "identity" else 16
    module = build_vision_projector(make_config(projector_type, d, 24, num_latents=7, mm_cross_attn_heads=4))
    assert module.num_output_tokens(576) == expected
    assert module(torch.randn(1, 10, d)).shape[1] == module.num_output_tokens(10)


# --------------------------------------------------------------------------------------------------- cross_attn


def cross_attn_reference(module: CrossAttnProjector, x: torch.Tensor) -> torch.Tensor:
    """The latent-query resampler written out with an explicit softmax, float64."""
    sd = {k: v.double() for k, v in module.state_dict().items()}
    heads = module.num_heads

    def linear(name, inp):
        return inp @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def layer_norm(name, inp):
        mean, var = inp.mean(-1, keepdim=True), inp.var(-1, keepdim=True, unbiased=False)
        return (inp - mean) / torch.sqrt(var + 1e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]

    def split(t):
        b, n, hid = t.shape
        return t.view(b, n, heads, hid // heads).transpose(1, 2)

    tokens = linear("in_proj", x)
    b, _, hid = tokens.shape
    lat = sd["latents"].expand(b, -1, -1)
    q, k, v = (
        split(linear("q_proj", layer_norm("attn_norm", lat))),
        split(linear("k_proj", tokens)),
        split(linear("v_proj", tokens)),
    )
    attn = torch.softmax(q @ k.transpose(-1, -2) * (hid / heads) ** -0.5, dim=-1) @ v
    lat = lat + linear("out_proj", attn.transpose(1, 2).reshape(b, -1, hid))
    hidden = linear("ffn.fc1", layer_norm("ffn_norm", lat))
    return lat + linear("ffn.fc2", torch.nn.functional.gelu(hidden))


def test_cross_attn_shape_math_and_gradients():
    cfg = make_config("cross_attn", 12, 32, num_latents=6, mm_cross_attn_heads=4)
    module = build_vision_projector(cfg)
    assert isinstance(module, CrossAttnProjector) and module.num_heads == 4
    for p in module.parameters():  # LayerNorms start at 1/0; randomise so the reference check means something
        nn.init.normal_(p, std=0.3)
    x = torch.randn(3, 20, 12)
    out = module(x)
    assert out.shape == (3, 6, 32)
    assert rel_err(out.detach(), cross_attn_reference(module, x.double())) < 1e-5
    out.square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient for {name}"


def test_cross_attn_defaults_and_head_check():
    module = build_vision_projector(make_config("cross_attn", 8, 16, mm_cross_attn_heads=2))
    assert module.latents.shape == (1, 256, 16) and module.num_output_tokens(576) == 256
    with pytest.raises(ValueError, match="divisible"):
        build_vision_projector(make_config("cross_attn", 8, 30))
