"""Smooth, plausible motions of the demo body.

A motion is a style template (walking gait, waving, bending, ...) written as smooth functions of time,
plus slow random wobble on every joint, squashed softly into the joint limits. Everything is a sum of
sinusoids below ~2 Hz, so positions, velocities and accelerations are continuous and bounded.
"""

from dataclasses import dataclass

import numpy as np

from .body import BUILTIN_FORMATS, LEFT, PART_INDEX, PART_NAMES, RIGHT, Body, PartFrames, Subject, joint_limits
from .seeding import rng_for

STYLES = ("walk", "wave", "bend", "squat", "turn", "stretch", "gesture")

# Slow random wobble per style, as a fraction of each joint's range.
_WOBBLE = {"walk": 0.05, "wave": 0.07, "bend": 0.05, "squat": 0.04, "turn": 0.06, "stretch": 0.06, "gesture": 0.12}
_WOBBLE_HZ = (0.05, 0.5)
_STRIDE_MM = 1300.0  # distance per full gait cycle


@dataclass(frozen=True)
class Motion:
    style: str
    times: np.ndarray  # [F] seconds
    angles: np.ndarray  # [F, P, 3] radians, inside body.joint_limits()
    heading: np.ndarray  # [F] radians about world z, 0 = facing +y
    root_xy: np.ndarray  # [F, 2] mm, pelvis position on the ground

    @property
    def num_frames(self) -> int:
        return len(self.times)

    def frames(self, body: Body) -> PartFrames:
        return body.pose(self.angles, self.heading, self.root_xy)


def soft_clamp(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Identity in the middle 80% of [lo, hi], tanh roll-off into the outer 10% on each side.

    Continuous in value and slope, so a clamped trajectory stays smooth, and strictly inside the limits.
    """
    margin = 0.1 * (hi - lo)
    inner_lo, inner_hi = lo + margin, hi - margin
    safe = np.where(margin > 0, margin, 1.0)
    above = inner_hi + margin * np.tanh((x - inner_hi) / safe)
    below = inner_lo - margin * np.tanh((inner_lo - x) / safe)
    out = np.where(x > inner_hi, above, np.where(x < inner_lo, below, x))
    return np.where(margin > 0, out, lo)


class _Template:
    """Target joint angles in degrees, filled in per part and axis."""

    def __init__(self, num_frames: int):
        self.degrees = np.zeros((num_frames, len(PART_NAMES), 3))

    def set(self, part: str, axis: int, value, side: int | None = None):
        name = part if side is None else f"{'l' if side == LEFT else 'r'}_{part}"
        self.degrees[:, PART_INDEX[name], axis] = value

    def both(self, part: str, axis: int, left, right):
        self.set(part, axis, left, LEFT)
        self.set(part, axis, right, RIGHT)


def _cycle(t, period, phase=0.0):
    """0 -> 1 -> 0 once per period, smoothly (raised cosine)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * t / period + phase)


def _gait(tpl: _Template, phi: np.ndarray, amplitude: float):
    """Alternating legs and counter-swinging arms at gait phase ``phi`` (radians)."""
    for side, offset in ((LEFT, 0.0), (RIGHT, np.pi)):
        p = phi + offset
        tpl.set("thigh", 0, 6 + 18 * amplitude * np.sin(p), side)
        # the knee flexes most in early swing, just before the hip reaches full flexion
        tpl.set("shin", 0, -(5 + 55 * amplitude * ((1 + np.cos(p + 0.3)) / 2) ** 2), side)
        tpl.set("foot", 0, 8 * amplitude * np.sin(p - 0.8), side)
        tpl.set("toes", 0, 10 * amplitude * (1 + np.cos(p - 2.5)) / 2, side)
        tpl.set("upperarm", 0, -18 * amplitude * np.sin(p), side)
        tpl.set("upperarm", 1, 8, side)
        tpl.set("forearm", 0, 15 + 15 * amplitude * (1 - np.sin(p)) / 2, side)
    tpl.set("spine_mid", 2, 6 * amplitude * np.sin(phi))
    tpl.set("pelvis", 1, 3 * amplitude * np.sin(phi))


def _walk(tpl, t, rng, centre, radius):
    loop = radius * rng.uniform(0.6, 1.0)
    speed = rng.uniform(900, 1300)  # mm/s
    direction = rng.choice([-1.0, 1.0])
    theta = rng.uniform(0, 2 * np.pi) + direction * speed * t / loop
    root = centre + loop * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    heading = theta + (0.0 if direction > 0 else np.pi)  # along the circle's tangent
    _gait(tpl, 2 * np.pi * speed * t / _STRIDE_MM, 1.0)
    tpl.set("spine_lower", 0, -4)
    return root, heading


def _stationary(t, rng, centre, radius, sway=150.0):
    """Slow drift around a spot and a slowly wandering heading."""
    spot = centre + rng.uniform(-0.5, 0.5, size=2) * radius
    freqs = rng.uniform(0.03, 0.12, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    drift = sway * np.sin(2 * np.pi * freqs[:2] * t[:, None] + phases[:2])
    heading = rng.uniform(0, 2 * np.pi) + 0.5 * np.sin(2 * np.pi * freqs[2] * t + phases[2])
    return spot + drift, heading


def _wave(tpl, t, rng, centre, radius):
    side = rng.choice([LEFT, RIGHT])
    other = RIGHT if side == LEFT else LEFT
    raised = _cycle(t, rng.uniform(4.0, 6.0), rng.uniform(0, 2 * np.pi))
    wave_hz = rng.uniform(1.2, 1.8)
    tpl.set("upperarm", 1, 10 + 90 * raised, side)
    tpl.set("upperarm", 0, 10 + 20 * raised, side)
    tpl.set("forearm", 0, 20 + raised * (55 + 35 * np.sin(2 * np.pi * wave_hz * t)), side)
    tpl.set("upperarm", 1, 8, other)
    tpl.set("forearm", 0, 15, other)
    tpl.set("neck", 2, (15 if side == LEFT else -15) * raised)
    return _stationary(t, rng, centre, radius)


def _bend(tpl, t, rng, centre, radius):
    d = _cycle(t, rng.uniform(3.5, 5.0), rng.uniform(0, 2 * np.pi))
    tpl.set("pelvis", 0, -50 * d)
    tpl.both("thigh", 0, 5 + 45 * d, 5 + 45 * d)
    tpl.both("shin", 0, -15 * d, -15 * d)
    tpl.set("spine_lower", 0, -15 * d)
    tpl.set("spine_mid", 0, -12 * d)
    tpl.set("spine_upper", 0, -8 * d)
    tpl.set("neck", 0, 15 * d)  # keep looking ahead while bent
    tpl.both("upperarm", 0, 70 * d, 70 * d)  # arms hang towards the floor
    tpl.both("forearm", 0, 10 + 10 * d, 10 + 10 * d)
    return _stationary(t, rng, centre, radius)


def _squat(tpl, t, rng, centre, radius):
    d = _cycle(t, rng.uniform(3.0, 4.5), rng.uniform(0, 2 * np.pi))
    tpl.set("pelvis", 0, -15 * d)
    tpl.both("thigh", 0, 105 * d, 105 * d)
    tpl.both("thigh", 1, 8 * d, 8 * d)
    tpl.both("shin", 0, -115 * d, -115 * d)
    tpl.both("foot", 0, 22 * d, 22 * d)  # nearly cancels pelvis + hip + knee, so the feet stay flat
    tpl.set("spine_lower", 0, -10 * d)
    tpl.both("upperarm", 0, 80 * d, 80 * d)  # arms forward for balance
    tpl.both("forearm", 0, 10, 10)
    return _stationary(t, rng, centre, radius, sway=60.0)


def _turn(tpl, t, rng, centre, radius):
    rate = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6)  # rad/s
    _gait(tpl, 2 * np.pi * 1.1 * t, 0.45)
    tpl.both("upperarm", 1, 15, 15)
    tpl.set("neck", 2, 15 * np.sign(rate))  # look into the turn
    root, heading = _stationary(t, rng, centre, radius, sway=100.0)
    return root, heading + rate * t


def _stretch(tpl, t, rng, centre, radius):
    period = rng.uniform(4.0, 6.0)
    d = _cycle(t, period, rng.uniform(0, 2 * np.pi))
    tpl.both("upperarm", 1, 20 + 140 * d, 20 + 140 * d)
    tpl.both("upperarm", 0, 10 * d, 10 * d)
    tpl.both("forearm", 0, 15 - 10 * d, 15 - 10 * d)
    tpl.set("spine_mid", 1, 10 * np.sin(np.pi * t / period))
    tpl.set("spine_lower", 0, 8 * d)
    tpl.set("neck", 0, 10 * d)
    return _stationary(t, rng, centre, radius, sway=80.0)


def _gesture(tpl, t, rng, centre, radius):
    for side in (LEFT, RIGHT):
        f, ph = rng.uniform(0.3, 0.7), rng.uniform(0, 2 * np.pi)
        tpl.set("upperarm", 0, 25 + 15 * np.sin(2 * np.pi * f * t + ph), side)
        tpl.set("upperarm", 1, 15 + 10 * np.sin(2 * np.pi * f * 0.7 * t + ph), side)
        tpl.set("forearm", 0, 60 + 25 * np.sin(2 * np.pi * f * 1.3 * t + ph + 1.0), side)
    tpl.set("neck", 2, 20 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi)))
    return _stationary(t, rng, centre, radius)


_STYLE_FUNCTIONS = {
    "walk": _walk, "wave": _wave, "bend": _bend, "squat": _squat, "turn": _turn, "stretch": _stretch,
    "gesture": _gesture,
}


def generate_motion(style: str, times, seed: int, *keys, centre=(0.0, 0.0), radius: float = 1300.0) -> Motion:
    """A motion of ``style`` sampled at ``times`` (seconds), deterministic in (seed, keys).

    The person stays within ``radius`` mm of ``centre`` on the ground (plus the body's own extent).
    """
    if style not in _STYLE_FUNCTIONS:
        raise ValueError(f"unknown motion style {style!r}; known: {', '.join(STYLES)}")
    t = np.asarray(times, dtype=np.float64)
    rng = rng_for(seed, "motion", style, *keys)
    tpl = _Template(len(t))
    root, heading = _STYLE_FUNCTIONS[style](tpl, t, rng, np.asarray(centre, dtype=np.float64), radius)

    limits = joint_limits()  # [P, 3, 2]
    lo, hi = limits[..., 0], limits[..., 1]
    # wobble: three random sinusoids per degree of freedom, a fraction of the joint's range
    shape = (3,) + lo.shape
    freqs = rng.uniform(*_WOBBLE_HZ, size=shape)
    phases = rng.uniform(0, 2 * np.pi, size=shape)
    amplitudes = rng.uniform(0.3, 1.0, size=shape) * _WOBBLE[style] * (hi - lo) / 3
    wobble = (amplitudes * np.sin(2 * np.pi * freqs * t[:, None, None, None] + phases)).sum(axis=1)
    angles = soft_clamp(np.radians(tpl.degrees) + wobble, lo, hi)
    return Motion(style=style, times=t, angles=angles, heading=np.asarray(heading, dtype=np.float64), root_xy=root)


def sample_all_formats(
    num_poses: int, seed: int = 0, formats=BUILTIN_FORMATS, poses_per_subject: int = 50
) -> dict[str, np.ndarray]:
    """Random poses of random subjects read off in every format: {format: [N, J, 3] world mm}.

    Row n is the same body in the same pose in every format, which is what fitting a model of the relations
    between formats (an autoencoder over concatenated formats) needs.
    """
    out = {name: [] for name in formats}
    for start in range(0, num_poses, poses_per_subject):
        count = min(poses_per_subject, num_poses - start)
        rng = rng_for(seed, "sample_all_formats", start)
        body = Body(Subject.random(seed, "sample_all_formats", start))
        style = str(rng.choice(STYLES))
        times = np.sort(rng.uniform(0, 60, size=count))
        frames = generate_motion(style, times, seed, "sample_all_formats", start).frames(body)
        for name, joints in body.all_formats(frames, formats).items():
            out[name].append(joints)
    return {name: np.concatenate(parts) for name, parts in out.items()}
