"""Projector registry and `build_vision_projector(config)`: maps `mm_projector_type` to a module."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from .cluster import ClusterProjector
from .cross_attn import CrossAttnProjector
from .simple import IdentityProjector, LinearProjector, MLPProjector


class ProjectorFactory(Protocol):
    def __call__(self, config: Any, match: re.Match[str], **kwargs: Any) -> nn.Module: ...


# name or regex -> factory(config, match, **kwargs). A key made only of [A-Za-z0-9_.-] is an exact name;
# anything else is a regular expression matched against the whole `mm_projector_type`.
PROJECTOR_REGISTRY: dict[str, ProjectorFactory] = {}

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _key_pattern(name_or_pattern: str) -> str:
    return re.escape(name_or_pattern) if _PLAIN_NAME.fullmatch(name_or_pattern) else name_or_pattern


def register_projector(name_or_pattern: str) -> Callable[[ProjectorFactory], ProjectorFactory]:
    """Decorator: register `factory(config, match, **kwargs) -> nn.Module` under a type name or a regex.

    The factory receives the `re.Match` of the type string (use it for parameterised names such as
    `mlp3x_gelu`). Exact names win over patterns; a duplicate key is an error.
    """
    re.compile(_key_pattern(name_or_pattern))  # fail early on a malformed pattern

    def decorator(factory: ProjectorFactory) -> ProjectorFactory:
        if name_or_pattern in PROJECTOR_REGISTRY:
            raise ValueError(f"projector type {name_or_pattern!r} is already registered")
        PROJECTOR_REGISTRY[name_or_pattern] = factory
        return factory

    return decorator


def _resolve(projector_type: str) -> tuple[ProjectorFactory, re.Match[str]]:
    if projector_type in PROJECTOR_REGISTRY and _PLAIN_NAME.fullmatch(projector_type):
        return PROJECTOR_REGISTRY[projector_type], re.fullmatch(re.escape(projector_type), projector_type)
    for key, factory in PROJECTOR_REGISTRY.items():
        match = re.fullmatch(_key_pattern(key), projector_type)
        if match:
            return factory, match
    valid = ", ".join(sorted(PROJECTOR_REGISTRY))
    raise ValueError(f"Unknown mm_projector_type {projector_type!r}; valid types: {valid}")


def _option(config: Any, name: str, default: Any) -> Any:
    """`getattr` with a default that also replaces an explicit None (HF configs serialise unset fields)."""
    value = getattr(config, name, None)
    return default if value is None else value


def build_vision_projector(config: Any, **kwargs: Any) -> nn.Module:
    """Build the projector named by `config.mm_projector_type` (default "linear").

    `config` needs `mm_hidden_size` (D, vision width) and `hidden_size` (H, LLM width); type-specific fields
    are read with defaults (`mm_cluster_centers`=256, `mm_cluster_iters`=2, `num_latents`=256,
    `mm_cross_attn_heads`=8). Every returned module has `num_output_tokens(num_input_tokens) -> int`.
    Extra keyword arguments (e.g. the reference's `delay_load`) are passed to the factory, which may ignore them.
    """
    projector_type = _option(config, "mm_projector_type", "linear")
    factory, match = _resolve(projector_type)
    return factory(config, match, **kwargs)


@register_projector("linear")
def _build_linear(config: Any, match: re.Match[str], **kwargs: Any) -> nn.Module:
    return LinearProjector(config.mm_hidden_size, config.hidden_size)


@register_projector(r"^mlp(\d+)x_gelu$")
def _build_mlp(config: Any, match: re.Match[str], **kwargs: Any) -> nn.Module:
    return MLPProjector.from_dims(config.mm_hidden_size, config.hidden_size, int(match.group(1)))


@register_projector("identity")
def _build_identity(config: Any, match: re.Match[str], **kwargs: Any) -> nn.Module:
    if config.mm_hidden_size != config.hidden_size:
        raise ValueError(
            f"mm_projector_type 'identity' needs mm_hidden_size == hidden_size, "
            f"got {config.mm_hidden_size} != {config.hidden_size}"
        )
    return IdentityProjector()


@register_projector("cluster")
def _build_cluster(config: Any, match: re.Match[str], **kwargs: Any) -> nn.Module:
    # The reference fixes K=256, T=2 in its builder; here they come from the config (docs/reference.md#d8-and-d9-cluster-projector).
    return ClusterProjector(
        config.mm_hidden_size,
        config.hidden_size,
        num_centers=_option(config, "mm_cluster_centers", 256),
        num_iters=_option(config, "mm_cluster_iters", 2),
    )


@register_projector("cross_attn")
def _build_cross_attn(config: Any, match: re.Match[str], **kwargs: Any) -> nn.Module:
    return CrossAttnProjector(
        config.mm_hidden_size,
        config.hidden_size,
        num_latents=_option(config, "num_latents", 256),
        num_heads=_option(config, "mm_cross_attn_heads", 8),
        dropout=_option(config, "mm_cross_attn_dropout", 0.0),
    )
