"""One kinematic human body from which every skeleton format's joints are read off.

Coordinates
-----------
World: millimetres, z up, the ground is the plane z = 0.
Body frame (rest pose): x = the subject's right, y = forward, z = up (right-handed). The rest pose stands
upright with the arms hanging at the sides, palms towards the thighs. Every part frame coincides with the
body frame in the rest pose, so a landmark's coordinates in its part frame are simply its rest position
minus the part's origin (the joint it rotates about).

Geometry tables below are written for one side with a *lateral* coordinate that points away from the
midline; the side sign (left -1, right +1) turns it into x. That single convention is what makes the left
and right halves exact mirror images, for bones, landmarks and the per-format label offsets alike.
"""

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from assets.skeletons import BUILTIN_FORMATS, get_skeleton

from .seeding import rng_for, stable_hash

LEFT, CENTRE, RIGHT = -1, 0, 1
_SIDE_PREFIX = {LEFT: "l", RIGHT: "r"}

# part: (parent, vector from the parent's origin to this part's origin (lateral, forward, up) in mm for a
# nominal 1.78 m subject, size group that scales it)
_CENTRE_BONES = {
    "pelvis": (None, (0, 0, 0), "torso"),
    "spine_lower": ("pelvis", (0, -15, 95), "torso"),
    "spine_mid": ("spine_lower", (0, -10, 125), "torso"),
    "spine_upper": ("spine_mid", (0, 5, 130), "torso"),
    "neck": ("spine_upper", (0, -10, 150), "neck"),
    "head": ("neck", (0, 10, 90), "neck"),
}
_SIDED_BONES = {
    "clavicle": ("spine_upper", (25, 45, 105), "torso"),
    "upperarm": ("clavicle", (160, -55, 10), "shoulder"),
    "forearm": ("upperarm", (0, 0, -285), "upperarm"),
    "hand": ("forearm", (0, 0, -255), "forearm"),
    "thigh": ("pelvis", (88, 5, -70), "pelvis"),
    "shin": ("thigh", (0, 0, -430), "thigh"),
    "foot": ("shin", (0, 0, -420), "shin"),
    "toes": ("foot", (0, 135, -60), "foot"),
}
SIZE_GROUPS = ("torso", "neck", "head", "shoulder", "upperarm", "forearm", "hand", "pelvis", "thigh", "shin", "foot")

# Named rest points: part origins, plus a few tips that are no part's origin.
_ORIGIN_ANCHORS = {
    "pelvis": "pelvis", "spine_lower": "lumbar", "spine_mid": "midspine", "spine_upper": "chest",
    "neck": "neckbase", "head": "skullbase", "clavicle": "sternoclav", "upperarm": "shoulder",
    "forearm": "elbow", "hand": "wrist", "thigh": "hip", "shin": "knee", "foot": "ankle", "toes": "mtp",
}
_TIP_ANCHORS = {  # anchor: (part, vector from the part origin, size group)
    "headtop": ("head", (0, 0, 185), "head"),
    "knuckles": ("hand", (0, 5, -90), "hand"),
    "fingertip": ("hand", (0, 5, -185), "hand"),
    "toetip": ("toes", (0, 55, -5), "foot"),
    "heel": ("foot", (0, -50, -45), "foot"),
}
_SIDED_ANCHORS = frozenset(
    [_ORIGIN_ANCHORS[p] for p in _SIDED_BONES] + [a for a, (p, _, _) in _TIP_ANCHORS.items() if p in _SIDED_BONES]
)


def _part_name(generic: str, side: int) -> str:
    return f"{_SIDE_PREFIX[side]}_{generic}" if generic in _SIDED_BONES else generic


def _build_parts() -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    names, parents, sides = [], [], []
    for part, (parent, _, _) in _CENTRE_BONES.items():
        names.append(part)
        parents.append(-1 if parent is None else names.index(parent))
        sides.append(CENTRE)
    for side in (LEFT, RIGHT):
        for part, (parent, _, _) in _SIDED_BONES.items():
            names.append(_part_name(part, side))
            parents.append(names.index(_part_name(parent, side)))
            sides.append(side)
    return tuple(names), tuple(parents), tuple(sides)


PART_NAMES, PART_PARENTS, PART_SIDES = _build_parts()
PART_INDEX = {name: i for i, name in enumerate(PART_NAMES)}


def _generic(part: str) -> str:
    return part[2:] if part[:2] in ("l_", "r_") else part


# Joint limits in degrees per part: Euler angles (about x, about y, about z), applied as Rx @ Ry @ Rz in
# the parent's frame, written for the LEFT side; right parts use the mirrored rotation (y and z angles
# negated), so equal angle values give mirror-image poses. Signs with the rest pose: +x rotation swings a
# downward limb forward (hip/shoulder flexion, elbow flexion) and an upward one backward (spine extension);
# +y rotation swings a left limb outward (abduction). The pelvis row is the root's pitch and roll; its
# heading (rotation about the world's vertical) is unlimited and passed to ``Body.pose`` separately.
JOINT_LIMITS_DEG = {
    "pelvis": ((-70, 20), (-12, 12), (0, 0)),
    "spine_lower": ((-30, 15), (-15, 15), (-15, 15)),
    "spine_mid": ((-25, 10), (-15, 15), (-20, 20)),
    "spine_upper": ((-20, 10), (-10, 10), (-15, 15)),
    "neck": ((-30, 30), (-20, 20), (-40, 40)),
    "head": ((-25, 25), (-15, 15), (-30, 30)),
    "clavicle": ((-10, 10), (-10, 30), (-20, 15)),
    "upperarm": ((-50, 160), (-10, 160), (-60, 60)),
    "forearm": ((0, 145), (0, 0), (-60, 60)),
    "hand": ((-60, 60), (-20, 30), (0, 0)),
    "thigh": ((-20, 120), (-20, 45), (-35, 35)),
    "shin": ((-140, 0), (0, 0), (0, 0)),
    "foot": ((-40, 25), (-20, 20), (0, 0)),
    "toes": ((-20, 50), (0, 0), (0, 0)),
}


def joint_limits() -> np.ndarray:
    """[P, 3, 2] angle limits in radians, in the order of PART_NAMES (left-side convention for all)."""
    return np.radians(np.array([JOINT_LIMITS_DEG[_generic(p)] for p in PART_NAMES], dtype=np.float64))


# Part colours (RGB 0..1): each part its own, the same on both sides. A left/right colour code would make
# flip augmentation contradict itself (a mirrored crop would show the "left" colours on the right side),
# so, as with real people, the side follows from the geometry once the facing direction is known; the
# nose and a chest band (``Body.front_marker_capsules``) show which way the body faces.
_CENTRE_COLOURS = {
    "pelvis": (0.42, 0.42, 0.48), "spine_lower": (0.52, 0.33, 0.60), "spine_mid": (0.60, 0.45, 0.72),
    "spine_upper": (0.72, 0.62, 0.82), "neck": (0.86, 0.70, 0.55), "head": (0.96, 0.80, 0.62),
}
_LIMB_COLOURS = {
    "clavicle": (0.92, 0.62, 0.22), "upperarm": (0.95, 0.28, 0.20), "forearm": (1.00, 0.55, 0.10),
    "hand": (1.00, 0.86, 0.20), "thigh": (0.15, 0.35, 0.85), "shin": (0.20, 0.62, 0.60),
    "foot": (0.30, 0.20, 0.12), "toes": (0.45, 0.30, 0.18),
}
_NOSE_COLOUR = (0.75, 0.22, 0.18)
_CHEST_BAND_COLOUR = (0.97, 0.97, 0.95)


# ---------------------------------------------------------------------------------------------------
# Landmarks: where each joint name of each format sits on the body
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Landmark:
    """A point fixed to ``part``: anchor (name, or (a, b, t) interpolation) plus a nominal offset.

    Part and anchors are generic names; the joint's side decides which half of the body they refer to.
    The offset is (lateral, forward, up) in mm for the nominal subject.
    """

    part: str
    anchor: str | tuple[str, str, float]
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


L = _Landmark

_SIDED_LANDMARKS = {
    # joint centres
    "hip": L("thigh", "hip"), "kne": L("shin", "knee"), "ank": L("foot", "ankle"),
    "cla": L("clavicle", "sternoclav"), "sho": L("upperarm", "shoulder"), "elb": L("forearm", "elbow"),
    "wri": L("hand", "wrist"),
    # feet
    "toe": L("toes", ("mtp", "toetip", 0.35)), "toe2": L("toes", "toetip"),
    "foo": L("foot", ("ankle", "mtp", 0.6), (0, 0, -25)), "foo_index": L("toes", "toetip"),
    "hee": L("foot", "heel", (0, -30, 0)), "to2": L("toes", "toetip", (-20, 0, 0)),
    "to3": L("toes", ("mtp", "toetip", 0.7), (35, -15, 0)), "fourthtoe": L("toes", ("mtp", "toetip", 0.7), (25, 0, 0)),
    "fifthmetatarsal": L("foot", "mtp", (40, -15, -5)), "firstmetatarsal": L("foot", "mtp", (-30, -5, -5)),
    # legs
    "ankm": L("shin", "ankle", (38, -5, 0)), "knem": L("thigh", "knee", (55, 0, 0)),
    "innerknee": L("thigh", "knee", (-50, 0, 0)),
    "shin": L("shin", ("knee", "ankle", 0.45), (10, 45, 0)), "leg": L("shin", ("knee", "ankle", 0.4), (45, 10, 0)),
    "thigh": L("thigh", ("hip", "knee", 0.5), (75, 0, 0)), "frontthigh": L("thigh", ("hip", "knee", 0.4), (20, 75, 0)),
    "frontinnerthigh": L("thigh", ("hip", "knee", 0.55), (-35, 55, 0)),
    # pelvis and trunk surface
    "asis": L("pelvis", "hip", (30, 65, 75)), "psis": L("pelvis", "hip", (-45, -95, 80)),
    "bum": L("pelvis", "hip", (-10, -105, -45)), "hipb": L("pelvis", "hip", (-30, -110, 40)),
    "hipf": L("pelvis", "hip", (20, 85, 20)), "hipl": L("pelvis", "hip", (80, 0, 10)),
    "waist": L("spine_lower", "lumbar", (135, 15, 0)), "side": L("spine_mid", ("midspine", "chest", 0.3), (145, 10, 0)),
    "back": L("spine_mid", ("midspine", "chest", 0.5), (55, -110, 0)),
    "scapula": L("spine_upper", "chest", (85, -105, 60)),
    "breast": L("spine_upper", "chest", (85, 125, 20)),
    # shoulder and arm surface
    "shom": L("clavicle", "shoulder", (15, 0, 50)), "sho1": L("clavicle", "shoulder", (0, 45, 40)),
    "sho2": L("clavicle", "shoulder", (0, -45, 40)), "upperarm": L("upperarm", ("shoulder", "elbow", 0.5), (45, 0, 0)),
    "arm": L("upperarm", ("shoulder", "elbow", 0.4), (40, 20, 0)), "elbm": L("upperarm", "elbow", (40, 0, 0)),
    "elbinner": L("upperarm", "elbow", (-40, 5, 0)), "forearm": L("forearm", ("elbow", "wrist", 0.5), (35, 0, 0)),
    "writhumbside": L("forearm", "wrist", (0, 28, 0)), "wripinkieside": L("forearm", "wrist", (0, -28, 0)),
    # hand
    "han": L("hand", ("wrist", "knuckles", 0.6)), "han1": L("hand", "wrist", (25, 0, -20)),
    "han2": L("hand", ("wrist", "knuckles", 0.7), (25, -25, 0)),
    "han3": L("hand", ("wrist", "knuckles", 0.7), (25, 25, 0)),
    "handtip": L("hand", "fingertip"), "middle": L("hand", "fingertip"),
    "fin": L("hand", ("knuckles", "fingertip", 0.4)),
    "middle1": L("hand", "knuckles"), "middle3": L("hand", ("knuckles", "fingertip", 0.75)),
    "pinkie": L("hand", ("knuckles", "fingertip", 0.6), (0, -35, 15)),
    "pinky": L("hand", "knuckles", (0, -35, 5)), "index": L("hand", "knuckles", (0, 30, 5)), "thu": L("hand", "wrist", (-10, 40, -55)),
    "thu2": L("hand", "wrist", (-15, 50, -90)), "thumb": L("hand", "wrist", (-10, 45, -75)),
    # face and head (the head part is centred; the side only picks the half)
    "eye": L("head", "skullbase", (32, 88, 70)), "eyehf": L("head", "skullbase", (32, 80, 75)),
    "ear": L("head", "skullbase", (75, -5, 55)), "brow1": L("head", "skullbase", (30, 98, 95)),
    "eye_inner": L("head", "skullbase", (18, 92, 70)), "eye_outer": L("head", "skullbase", (48, 80, 70)),
    "mouth": L("head", "skullbase", (22, 98, 10)), "cheek": L("head", "skullbase", (52, 80, 30)), "head": L("head", "skullbase", (80, 10, 110)),
    "fronthead": L("head", "skullbase", (45, 85, 140)), "backhead": L("head", "skullbase", (45, -85, 110)),
}
_CENTRE_LANDMARKS = {
    "pelv": L("pelvis", "pelvis"), "mhip": L("pelvis", "hipcentre"), "spinebase": L("pelvis", "pelvis", (0, -25, 10)),
    "neck": L("neck", "neckbase"), "neck2": L("neck", ("neckbase", "skullbase", 0.5)), "neck3": L("head", "skullbase"),
    "head": L("head", "skullbase", (0, 20, 85)), "head2": L("head", "skullbase", (0, 15, 130)),
    "htop": L("head", "headtop"),
    "nose": L("head", "skullbase", (0, 108, 40)), "jaw": L("head", "skullbase", (0, 85, -35)),
    "backneck": L("neck", "neckbase", (0, -65, 0)), "upperback": L("spine_upper", "chest", (0, -110, 40)),
    "clavicle": L("spine_upper", "chest", (0, 90, 120)), "sternum": L("spine_upper", "chest", (0, 125, 40)),
    "chest": L("spine_upper", "chest", (0, 130, 10)), "umbilicus": L("spine_lower", "lumbar", (0, 125, 10)),
    "backl": L("spine_lower", "lumbar", (0, -105, 20)), "backt": L("spine_upper", "chest", (0, -105, 90)),
}

# Spine joints are named inconsistently across formats (spin, spi1..spi4, spin0..spin3, bell, thor, ...),
# so they are placed by their fraction of the way from the pelvis to the neck base along the spine chain.
_SPINE_CHAIN = ("pelvis", "spine_lower", "spine_mid", "spine_upper", "neck")
_SPINE_FRACTIONS = {
    "spin0": 0.15, "spin1": 0.3, "spi1": 0.3, "bell": 0.3, "spinemid": 0.5, "spi2": 0.55, "spin2": 0.6,
    "thor": 0.75, "spi3": 0.75, "spin3": 0.85, "spi4": 0.9, "spineshoulder": 0.97,
}
# A plain 'spin' is the mid spine, except in formats that also number their spine joints: there it is the
# lowest of the chain (gpa: spin, spi1, spi2, spi3; totalcapture: spin, spin1, ...).
_PLAIN_SPINE_FRACTION, _PLAIN_SPINE_FRACTION_NUMBERED = 0.45, 0.15
_NUMBERED_SPINE = re.compile(r"spin?\d$")

_CONVENTION_OFFSET_MM = (10.0, 40.0)


def _spine_landmark(fraction: float) -> _Landmark:
    vectors = [np.asarray(_CENTRE_BONES[p][1], dtype=float) for p in _SPINE_CHAIN[1:]]
    lengths = np.array([np.linalg.norm(v) for v in vectors])
    position = fraction * lengths.sum()
    k = int(np.clip(np.searchsorted(np.cumsum(lengths), position), 0, len(lengths) - 1))
    t = (position - lengths[:k].sum()) / lengths[k]
    part, child = _SPINE_CHAIN[k], _SPINE_CHAIN[k + 1]
    return L(part, (_ORIGIN_ANCHORS[part], _ORIGIN_ANCHORS[child], float(t)))


def _lookup(table: dict, stem: str) -> _Landmark | None:
    """Exact name, then without trailing digits, then the longest known name the stem starts with."""
    for candidate in (stem, stem.rstrip("0123456789")):
        if candidate in table:
            return table[candidate]
    prefixes = [k for k in table if stem.startswith(k)]
    return table[max(prefixes, key=len)] if prefixes else None


def _base_landmark(stem: str, sided: bool, all_stems: set[str]) -> _Landmark:
    if sided:
        found = _lookup(_SIDED_LANDMARKS, stem)
    elif stem == "spin":
        numbered = any(_NUMBERED_SPINE.fullmatch(s) for s in all_stems)
        found = _spine_landmark(_PLAIN_SPINE_FRACTION_NUMBERED if numbered else _PLAIN_SPINE_FRACTION)
    elif stem in _SPINE_FRACTIONS:
        found = _spine_landmark(_SPINE_FRACTIONS[stem])
    else:
        found = _lookup(_CENTRE_LANDMARKS, stem)
    if found is None:
        kind = "sided" if sided else "centre"
        raise KeyError(f"no body landmark for the {kind} joint stem {stem!r}")
    return found


def _convention_offset(format_name: str, key: str, sided: bool) -> np.ndarray:
    """(lateral, forward, up) mm: how this format's annotators place this joint relative to the others.

    Keyed by a stable hash of format and side-free joint key, so the left and right joint of a pair get
    the same lateral-outward offset, i.e. mirror images in x.
    """
    rng = np.random.default_rng(stable_hash("joint-convention", format_name, key))
    direction = rng.normal(size=3)
    if sided:
        # outward only: an inward offset can pull a close pair onto the midline (3dpeople_29's eyes
        # ended 1.7 mm apart)
        direction[0] = abs(direction[0])
    else:
        direction[0] = 0.0  # centre joints stay on the midline, so they mirror onto themselves
    direction /= np.linalg.norm(direction)
    return direction * rng.uniform(*_CONVENTION_OFFSET_MM)


@dataclass(frozen=True)
class FormatJoint:
    name: str
    side: int
    part: str  # full part name, e.g. 'l_thigh'
    anchor: tuple[tuple[str, int], tuple[str, int], float]  # (name, side) twice and the blend weight
    offset: tuple[float, float, float]  # nominal (x, y, z) mm including the format's convention offset


def _anchor_side(anchor: str, side: int) -> int:
    return side if anchor in _SIDED_ANCHORS else CENTRE


@lru_cache(maxsize=None)
def format_joints(format_name: str) -> tuple[FormatJoint, ...]:
    """Body landmark of every joint of a registered format, in the format's joint order."""
    skeleton = get_skeleton(format_name)
    stems = {name.split("_")[0] for name in skeleton.joint_names}
    joints = []
    for i, name in enumerate(skeleton.joint_names):
        sided = skeleton.mirror_indices[i] != i
        side = (LEFT if name[0] == "l" else RIGHT) if sided else CENTRE
        # a suffix names a landmark of its own ('leye_inner') or a source format ('lhip_smpl' = 'lhip')
        full_stem = name[1:] if sided else name
        stem = full_stem if full_stem in (_SIDED_LANDMARKS if sided else _CENTRE_LANDMARKS) \
            else full_stem.split("_")[0]
        landmark = _base_landmark(stem, sided, stems)
        # sided joints share one key per pair ('*hip_smpl'), so both draw the same offset
        key = "*" + name[1:] if sided else name
        lateral, forward, up = np.asarray(landmark.offset, dtype=float) + _convention_offset(format_name, key, sided)
        x = lateral * side if sided else lateral
        a, b, t = landmark.anchor if isinstance(landmark.anchor, tuple) else (landmark.anchor, landmark.anchor, 0.0)
        part = _part_name(landmark.part, side)
        joints.append(
            FormatJoint(
                name=name,
                side=side,
                part=part,
                anchor=((a, _anchor_side(a, side)), (b, _anchor_side(b, side)), float(t)),
                offset=(float(x), float(forward), float(up)),
            )
        )
    return tuple(joints)


# ---------------------------------------------------------------------------------------------------
# Subjects, poses and the body itself
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    """Body proportions of one person; ``height`` and ``width`` scale the nominal body, ``segments``
    additionally scale each size group (so proportions differ, not only overall size)."""

    name: str
    height: float
    width: float
    segments: tuple[float, ...]  # one factor per SIZE_GROUPS entry
    tint: tuple[float, float, float]  # clothing colour variation, multiplies the part colours

    @staticmethod
    def random(seed: int, *keys) -> "Subject":
        rng = rng_for(seed, "subject", *keys)
        return Subject(
            name="/".join(str(k) for k in keys),
            height=float(rng.uniform(0.9, 1.1)),
            width=float(rng.uniform(0.9, 1.12)),
            segments=tuple(float(v) for v in rng.uniform(0.94, 1.06, size=len(SIZE_GROUPS))),
            tint=tuple(float(v) for v in rng.uniform(0.85, 1.12, size=3)),
        )

    def scale(self, vector_lfu, group: str, side: int) -> np.ndarray:
        """Nominal (lateral, forward, up) vector of a size group -> this subject's (x, y, z) in mm."""
        lateral, forward, up = vector_lfu
        x = lateral * self.width * (side if side != CENTRE else 1)
        factor = self.height * self.segments[SIZE_GROUPS.index(group)]
        return np.array([x, forward, up], dtype=np.float64) * factor


NOMINAL_SUBJECT = Subject(
    name="nominal", height=1.0, width=1.0, segments=(1.0,) * len(SIZE_GROUPS), tint=(1.0, 1.0, 1.0)
)


@dataclass(frozen=True)
class PartFrames:
    """Posed body: world rotation and origin of every part per frame (``PART_NAMES`` order)."""

    rotations: np.ndarray  # [F, P, 3, 3] part -> world
    origins: np.ndarray  # [F, P, 3] world mm

    @property
    def num_frames(self) -> int:
        return self.origins.shape[0]

    def transform(self, part_indices: np.ndarray, local_points: np.ndarray) -> np.ndarray:
        """World positions [F, N, 3] of points fixed to parts (``local_points`` [N, 3] in part frames)."""
        rotations = self.rotations[:, part_indices]
        return self.origins[:, part_indices] + np.einsum("fnij,nj->fni", rotations, local_points)


def _rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(np.shape(angle) + (3, 3))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m[..., axis, axis] = 1.0
    m[..., i, i] = c
    m[..., j, j] = c
    sign = -1.0 if axis == 1 else 1.0  # rotation about y has the sine signs swapped
    m[..., i, j] = -s * sign
    m[..., j, i] = s * sign
    return m


def euler_xyz(angles: np.ndarray) -> np.ndarray:
    """Rx(a0) @ Ry(a1) @ Rz(a2) for angles [..., 3] in radians."""
    return _rotation(0, angles[..., 0]) @ _rotation(1, angles[..., 1]) @ _rotation(2, angles[..., 2])


# Right parts rotate by the mirror image of the left convention: reflecting x negates the y and z angles.
_MIRROR_SIGNS = np.array([[1.0, -1.0, -1.0] if side == RIGHT else [1.0, 1.0, 1.0] for side in PART_SIDES])
_FOOT_PARTS = tuple(PART_INDEX[_part_name(p, s)] for s in (LEFT, RIGHT) for p in ("foot", "toes"))
_SOLE_BLEND_MM = 8.0


class Body:
    """A subject's body: forward kinematics, landmarks of every format, and the shape for rendering."""

    def __init__(self, subject: Subject = NOMINAL_SUBJECT):
        self.subject = subject
        bones = []
        for part, side in zip(PART_NAMES, PART_SIDES):
            generic = _generic(part)
            _, vector, group = _CENTRE_BONES.get(generic) or _SIDED_BONES[generic]
            bones.append(subject.scale(vector, group, side))
        self.bones = np.array(bones)  # [P, 3] parent origin -> part origin, parent frame (= body frame at rest)
        rest = np.zeros_like(self.bones)
        for p, parent in enumerate(PART_PARENTS):
            rest[p] = self.bones[p] + (rest[parent] if parent >= 0 else 0.0)
        self.rest_origins = rest
        self._format_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._build_shape()

    # -- rest geometry ------------------------------------------------------------------------------
    def anchor(self, name: str, side: int = CENTRE) -> np.ndarray:
        """Rest position (body frame, root at the origin) of a named anchor point."""
        if name == "hipcentre":
            return 0.5 * (self.anchor("hip", LEFT) + self.anchor("hip", RIGHT))
        for generic, anchor_name in _ORIGIN_ANCHORS.items():
            if anchor_name == name:
                return self.rest_origins[PART_INDEX[_part_name(generic, side)]]
        part, vector, group = _TIP_ANCHORS[name]
        return self.rest_origins[PART_INDEX[_part_name(part, side)]] + self.subject.scale(vector, group, side)

    def _format_tables(self, format_name: str) -> tuple[np.ndarray, np.ndarray]:
        if format_name not in self._format_cache:
            parts, local = [], []
            for joint in format_joints(format_name):
                (a, side_a), (b, side_b), t = joint.anchor
                position = (1 - t) * self.anchor(a, side_a) + t * self.anchor(b, side_b)
                # surface offsets grow with the body like everything else (lateral with its width)
                scale = self.subject.height * np.array([self.subject.width, 1.0, 1.0])
                p = PART_INDEX[joint.part]
                parts.append(p)
                local.append(position + np.asarray(joint.offset) * scale - self.rest_origins[p])
            self._format_cache[format_name] = (np.array(parts, dtype=np.intp), np.array(local))
        return self._format_cache[format_name]

    # -- posing ---------------------------------------------------------------------------------------
    def pose(self, angles: np.ndarray, heading: np.ndarray, root_xy: np.ndarray) -> PartFrames:
        """Forward kinematics with the feet on the ground.

        angles: [F, P, 3] radians in the left-side convention of ``JOINT_LIMITS_DEG`` (the pelvis row is
        pitch, roll and an unused 0); heading: [F] radians about the world z axis, 0 = facing +y;
        root_xy: [F, 2] ground position of the pelvis in mm.
        """
        angles = np.asarray(angles, dtype=np.float64)
        local = euler_xyz(angles * _MIRROR_SIGNS)
        pitch, roll = angles[:, 0, 0], angles[:, 0, 1]
        local[:, 0] = _rotation(2, np.asarray(heading, dtype=np.float64)) @ _rotation(0, pitch) @ _rotation(1, roll)

        num_frames = angles.shape[0]
        rotations = np.empty((num_frames, len(PART_NAMES), 3, 3))
        origins = np.empty((num_frames, len(PART_NAMES), 3))
        rotations[:, 0] = local[:, 0]
        origins[:, 0] = 0.0
        for p in range(1, len(PART_NAMES)):
            parent = PART_PARENTS[p]
            rotations[:, p] = rotations[:, parent] @ local[:, p]
            origins[:, p] = origins[:, parent] + rotations[:, parent] @ self.bones[p]
        frames = PartFrames(rotations=rotations, origins=origins)
        # Stand on the ground: the lowest point of the soles touches z = 0. A hard minimum would kink the
        # pelvis height whenever support passes from heel to toe or foot to foot, so take a soft minimum
        # (the soles float by at most _SOLE_BLEND_MM * ln(number of equally low points), ~1 cm).
        start, end = self.capsule_endpoints(frames)
        on_feet = np.isin(self.capsule_parts, _FOOT_PARTS)
        radii = self.capsule_radii[on_feet]
        soles = np.concatenate([start[:, on_feet, 2] - radii[:, 0], end[:, on_feet, 2] - radii[:, 1]], axis=1)
        lowest = soles.min(axis=1)
        soft_lowest = lowest - _SOLE_BLEND_MM * np.log(np.exp(-(soles - lowest[:, None]) / _SOLE_BLEND_MM).sum(axis=1))
        lift = np.concatenate([np.asarray(root_xy, dtype=np.float64), -soft_lowest[:, None]], axis=1)
        return PartFrames(rotations=rotations, origins=origins + lift[:, None, :])

    def joints(self, format_name: str, frames: PartFrames) -> np.ndarray:
        """[F, J, 3] world mm joint positions in ``format_name``'s joint order."""
        parts, local = self._format_tables(format_name)
        return frames.transform(parts, local)

    def all_formats(self, frames: PartFrames, formats=BUILTIN_FORMATS) -> dict[str, np.ndarray]:
        """The same posed body read off in every format: {format: [F, J, 3]}."""
        return {name: self.joints(name, frames) for name in formats}

    # -- shape ----------------------------------------------------------------------------------------
    def _build_shape(self) -> None:
        """Capsules (tapered, per part) for rendering and ground contact, fixed in their part frames."""
        a = self.anchor
        up = np.array([0.0, 0.0, 1.0])
        fwd = np.array([0.0, 1.0, 0.0])
        scale = self.subject.height
        specs = []  # (part, start rest, end rest, radius at start, radius at end[, colour])

        def sided_point(name, side, lfu):
            return a(name, side) + self.subject.scale(lfu, "torso", side)

        hips = sided_point("hip", LEFT, (-10, -5, 20)), sided_point("hip", RIGHT, (-10, -5, 20))
        specs.append(("pelvis", *hips, 100, 100))
        front = 25 * scale * fwd  # the trunk's axis runs in front of the spine joints
        specs.append(("spine_lower", a("lumbar") + front - 20 * scale * up, a("midspine") + front, 120, 122))
        specs.append(("spine_mid", a("midspine") + front, a("chest") + front, 124, 128))
        specs.append(("spine_upper", a("chest") + front, a("chest") + scale * (15 * fwd + 70 * up), 126, 118))
        specs.append(("neck", a("neckbase"), a("skullbase"), 52, 48))
        head_axis = a("skullbase") + 20 * scale * fwd
        specs.append(("head", head_axis + 60 * scale * up, head_axis + 105 * scale * up, 88, 88))
        # front markers: a nose sticking out of the face and a light band across the front of the chest
        nose_root = head_axis + 75 * scale * up
        specs.append(("head", nose_root, nose_root + scale * (105 * fwd - 10 * up), 20, 14, _NOSE_COLOUR))
        lateral = np.array([1.0, 0.0, 0.0])
        band = a("chest") + scale * (135 * fwd + 35 * up)
        specs.append(("spine_upper", band - 70 * scale * lateral, band + 70 * scale * lateral, 34, 34,
                      _CHEST_BAND_COLOUR))
        for side in (LEFT, RIGHT):
            fingers = a("knuckles", side) + 0.8 * (a("fingertip", side) - a("knuckles", side))
            thumb_base = a("wrist", side) + self.subject.scale((-5, 25, -30), "hand", side)
            thumb_tip = a("wrist", side) + self.subject.scale((-15, 50, -90), "hand", side)
            for part, start, end, r0, r1 in (
                ("clavicle", a("sternoclav", side), a("shoulder", side), 50, 52),
                ("upperarm", a("shoulder", side), a("elbow", side), 52, 42),
                ("forearm", a("elbow", side), a("wrist", side), 40, 30),
                ("hand", a("wrist", side), fingers, 30, 20),
                ("hand", thumb_base, thumb_tip, 15, 11),
                ("thigh", a("hip", side), a("knee", side), 80, 52),
                ("shin", a("knee", side), a("ankle", side), 50, 36),
                ("foot", a("heel", side), a("mtp", side), 35, 28),
                ("toes", a("mtp", side), a("toetip", side), 26, 20),
            ):
                specs.append((_part_name(part, side), start, end, r0, r1))

        parts = np.array([PART_INDEX[s[0]] for s in specs], dtype=np.intp)
        self.capsule_parts = parts
        ends = np.array([[s[1], s[2]] for s in specs])  # [C, 2, 3] rest positions
        self.capsule_local = ends - self.rest_origins[parts][:, None]
        self.capsule_radii = np.array([[s[3], s[4]] for s in specs], dtype=np.float64) * scale * self.subject.width
        colours = []
        for s in specs:
            part = s[0]
            generic = _generic(part)
            side = PART_SIDES[PART_INDEX[part]]
            base = s[5] if len(s) > 5 else _CENTRE_COLOURS[generic] if side == CENTRE else _LIMB_COLOURS[generic]
            colours.append(np.clip(np.array(base) * np.array(self.subject.tint), 0.0, 1.0))
        self.capsule_colours = np.array(colours)  # [C, 3] RGB 0..1
        self.front_marker_capsules = np.array([i for i, spec in enumerate(specs) if len(spec) > 5], dtype=np.intp)

    def capsule_endpoints(self, frames: PartFrames) -> tuple[np.ndarray, np.ndarray]:
        """World start and end points [F, C, 3] of every capsule."""
        start = frames.transform(self.capsule_parts, self.capsule_local[:, 0])
        end = frames.transform(self.capsule_parts, self.capsule_local[:, 1])
        return start, end
