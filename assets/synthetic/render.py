"""Rendering of person crops: shaded, colour-coded capsules in front of a procedural studio backdrop.

An image file shows the region ``crop_box`` of the original, lens-distorted frame resampled to the file's
size, so everything is drawn directly in the pixel grid of ``camera.cropped(crop_box, out_size)``. Pixel
centres sit at integer coordinates: array element [r, c] shows image point (u, v) = (c, r), the convention
of ``assets.cameras.bilinear_sample``/``reproject_image``, which converters use to resample these files.
Body capsules are split into short pieces whose end points are projected *with* distortion, so limbs bend
with the lens as the joint labels do; the backdrop is ray-cast through the undistorted pixel rays.
"""

from dataclasses import dataclass

import numpy as np

from assets.cameras import Camera

from .seeding import rng_for

_PIECES_PER_CAPSULE = 3  # straight 2D pieces per capsule; enough to follow the lens' curvature
_MIN_DEPTH_MM = 100.0
_AMBIENT = 0.35
_DEFAULT_LIGHT = np.array([0.3, -0.4, 0.866]) / np.linalg.norm([0.3, -0.4, 0.866])  # towards the light, no scene


@dataclass(frozen=True)
class Scene:
    """One capture setting: a tiled floor inside a cylindrical wall, lit from one direction."""

    centre: np.ndarray  # [2] world mm, axis of the wall
    wall_radius: float
    wall_height: float
    tile_mm: float
    floor_colours: np.ndarray  # [2, 3]
    panel_mm: float
    wall_colours: np.ndarray  # [K, 3], one per wall panel (cycled)
    stripe_period_mm: float
    light: np.ndarray  # [3] unit vector towards the light, world

    @staticmethod
    def random(seed: int, *keys, centre=(0.0, 0.0)) -> "Scene":
        rng = rng_for(seed, "scene", *keys)
        light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
        base = rng.uniform(0.25, 0.75, size=3)
        return Scene(
            centre=np.asarray(centre, dtype=np.float64),
            wall_radius=float(rng.uniform(6000, 9000)),
            wall_height=float(rng.uniform(3000, 5000)),
            tile_mm=float(rng.uniform(300, 900)),
            floor_colours=np.clip(base + rng.uniform(-0.2, 0.2, size=(2, 3)), 0.05, 0.95),
            panel_mm=float(rng.uniform(600, 2000)),
            wall_colours=rng.uniform(0.2, 0.9, size=(int(rng.integers(3, 7)), 3)),
            stripe_period_mm=float(rng.uniform(80, 400)),
            light=light / np.linalg.norm(light),
        )


@dataclass(frozen=True)
class Figure:
    """A posed body at one instant, as tapered capsules in world mm."""

    start: np.ndarray  # [C, 3]
    end: np.ndarray  # [C, 3]
    radii: np.ndarray  # [C, 2] at start and end
    colours: np.ndarray  # [C, 3] RGB 0..1
    ground_xy: np.ndarray  # [2] where the figure's shadow falls


def pixel_centres(out_size: tuple[int, int]) -> np.ndarray:
    """[H, W, 2] image coordinates (u, v) of the pixel centres of an ``out_size`` = (W, H) image."""
    w, h = out_size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack([u, v], axis=-1)


def _capsule_samples(figure: Figure) -> tuple[np.ndarray, np.ndarray]:
    """Points [C, K, 3] along every capsule's axis and the capsule radius [C, K] there."""
    t = np.linspace(0.0, 1.0, _PIECES_PER_CAPSULE + 1)
    points = figure.start[:, None] + t[None, :, None] * (figure.end - figure.start)[:, None]
    radii = figure.radii[:, :1] + t[None] * (figure.radii[:, 1:] - figure.radii[:, :1])
    return points, radii


def figure_box(camera: Camera, figure: Figure) -> np.ndarray:
    """Tight (x, y, w, h) box of the figure's projection in the camera's image, capsule radii included."""
    points, radii = _capsule_samples(figure)
    points, radii = points.reshape(-1, 3), radii.reshape(-1)
    cam = camera.world_to_camera(points)
    uv = camera.camera_to_image(cam)
    r_px = radii * camera.K[0, 0] / cam[:, 2]
    lo = (uv - r_px[:, None]).min(axis=0)
    hi = (uv + r_px[:, None]).max(axis=0)
    return np.concatenate([lo, hi - lo])


def _radial_factor(camera: Camera, xy: np.ndarray) -> np.ndarray:
    k1, k2, _, _, k3 = camera.dist
    r2 = (xy**2).sum(-1)
    return 1 + r2 * (k1 + r2 * (k2 + r2 * k3))


def _valid_lens_radius2(camera: Camera) -> float:
    """Largest squared normalised radius up to which the radial distortion is still monotonic.

    Beyond it the polynomial folds back and would paint far-off points into the picture.
    """
    k1, k2, _, _, k3 = camera.dist
    r2 = np.linspace(0, 4, 4001)
    slope = 1 + 3 * k1 * r2 + 5 * k2 * r2**2 + 7 * k3 * r2**3  # d(r * factor)/dr
    bad = np.flatnonzero(slope <= 0.05)
    return float(r2[bad[0]]) if bad.size else float(r2[-1])


def _draw_figure(camera: Camera, figure: Figure, out_size, light: np.ndarray):
    """Z-buffered capsules: (colour [H, W, 3] float, depth [H, W] with inf where empty)."""
    w, h = out_size
    colour = np.zeros((h, w, 3), dtype=np.float32)
    depth = np.full((h, w), np.inf)
    points, radius_mm = _capsule_samples(figure)
    cam = camera.world_to_camera(points)
    z = cam[..., 2]
    in_front = z > _MIN_DEPTH_MM
    xy = cam[..., :2] / np.where(in_front, z, 1.0)[..., None]
    usable = (in_front & ((xy**2).sum(-1) < _valid_lens_radius2(camera))).all(axis=1)
    uv = camera.camera_to_image(np.where(in_front[..., None], cam, [0.0, 0.0, 1.0]))
    radius_px = radius_mm * camera.K[0, 0] * _radial_factor(camera, xy) / np.where(in_front, z, 1.0)
    light_cam = camera.R @ light
    lo = np.floor((uv - radius_px[..., None]).min(axis=1)).astype(int)
    hi = np.ceil((uv + radius_px[..., None]).max(axis=1)).astype(int) + 1
    # per piece k of capsule c: start point, direction, and start value and change of radius and depth,
    # shaped [C, K, 1, 1] to broadcast against a window of pixel rows and columns
    piece = (slice(None), slice(None, -1), None, None)
    u0, v0 = uv[..., 0][piece], uv[..., 1][piece]
    du, dv = np.diff(uv[..., 0], axis=1)[..., None, None], np.diff(uv[..., 1], axis=1)[..., None, None]
    length2 = np.maximum(du * du + dv * dv, 1e-9)
    r0, dr = radius_px[piece], np.diff(radius_px, axis=1)[..., None, None]
    z0, dz = z[piece], np.diff(z, axis=1)[..., None, None]
    m0, dm = radius_mm[piece], np.diff(radius_mm, axis=1)[..., None, None]
    for c in np.flatnonzero(usable):
        x_lo, y_lo = max(lo[c, 0], 0), max(lo[c, 1], 0)
        x_hi, y_hi = min(hi[c, 0], w), min(hi[c, 1], h)
        if x_lo >= x_hi or y_lo >= y_hi:
            continue
        # all pieces of the capsule at once: [K, rows, columns]
        qx = np.arange(x_lo, x_hi)[None, None, :] - u0[c]
        qy = np.arange(y_lo, y_hi)[None, :, None] - v0[c]
        s = np.minimum(np.maximum((qx * du[c] + qy * dv[c]) / length2[c], 0.0), 1.0)
        ex = qx - s * du[c]
        ey = qy - s * dv[c]
        r = r0[c] + s * dr[c]
        dist2 = ex * ex + ey * ey
        inside = dist2 < r * r
        if not inside.any():
            continue
        bulge = np.sqrt(np.maximum(1.0 - dist2 / (r * r), 0.0))  # 1 on the axis, 0 on the silhouette
        surface = np.where(inside, z0[c] + s * dz[c] - bulge * (m0[c] + s * dm[c]), np.inf)
        # sphere-like normal in camera axes (x right, y down, z forward): facing the camera is -z
        lambert = (ex * light_cam[0] + ey * light_cam[1]) / r - bulge * light_cam[2]
        front = surface.argmin(axis=0)  # the nearest piece where pieces overlap at a joint
        surface = surface.min(axis=0)
        window = depth[y_lo:y_hi, x_lo:x_hi]
        win = surface < window
        if not win.any():
            continue
        shade = _AMBIENT + (1 - _AMBIENT) * np.minimum(np.maximum(np.choose(front, lambert), 0.0), 1.0)
        window[win] = surface[win]
        colour[y_lo:y_hi, x_lo:x_hi][win] = shade[win, None] * figure.colours[c]
    return colour, depth


def _interpolation_matrix(knots: np.ndarray, at: np.ndarray) -> np.ndarray:
    """[len(at), len(knots)] weights of piecewise-linear interpolation between sorted ``knots``."""
    idx = np.clip(np.searchsorted(knots, at) - 1, 0, len(knots) - 2)
    frac = (at - knots[idx]) / (knots[idx + 1] - knots[idx])
    m = np.zeros((len(at), len(knots)))
    rows = np.arange(len(at))
    m[rows, idx] = 1 - frac
    m[rows, idx + 1] = frac
    return m


def _pixel_rays(camera: Camera, out_size, step: int = 8) -> np.ndarray:
    """Undistorted normalised coordinates [H, W, 2] of the pixel centres.

    Undistortion is iterative and costly, and the lens warp is smooth over a few pixels, so it is solved
    exactly on a grid every ``step`` pixels and interpolated bilinearly in between.
    """
    w, h = out_size
    xs = np.linspace(0.0, w - 1.0, max(2, -(-w // step) + 1))
    ys = np.linspace(0.0, h - 1.0, max(2, -(-h // step) + 1))
    grid = camera.image_to_normalized(np.stack(np.meshgrid(xs, ys), axis=-1))  # [ny, nx, 2]
    along_y = np.tensordot(_interpolation_matrix(ys, np.arange(h)), grid, axes=(1, 0))  # [H, nx, 2]
    both = along_y.transpose(0, 2, 1) @ _interpolation_matrix(xs, np.arange(w)).T  # [H, 2, W]
    return both.transpose(0, 2, 1)


def _backdrop(camera: Camera, scene: Scene, out_size, shadow_xy: np.ndarray | None) -> np.ndarray:
    """Floor and wall seen through each pixel's (undistorted) ray, [H, W, 3] RGB 0..1."""
    with np.errstate(all="ignore"):  # pixels far outside the frame are blacked out later anyway
        xy = _pixel_rays(camera, out_size).astype(np.float32)  # float32 halves the cost, mm precision stays
        R = camera.R.astype(np.float32)
        # world direction of each ray = R.T @ (x, y, 1), one coordinate plane at a time
        rx, ry, rz = (R[0, i] * xy[..., 0] + R[1, i] * xy[..., 1] + R[2, i] for i in range(3))
        ox, oy, oz = (float(v) for v in camera.center)  # Python floats keep the arrays float32
        t_floor = np.where(rz < -1e-9, -oz / np.minimum(rz, -1e-9), np.inf)
        cx, cy = ox - float(scene.centre[0]), oy - float(scene.centre[1])
        a = np.maximum(rx * rx + ry * ry, 1e-12)
        b = 2 * (rx * cx + ry * cy)
        c = cx * cx + cy * cy - scene.wall_radius**2
        t_wall = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))) / (2 * a)
        floor = t_floor < t_wall
        t_hit = np.where(floor, t_floor, t_wall)
        hx, hy, hz = ox + t_hit * rx, oy + t_hit * ry, oz + t_hit * rz

        tiles = (np.floor(hx / scene.tile_mm) + np.floor(hy / scene.tile_mm)) % 2
        floor_shade = 1 + 0.08 * np.sin(hx / 37.0 + 2 * np.sin(hy / 91.0))
        if shadow_xy is not None:
            sx, sy = float(shadow_xy[0]), float(shadow_xy[1])
            floor_shade *= 1 - 0.45 * np.exp(-((hx - sx) ** 2 + (hy - sy) ** 2) / (2 * 300.0**2))

        arc = scene.wall_radius * np.arctan2(hy - float(scene.centre[1]), hx - float(scene.centre[0]))
        panel = np.floor(arc / scene.panel_mm).astype(np.intp) % len(scene.wall_colours)
        wall_shade = 0.85 + 0.15 * (0.5 + 0.5 * np.sin(2 * np.pi * hz / scene.stripe_period_mm))
        wall_shade = np.where(hz < 120, 0.3 * wall_shade, wall_shade)  # skirting board

        # one palette lookup and one shade per pixel keeps the 3-channel work to a single pass
        palette = np.concatenate([scene.floor_colours, scene.wall_colours, [[0.15, 0.15, 0.15]]]).astype(np.float32)
        ceiling = ~floor & (hz > scene.wall_height)
        index = np.where(ceiling, len(palette) - 1, np.where(floor, tiles.astype(np.intp), 2 + panel))
        shade = np.where(ceiling, 1.0, np.where(floor, floor_shade, wall_shade))
        distance = t_hit * np.sqrt(rx * rx + ry * ry + rz * rz)
        haze = np.clip(distance / 25000.0, 0.0, 0.5)  # distant surfaces fade to grey
        shade = shade * (1 - haze)
        rgb = np.stack([np.take(palette[:, ch], index) * shade + 0.5 * haze for ch in range(3)], axis=-1)
    return np.nan_to_num(rgb, nan=0.0)


def _occlude(image: np.ndarray, rng: np.random.Generator, around: np.ndarray, count: int) -> None:
    """Paint ``count`` random flat shapes (ellipses, rotated boxes, triangles) near ``around`` [N, 2]."""
    h, w = image.shape[:2]
    uv = pixel_centres((w, h))
    lo, hi = around.min(axis=0), around.max(axis=0)
    extent = max(float((hi - lo).max()), 8.0)
    for _ in range(count):
        centre = lo + rng.uniform(0.1, 0.9, size=2) * (hi - lo)
        size = extent * rng.uniform(0.12, 0.3, size=2)
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        local = (uv - centre) @ rot.T / size
        kind = rng.integers(3)
        if kind == 0:
            mask = (local**2).sum(-1) < 1
        elif kind == 1:
            mask = np.abs(local).max(-1) < 1
        else:
            mask = (local[..., 1] > -0.6) & (np.abs(local[..., 0]) < 0.8 * (1 - local[..., 1])) & (local[..., 1] < 1)
        colour = rng.uniform(0.05, 0.95, size=3)
        period = rng.uniform(3, 12)
        stripes = 0.75 + 0.25 * np.sign(np.sin(2 * np.pi * local[..., 0] * size[0] / period))
        image[mask] = (stripes[..., None] * colour)[mask]


def render_crop(
    camera: Camera,
    frame_size: tuple[int, int],
    crop_box,
    out_size: tuple[int, int],
    figure: Figure,
    scene: Scene | None = None,
    rng: np.random.Generator | None = None,
    occluders: int = 0,
    noise_std: float = 0.0,
) -> np.ndarray:
    """uint8 [H, W, 3] image of ``crop_box`` (x, y, w, h in the original frame) resampled to ``out_size``.

    ``camera`` is the original frame's camera, ``frame_size`` its (W, H): crop pixels outside the frame are
    black. Without ``scene`` the background is black (useful to find the person's pixels); ``occluders``
    and ``noise_std`` (in 0..255 units) need ``rng``.
    """
    crop_camera = camera.cropped(crop_box, out_size)
    colour, depth = _draw_figure(crop_camera, figure, out_size, _DEFAULT_LIGHT if scene is None else scene.light)
    person = np.isfinite(depth)
    if scene is None:
        image = colour
    else:
        image = np.where(person[..., None], colour, _backdrop(crop_camera, scene, out_size, figure.ground_xy))
    if occluders:
        ys, xs = np.nonzero(person)
        around = np.stack([xs, ys], axis=1).astype(np.float64) if xs.size else np.array([[0.0, 0.0], [out_size[0], out_size[1]]])
        _occlude(image, rng, around, occluders)

    image = image.astype(np.float32) * 255.0
    if noise_std > 0:
        # uniform sensor noise of the requested standard deviation: 4x cheaper to draw than Gaussian
        image += (rng.random(image.shape, dtype=np.float32) - 0.5) * np.float32(noise_std * np.sqrt(12.0))
    # Columns and rows whose centres fall outside the frame are black. The frame's pixel i covers
    # [i - 0.5, i + 0.5), and crop pixel c is the frame's point x0 + c * w / W (inverse of Camera.cropped).
    x0, y0, bw, bh = (float(v) for v in crop_box)
    u = x0 + np.arange(out_size[0]) * bw / out_size[0]
    v = y0 + np.arange(out_size[1]) * bh / out_size[1]
    image[:, (u < -0.5) | (u >= frame_size[0] - 0.5)] = 0.0
    image[(v < -0.5) | (v >= frame_size[1] - 0.5)] = 0.0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_people(
    camera: Camera,
    frame_size: tuple[int, int],
    figures: list[Figure],
    scene: Scene | None = None,
) -> np.ndarray:
    """uint8 [H, W, 3] whole frame of ``frame_size`` = (W, H) showing every figure, nearer ones in front.

    No figures gives the empty scene; the shadow falls below the first figure.
    """
    light = _DEFAULT_LIGHT if scene is None else scene.light
    w, h = frame_size
    colour, depth = np.zeros((h, w, 3), dtype=np.float32), np.full((h, w), np.inf)
    for figure in figures:
        figure_colour, figure_depth = _draw_figure(camera, figure, frame_size, light)
        nearer = figure_depth < depth
        colour[nearer], depth[nearer] = figure_colour[nearer], figure_depth[nearer]
    if scene is not None:
        backdrop = _backdrop(camera, scene, frame_size, figures[0].ground_xy if figures else None)
        colour = np.where(np.isfinite(depth)[..., None], colour, backdrop)
    return np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)
