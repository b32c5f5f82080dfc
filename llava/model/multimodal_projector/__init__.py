"""Vision-to-LLM projectors, picked by `mm_projector_type` from a registry (see `builder.py`)."""

from .builder import PROJECTOR_REGISTRY, build_vision_projector, register_projector
from .cluster import ClusterProjector, QuickGELU
from .cross_attn import CrossAttnProjector
from .simple import IdentityProjector, LinearProjector, MLPProjector

__all__ = [
    "PROJECTOR_REGISTRY",
    "ClusterProjector",
    "CrossAttnProjector",
    "IdentityProjector",
    "LinearProjector",
    "MLPProjector",
    "QuickGELU",
    "build_vision_projector",
    "register_projector",
]
