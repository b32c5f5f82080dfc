"""The ShapesWorld world: attribute catalogue, `WorldConfig`, scene records and the seeded scene sampler."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterable

# The catalogue the grammar knows. A config may use a subset; the judge always parses the full catalogue,
# so a question about a shape a world never draws is well-formed but not grounded.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "yellow": (240, 210, 20),
    "purple": (145, 50, 190),
    "orange": (250, 130, 15),
}
ALL_COLORS: tuple[str, ...] = tuple(COLOR_RGB)
ALL_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")
ROW_WORDS: tuple[str, ...] = ("top", "middle", "bottom")
COL_WORDS: tuple[str, ...] = ("left", "center", "right")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """What the world draws and how it is rendered.

    Geometry: the `grid` x `grid` cells are `cell_size` px wide (default `image_size // grid`) and the grid's
    top-left corner sits `offset` px from the image corner (default: centred). With the default 48 px image,
    cells are 16 px at offset 0, so a ViT with patch 16 sees exactly one cell per patch; `cell_aligned(p)`
    checks that property for a patch size. `jitter` (fraction of a cell) moves object centres off the cell
    centres; `noise` (std-dev in 0..255 units) adds seeded per-pixel Gaussian noise.
    """

    image_size: int = 48
    grid: int = 3
    cell_size: int | None = None
    offset: int | None = None
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    colors: tuple[str, ...] = ALL_COLORS
    sizes: tuple[str, ...] = SIZES
    jitter: float = 0.0
    noise: float = 0.0
    supersample: int = 4
    background: tuple[int, int, int] = (240, 240, 240)
    large_scale: float = 0.9  # object extent as a fraction of the cell
    small_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.grid != 3:
            raise ValueError("the grammar names positions of a 3x3 grid; grid must be 3")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid * self.grid:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {self.grid * self.grid}")
        for name, values, known in (("shapes", self.shapes, ALL_SHAPES), ("colors", self.colors, ALL_COLORS),
                                    ("sizes", self.sizes, SIZES)):
            unknown = set(values) - set(known)
            if unknown or not values:
                raise ValueError(f"{name} must be a non-empty subset of {known}, got {values}")
        if self.cell * self.grid + self.grid_offset > self.image_size:
            raise ValueError("the grid does not fit in the image")
        if not 0.0 <= self.jitter <= 0.5:
            raise ValueError("jitter is a fraction of a cell in [0, 0.5]")

    @property
    def cell(self) -> int:
        return self.cell_size if self.cell_size is not None else self.image_size // self.grid

    @property
    def grid_offset(self) -> int:
        if self.offset is not None:
            return self.offset
        return (self.image_size - self.cell * self.grid) // 2

    def cell_aligned(self, patch_size: int) -> bool:
        """True when every grid cell is exactly one ViT patch (cell == patch, grid on patch boundaries)."""
        return self.cell == patch_size and self.grid_offset % patch_size == 0 and self.jitter == 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        d = dict(d)
        for key in ("shapes", "colors", "sizes", "background"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object: attributes, grid cell (row, col) and an optional centre offset in cell fractions."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    dx: float = 0.0
    dy: float = 0.0

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    def to_dict(self) -> dict:
        d = {"shape": self.shape, "color": self.color, "size": self.size, "row": self.row, "col": self.col}
        if self.dx or self.dy:
            d.update(dx=self.dx, dy=self.dy)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SceneObject:
        return cls(d["shape"], d["color"], d["size"], int(d["row"]), int(d["col"]),
                   float(d.get("dx", 0.0)), float(d.get("dy", 0.0)))


@dataclasses.dataclass(frozen=True)
class Scene:
    """A scene: objects in reading order (at most one per cell); `seed` drives render noise."""

    objects: tuple[SceneObject, ...]
    grid: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell: {cells}")
        if any(not (0 <= r < self.grid and 0 <= c < self.grid) for r, c in cells):
            raise ValueError(f"cell outside the {self.grid}x{self.grid} grid: {cells}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=lambda o: o.cell)))

    def at(self, row: int, col: int) -> SceneObject | None:
        for o in self.objects:
            if o.cell == (row, col):
                return o
        return None

    def to_dict(self) -> dict:
        return {"grid": self.grid, "seed": self.seed, "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(tuple(SceneObject.from_dict(o) for o in d["objects"]), int(d.get("grid", 3)),
                   int(d.get("seed", 0)))


def position_name(row: int, col: int) -> str:
    """'top left', 'middle right', 'bottom center'...; the centre cell is just 'center'."""
    if (row, col) == (1, 1):
        return "center"
    return f"{ROW_WORDS[row]} {COL_WORDS[col]}"


POSITION_NAMES: dict[str, tuple[int, int]] = {position_name(r, c): (r, c) for r in range(3) for c in range(3)}


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (independent of PYTHONHASHSEED and of the order of generation)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def sample_scene(rng: random.Random, config: WorldConfig | None = None) -> Scene:
    """Draw a scene: uniform object count, distinct cells, uniform independent attributes."""
    config = config or WorldConfig()
    n = rng.randint(config.min_objects, config.max_objects)
    cells = rng.sample(range(config.grid * config.grid), n)
    objects = []
    for cell in cells:
        dx = dy = 0.0
        if config.jitter:
            dx = round(rng.uniform(-config.jitter, config.jitter), 4)
            dy = round(rng.uniform(-config.jitter, config.jitter), 4)
        objects.append(SceneObject(rng.choice(config.shapes), rng.choice(config.colors), rng.choice(config.sizes),
                                   cell // config.grid, cell % config.grid, dx, dy))
    return Scene(tuple(objects), config.grid, rng.getrandbits(32))


def scene_stream(seed: int, stream: str, config: WorldConfig | None = None) -> Iterable[Scene]:
    """Endless scenes of one named stream ('pretrain', 'instruct', 'eval'...): item i depends only on (seed, stream, i)."""
    i = 0
    while True:
        yield sample_scene(random.Random(derive_seed(seed, stream, i)), config)
        i += 1
