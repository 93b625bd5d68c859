"""Cameras of the demo world: lenses, fixed multi-camera rigs, handheld trajectories, person crop boxes.

World z is up (see ``body``); cameras follow ``assets.cameras`` (x right, y down, z forward,
``x_cam = R @ x_world + t``, millimetres).
"""

import numpy as np

from assets.cameras import Camera

_UP = np.array([0.0, 0.0, 1.0])


def random_lens(rng: np.random.Generator, image_size, focal: float, k1_range=(0.05, 0.2)):
    """Intrinsics near ``focal`` with the principal point near the frame centre, and small OpenCV distortion.

    k1 is at least ``k1_range[0]`` in magnitude (either sign) so that every camera is noticeably distorted.
    """
    w, h = image_size
    f = focal * rng.uniform(0.97, 1.03)
    K = np.array([
        [f, 0.0, w / 2 + rng.uniform(-0.01, 0.01) * w],
        [0.0, f * rng.uniform(0.998, 1.002), h / 2 + rng.uniform(-0.01, 0.01) * h],
        [0.0, 0.0, 1.0],
    ])
    k1 = rng.choice([-1.0, 1.0]) * rng.uniform(*k1_range)
    k2, k3 = rng.uniform(-0.04, 0.04), rng.uniform(-0.01, 0.01)
    p1, p2 = rng.uniform(-1e-3, 1e-3, size=2)
    dist = np.array([k1, k2, p1, p2, k3])
    return K, dist


def look_at(K, dist, centre, target, roll: float = 0.0) -> Camera:
    """Camera at ``centre`` (world mm) looking at ``target``, level except for ``roll`` radians."""
    centre = np.asarray(centre, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, _UP)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    R = np.stack([right, down, forward])
    return Camera(K=K, dist=dist, R=R, t=-R @ centre)


def ring_rig(
    rng: np.random.Generator,
    count: int,
    image_size,
    focal: float,
    distance=(4000.0, 5000.0),
    height=(1300.0, 1800.0),
    centre=(0.0, 0.0),
    target_height: float = 1000.0,
) -> list[Camera]:
    """``count`` static cameras spread around a capture area, all aimed at its centre."""
    start = rng.uniform(0, 2 * np.pi)
    cameras = []
    for i in range(count):
        azimuth = start + 2 * np.pi * i / count + rng.uniform(-0.25, 0.25)
        r = rng.uniform(*distance)
        position = np.array([centre[0] + r * np.cos(azimuth), centre[1] + r * np.sin(azimuth), rng.uniform(*height)])
        target = np.array([centre[0], centre[1], target_height]) + rng.normal(0, 100, size=3)
        K, dist = random_lens(rng, image_size, focal)
        cameras.append(look_at(K, dist, position, target, roll=rng.normal(0, 0.02)))
    return cameras


def _slow_wave(rng, t, hz=(0.03, 0.2), terms=3):
    """Smooth zero-mean signal in [-1, 1]: a few slow sinusoids of random frequency and phase."""
    freqs = rng.uniform(*hz, size=terms)
    phases = rng.uniform(0, 2 * np.pi, size=terms)
    return np.sin(2 * np.pi * freqs * t[:, None] + phases).mean(axis=1)


def handheld_cameras(
    rng: np.random.Generator, times: np.ndarray, subject_xy: np.ndarray, image_size, focal: float
) -> list[Camera]:
    """One camera per frame for a person filming ``subject_xy`` [F, 2] while walking around them.

    Distance, height, azimuth, aim and roll all drift smoothly; a little hand shake rides on top. The aim
    wanders enough that the subject sometimes nears the frame border.
    """
    t = np.asarray(times, dtype=np.float64)
    K, dist = random_lens(rng, image_size, focal)
    azimuth = rng.uniform(0, 2 * np.pi) + 0.8 * _slow_wave(rng, t)
    distance = rng.uniform(2800, 3800) + 400 * _slow_wave(rng, t)
    height = rng.uniform(1200, 1600) + 150 * _slow_wave(rng, t)
    shake = 8.0 * np.stack([_slow_wave(rng, t, hz=(0.8, 2.0)) for _ in range(3)], axis=1)
    aim = np.stack([350 * _slow_wave(rng, t), 350 * _slow_wave(rng, t), 1000 + 200 * _slow_wave(rng, t)], axis=1)
    roll = 0.05 * _slow_wave(rng, t)
    cameras = []
    for f in range(len(t)):
        xy = subject_xy[f] + distance[f] * np.array([np.cos(azimuth[f]), np.sin(azimuth[f])])
        position = np.array([xy[0], xy[1], height[f]]) + shake[f]
        target = np.array([subject_xy[f, 0], subject_xy[f, 1], 0.0]) + aim[f]
        cameras.append(look_at(K, dist, position, target, roll=roll[f]))
    return cameras


def crop_around(box, rng: np.random.Generator, scale=(1.15, 1.35), jitter=0.05, aspect=1.0) -> np.ndarray:
    """Detector-like crop of aspect w/h = ``aspect`` around ``box``: enlarged and a little off-centre."""
    x, y, w, h = box
    width = max(w, h * aspect) * rng.uniform(*scale)
    height = width / aspect
    cx = x + w / 2 + rng.uniform(-jitter, jitter) * width
    cy = y + h / 2 + rng.uniform(-jitter, jitter) * height
    return np.array([cx - width / 2, cy - height / 2, width, height])


def cut_crop(box, rng: np.random.Generator, aspect: float = 1.0) -> np.ndarray:
    """A truncating crop: a square-ish window over only part of the person (upper body, legs, one side)."""
    x, y, w, h = box
    width = max(w, h * aspect) * rng.uniform(0.5, 0.75)
    height = width / aspect
    cx = x + w * rng.uniform(0.25, 0.75)
    cy = y + h * rng.choice([rng.uniform(0.15, 0.35), rng.uniform(0.65, 0.85)])
    return np.array([cx - width / 2, cy - height / 2, width, height])


def aimed_beside(camera: Camera, target, offset_mm: float) -> Camera:
    """The same camera turned to look ``offset_mm`` to the side of ``target``.

    The subject then sits near a frame border and steps partly out of the picture now and then.
    """
    target = np.asarray(target, dtype=np.float64)
    forward = target - camera.center
    sideways = np.cross(forward, _UP)
    sideways /= np.linalg.norm(sideways)
    return look_at(camera.K, camera.dist, camera.center, target + offset_mm * sideways)
