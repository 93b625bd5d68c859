"""What every demo-world dataset writer shares: deterministic files, the job being written, rendering."""

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from assets.cameras import Camera

from .body import Body, PartFrames
from .motion import STYLES
from .render import Figure, Scene, render_crop
from .seeding import rng_for

JPEG_QUALITY = 90


# ---------------------------------------------------------------------------------------------------
# Deterministic file writing
# ---------------------------------------------------------------------------------------------------
def save_npz(path: Path, **arrays) -> None:
    """Like ``np.savez`` but with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(value), allow_pickle=False)


def write_json(path: Path, content) -> None:
    path.write_text(json.dumps(content, indent=1) + "\n")


def write_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=JPEG_QUALITY)


def save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    name: str  # the dataset, which keys its random streams
    out: Path  # the folder being written (a temporary one until complete)
    size: str
    seed: int
    image_size: int

    def rng(self, *keys) -> np.random.Generator:
        return rng_for(self.seed, self.name, *keys)


def figures_of(body: Body, frames: PartFrames) -> list[Figure]:
    start, end = body.capsule_endpoints(frames)
    return [
        Figure(start[f], end[f], body.capsule_radii, body.capsule_colours, ground_xy=frames.origins[f, 0, :2])
        for f in range(frames.num_frames)
    ]


def stored_box(box) -> np.ndarray:
    """The box as the float32 the files store, so images are rendered from exactly the stored numbers."""
    return np.asarray(box, dtype=np.float32).astype(np.float64)


def render(job, rng, camera: Camera, frame_size, box, figure: Figure, scene: Scene, occlusion_rate, out_size=None):
    occluders = int(rng.integers(1, 3)) if rng.random() < occlusion_rate else 0
    out_size = out_size or (job.image_size, job.image_size)
    noise = float(rng.uniform(1.0, 4.0))
    return render_crop(camera, frame_size, box, out_size, figure, scene, rng, occluders, noise_std=noise)


def take(names, size: str) -> tuple:
    """Tiny worlds keep the front of each list."""
    return tuple(names)[:1] if size == "tiny" else tuple(names)


def styles(rng, count: int) -> list[str]:
    return [str(s) for s in rng.choice(STYLES, size=count, replace=False)]


def style_named(names: dict[str, str], name: str, dataset: str, kind: str) -> str:
    """The motion style a dataset files under ``name`` ({style: name}: its ``kind``s, e.g. actions)."""
    style = next((style for style, named in names.items() if named == name), None)
    if style is None:
        raise ValueError(f"{dataset}: no {kind} {name!r}; the {kind}s: {', '.join(names.values())}")
    return style
