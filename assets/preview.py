"""Contact sheet of a store's crops with the 2D skeleton drawn, for asset metadata and eyeballing."""

import io

import numpy as np
from PIL import Image, ImageDraw

_LEFT, _RIGHT, _CENTER = (60, 200, 255), (255, 90, 60), (250, 250, 90)


def preview_png(store, num_examples: int = 8, columns: int = 4) -> bytes:
    """PNG bytes showing ``num_examples`` evenly spaced examples of ``store`` with their 2D skeletons."""
    n = len(store)
    indices = np.unique(np.linspace(0, n - 1, min(num_examples, n)).round().astype(int))
    skeleton = store.skeleton
    side = int(store.attrs["image_size"])
    scale = max(1, 192 // side)
    rows = -(-len(indices) // columns)
    sheet = Image.new("RGB", (columns * side * scale, rows * side * scale), (30, 30, 30))
    for slot, i in enumerate(indices):
        tile = Image.fromarray(store["image"][i]).resize((side * scale, side * scale), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        uv = (store["pose2d"][i] + 0.5) * scale
        valid = store["joint_valid"][i] & np.isfinite(uv).all(axis=-1)
        for a, b in skeleton.edges:
            if valid[a] and valid[b]:
                draw.line([tuple(uv[a]), tuple(uv[b])], fill=_side_colour(skeleton.joint_names[b], skeleton), width=2)
        for j in np.flatnonzero(valid):
            x, y = uv[j]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=_side_colour(skeleton.joint_names[j], skeleton))
        sheet.paste(tile, ((slot % columns) * side * scale, (slot // columns) * side * scale))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _side_colour(joint_name: str, skeleton) -> tuple:
    i = skeleton.index(joint_name)
    if i in skeleton.left_indices:
        return _LEFT
    if i in skeleton.right_indices:
        return _RIGHT
    return _CENTER
