"""Pictures of detected people: every person's 2D skeleton and box on the image, and a small 3D view of each.

``render(image, detections, layout)`` draws the output of ``detect_poses`` (boxes [N, 5], poses2d [N, J, 2],
poses3d [N, J, 3] mm) with Pillow: per person one colour (left limbs lighter, right limbs darker), the box
with its number and detector confidence, and along the bottom an inset per person with the 3D pose
centred on its root and seen orthographically from a fixed viewpoint in front, turned a little to the side
and slightly from above, on a floor grid of 50 cm squares with a 1 m scale bar (every inset has the same
mm-per-pixel scale). ``layout_for(estimator, skeleton)`` gives the joints' names, edges, sides and root
for one format, or (skeleton None) for all joints of the model, drawn with every format's edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from assets.joint_names import mirror_permutation, skeleton_joint_indices
from assets.skeletons import Skeleton, get_skeleton

# distinct, bright on dark and light backgrounds (Tableau 10 without the greys)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 187, 120))
VIEW_AZIMUTH_DEGREES = 35.0  # the insets' viewpoint: turned this far about the vertical axis ...
VIEW_ELEVATION_DEGREES = 20.0  # ... and raised this far above the person (looking down a little)
INSET_EXTENT_MM = 2300.0  # an inset's side covers this much of the scene (the same for every person)
_MIN_INSET = 56  # pixels; smaller insets are unreadable (and tiny images get none)


@dataclass(frozen=True)
class Layout:
    """How to draw one pose: joint names, edges (index pairs), side per joint (+1 left, -1 right, 0
    centre) and the joints whose mean is the root the 3D view is centred on (empty: all joints)."""

    joint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    sides: tuple[int, ...]
    root: tuple[int, ...]

    @property
    def dense(self) -> bool:
        """Many joints (all of many formats): smaller dots, and only where no edge is drawn."""
        return len(self.joint_names) > 60

    @cached_property
    def dotted(self) -> np.ndarray:
        """Which joints get a dot: all of them, or for a dense layout those on no edge."""
        dots = np.ones(len(self.joint_names), bool)
        if self.dense:
            dots[[j for edge in self.edges for j in edge]] = False
        return dots

    @classmethod
    def of_skeleton(cls, skeleton: Skeleton) -> Layout:
        return cls(tuple(skeleton.joint_names), tuple(skeleton.edges), _sides(skeleton.joint_names),
                   _root(skeleton))


def _sides(joint_names) -> tuple[int, ...]:
    partner = mirror_permutation(joint_names)
    return tuple(0 if partner[i] == i else (1 if name.startswith("l") else -1)
                 for i, name in enumerate(joint_names))


def _root(skeleton: Skeleton) -> tuple[int, ...]:
    try:
        return tuple(skeleton.root_joints)
    except ValueError:  # a format without pelvis or hips: centre on the mean of all joints
        return ()


def layout_for(estimator, skeleton: str | None) -> Layout:
    """The layout of ``skeleton``'s joints, or (None) of all of the estimator's joints (``joint_names``,
    suffixed with their format), with the edges of every format the estimator predicts."""
    if skeleton is not None:
        return Layout.of_skeleton(get_skeleton(skeleton))
    names = tuple(estimator.joint_names)
    edges, root = [], ()
    for name in estimator.skeletons():
        fmt = get_skeleton(name)
        index = skeleton_joint_indices(names, name)
        edges += [(index[a], index[b]) for a, b in fmt.edges]
        if not root:
            root = tuple(index[i] for i in _root(fmt))
    return Layout(names, tuple(edges), _sides(names), root)


@lru_cache(maxsize=16)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 built with FreeType)
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()


def _mix(colour, other, amount: float) -> tuple[int, int, int]:
    return tuple(int(round(c + (o - c) * amount)) for c, o in zip(colour, other))


def person_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _shades(colour) -> dict[int, tuple[int, int, int]]:
    return {1: _mix(colour, (255, 255, 255), 0.45), -1: _mix(colour, (0, 0, 0), 0.3), 0: colour}


def _edge_colour(shades, sides, a: int, b: int):
    side = sides[a] if sides[a] == sides[b] else (sides[a] or sides[b])
    return shades[side]


def render(image, detections: dict, layout: Layout, *, insets: bool = True) -> Image.Image:
    """A copy of ``image`` (uint8 RGB [H, W, 3] or a PIL image) with the people of ``detections`` drawn on
    it (keys "boxes", "poses2d", "poses3d" as returned by ``detect_poses``)."""
    canvas = (image.convert("RGB") if image.mode != "RGB" else image.copy()) if isinstance(image, Image.Image) \
        else Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    boxes = np.asarray(detections["boxes"], dtype=np.float64).reshape(-1, 5)
    poses2d = np.asarray(detections["poses2d"], dtype=np.float64)
    poses3d = np.asarray(detections["poses3d"], dtype=np.float64)
    count = len(boxes)
    if count == 0:
        return canvas
    joints = len(layout.joint_names)
    if poses2d.shape != (count, joints, 2) or poses3d.shape != (count, joints, 3):
        raise ValueError(f"detections: expected poses2d [{count}, {joints}, 2] and poses3d [{count}, {joints}, 3] "
                         f"for {count} boxes of {joints} joints, got {poses2d.shape} and {poses3d.shape}")
    width, height = canvas.size
    unit = min(width, height) / 540  # 2 at 1080p
    line = max(1, round(2 * unit))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(9, round(11 * unit)))
    radius = max(1.0, line * (0.6 if layout.dense or not layout.edges else 0.9))
    # endpoints far outside the image are not drawn (a wild estimate would otherwise cost a long line)
    low, high = np.array([-width, -height]), np.array([2 * width, 2 * height])
    for person in range(count):
        colour = person_colour(person)
        shades = _shades(colour)
        points = poses2d[person]
        usable = np.isfinite(points).all(axis=1) & (points >= low).all(axis=1) & (points <= high).all(axis=1)
        for a, b in layout.edges:
            if usable[a] and usable[b]:
                draw.line((*points[a], *points[b]), fill=_edge_colour(shades, layout.sides, a, b), width=line)
        for j in np.flatnonzero(usable & layout.dotted):
            x, y = points[j]
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=shades[layout.sides[j]])
        _draw_box(draw, boxes[person], person, colour, font, line, width, height)
    if insets:
        _draw_insets(canvas, poses3d, layout, font, unit)
    return canvas


def _draw_box(draw, box, person: int, colour, font, line: int, width: int, height: int) -> None:
    x, y, w, h, confidence = box
    if not np.isfinite(box[:4]).all():
        return
    draw.rectangle((x, y, x + w, y + h), outline=colour, width=max(1, line // 2))
    label = f"{person + 1}  {confidence:.2f}"
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    pad = max(1, line // 2)
    label_w, label_h = right - left + 2 * pad, bottom - top + 2 * pad
    lx = min(max(x, 0), max(width - label_w, 0))
    ly = y - label_h if y - label_h >= 0 else max(y, 0)  # above the box, or inside it at the top edge
    draw.rectangle((lx, ly, lx + label_w, ly + label_h), fill=colour)
    draw.text((lx + pad - left, ly + pad - top), label, fill=(255, 255, 255), font=font)


def _view_rotation() -> np.ndarray:
    """Camera frame (x right, y down, z forward) → the insets' view frame: turned about the vertical, then
    tilted so that the viewer looks down on the person."""
    a, e = math.radians(VIEW_AZIMUTH_DEGREES), math.radians(VIEW_ELEVATION_DEGREES)
    turn = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    return tilt @ turn


_VIEW = _view_rotation()


def _draw_insets(canvas: Image.Image, poses3d: np.ndarray, layout: Layout, font, unit: float) -> None:
    width, height = canvas.size
    count = len(poses3d)
    size = min(320, round(min(width, height) * 0.25))
    if size < _MIN_INSET:
        return
    margin = max(4, size // 24)
    if count * (size + margin) + margin > width:  # shrink them to fit in a row, down to the smallest size
        size = max(_MIN_INSET, (width - margin) // count - margin)
    shown = min(count, max(1, (width - margin) // (size + margin)))
    small_font = _font(max(8, round(11 * unit * size / 270)))
    for person in range(shown):
        x0, y0 = margin + person * (size + margin), height - margin - size
        box = (x0, y0, x0 + size, y0 + size)
        panel = canvas.crop(box)
        # darkened background: the pose reads on any image, and the image still shows through
        dimmed = (np.asarray(panel, dtype=np.float32) * 0.3 + np.array([14, 16, 22], np.float32)).astype(np.uint8)
        panel = Image.fromarray(dimmed, "RGB")
        _draw_pose3d(ImageDraw.Draw(panel), poses3d[person], layout, person, size, small_font, unit)
        extra = count - shown
        if extra and person == shown - 1:
            draw = ImageDraw.Draw(panel)
            text = f"+{extra} more"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=small_font)
            draw.text((size - (right - left) - 4 - left, 3 - top), text, fill=(230, 230, 230), font=small_font)
        canvas.paste(panel, box)


def _draw_pose3d(draw, pose: np.ndarray, layout: Layout, person: int, size: int, font, unit: float) -> None:
    colour = person_colour(person)
    shades = _shades(colour)
    line = max(1, round(size / 110))
    draw.rectangle((0, 0, size - 1, size - 1), outline=colour, width=max(1, line // 2 + 1))
    draw.text((4, 3), f"{person + 1}", fill=colour, font=font)
    finite = np.isfinite(pose).all(axis=1)
    if not finite.any():
        return
    root_joints = [j for j in layout.root if finite[j]]
    root = pose[root_joints].mean(axis=0) if root_joints else pose[finite].mean(axis=0)
    centred = pose - root
    scale = size / INSET_EXTENT_MM  # pixels per mm
    centre = np.array([size / 2, size * 0.45])

    def project(points):
        view = points @ _VIEW.T
        return view[:, :2] * scale + centre, view[:, 2]

    # the floor: a 2 m grid of 50 cm squares under the lowest joint (the camera's "down", y)
    floor = np.nanmax(centred[finite, 1])
    ticks = np.linspace(-1000, 1000, 5)
    grid_colour = (90, 94, 104)
    for t in ticks:
        for ends in (((t, floor, -1000), (t, floor, 1000)), ((-1000, floor, t), (1000, floor, t))):
            (u0, v0), (u1, v1) = project(np.array(ends))[0]
            draw.line((u0, v0, u1, v1), fill=grid_colour, width=1)
    uv, depth = project(np.where(finite[:, None], centred, 0))
    edges = [(a, b) for a, b in layout.edges if finite[a] and finite[b]]
    for a, b in sorted(edges, key=lambda e: -(depth[e[0]] + depth[e[1]])):  # far edges first
        draw.line((*uv[a], *uv[b]), fill=_edge_colour(shades, layout.sides, a, b), width=line)
    radius = max(1.0, line * (0.6 if layout.dense or not layout.edges else 0.9))
    for j in np.flatnonzero(finite & layout.dotted):
        u, v = uv[j]
        draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=shades[layout.sides[j]])
    # scale bar: 1 m
    bar = 1000 * scale
    x1, y = size - 6, size - 6
    draw.line((x1 - bar, y, x1, y), fill=(230, 230, 230), width=max(1, line // 2))
    left, top, right, bottom = draw.textbbox((0, 0), "1 m", font=font)
    draw.text((x1 - (right - left) - left, y - 3 - bottom), "1 m", fill=(230, 230, 230), font=font)
