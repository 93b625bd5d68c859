"""Demo-world datasets written exactly as two real releases ship, for the real converters to read.

``demo_h36m_25`` has Human3.6M's layout (converter ``h36m``, ``assets/converters/h36m.py``) and
``demo_aspset_17`` ASPset-510's (converter ``aspset``, ``assets/converters/aspset.py``): the same
calibration files, pose files, units, camera names, file names and subject splits. The layout's constants
(camera ids, splits, joint order, frame rate, sampling steps) are taken from the converters, so writer and
reader cannot drift apart; the annotations are the world's true joints (``Body.joints``).

``h36m_takes`` and ``aspset_takes`` say what a writer writes (subject, split, body, posed frames,
cameras, scene) without writing it, so that tests can recompute the truth of any converted example.

Both releases are 50 fps videos. Each take's poses cover every video frame, but only the frames the
converter's default sampling reads are rendered, as extracted jpgs (H36M: PosePile's ``Images/``; ASPset:
``frames/``), which both converters read in place of videos. Frames are a quarter (H36M) or a tenth
(ASPset) of the real size, so the person's box has about the side of the converted crop.
"""

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.converters import aspset, h36m
from assets.person_crops import BOX_PADDING

from .body import Body, PartFrames, Subject
from .motion import Motion, generate_motion
from .render import Scene, figure_box, render_people
from .rigs import look_at, random_lens, ring_rig
from .seeding import rng_for
from .writing import Job, figures_of, render, style_named, styles, take, write_jpeg

# Only a square this much larger than the person's box is rendered per frame, over the static camera's
# empty scene (rendered once): the converters' crops (BOX_PADDING around the joints) stay well inside it
_RENDERED_SIDE = 1.25 * BOX_PADDING
_OCCLUSION_RATE = 0.1


@dataclass(frozen=True)
class Take:
    """One take of the demo world as a release records it: one subject, one motion, fixed cameras."""

    subject: str
    name: str  # H36M: the file stem ("Walking"); ASPset: the clip id ("0001")
    split: str  # as the converter assigns it
    body: Body
    frames: PartFrames  # every video frame of the take (= pose file row)
    rig: dict[str, Camera]  # every camera of the session, demo-world coordinates
    views: tuple[str, ...]  # the cameras that filmed this take
    scene: Scene
    image_step: int  # every image_step-th frame is rendered (the converter's default sampling)

    def rendered_rows(self) -> range:
        return range(0, self.frames.num_frames, self.image_step)


def _frame(job: Job, rng, camera: Camera, frame_size, backdrop: np.ndarray, figure, scene: Scene) -> np.ndarray:
    """The whole frame: the person's surroundings rendered over ``backdrop``, the camera's empty scene."""
    x, y, w, h = figure_box(camera, figure)
    half = _RENDERED_SIDE * max(w, h) / 2
    x0, y0 = max(math.floor(x + w / 2 - half), 0), max(math.floor(y + h / 2 - half), 0)
    x1, y1 = min(math.ceil(x + w / 2 + half), frame_size[0]), min(math.ceil(y + h / 2 + half), frame_size[1])
    image = backdrop.copy()
    if x0 < x1 and y0 < y1:
        region = np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.float64)  # whole pixels: rendered 1:1
        image[y0:y1, x0:x1] = render(job, rng, camera, frame_size, region, figure, scene, _OCCLUSION_RATE,
                                     out_size=(x1 - x0, y1 - y0))
    return image


# ---------------------------------------------------------------------------------------------------
# Human3.6M: the release's files
# ---------------------------------------------------------------------------------------------------
# the protocol tags of the real metadata.xml; the converter ignores them (it splits as PosePile does)
_H36M_PROTOCOL_TAGS = {"train_subjects": "[1 7 8 9 11]", "val_subjects": "[5 6]", "test_subjects": "[2 3 4 10]"}
_H36M_CALIBRATED_SUBJECTS = 11  # <w0> has a calibration for each of S1..S11
# file joints that h36m_25 leaves out, placed from the ones it has (indices into the 32): the release's
# shoulder joints (16, 24) coincide with the thorax (13) and the end sites (23, 31) with their joints
_H36M_DERIVED_FILE_JOINTS = {11: (0, 12), 16: (13,), 20: (19, 21), 23: (22,), 24: (13,), 28: (27, 29), 31: (30,)}


def write_metadata_xml(path: Path, w0: np.ndarray) -> None:
    """metadata.xml of the H36M code bundle: the 300 camera numbers ``w0`` and the camera order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tags = "".join(f"   <{tag}>{value}</{tag}>\n" for tag, value in _H36M_PROTOCOL_TAGS.items())
    numbers = " ".join(repr(float(v)) for v in w0)
    items = "".join(f"\n         <item>{camera}</item>" for camera in h36m.CAMERAS)
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<a>\n{tags}   <w0>[{numbers}]</w0>\n'
                    f"   <dbcameras>\n      <index2id>{items}\n      </index2id>\n   </dbcameras>\n</a>\n")


def _euler_xyz(R: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) with R = Rx(a) Ry(b) Rz(c), metadata.xml's rotation (``h36m.rotation_xyz``)."""
    return (math.atan2(-R[1, 2], R[2, 2]), math.asin(float(np.clip(R[0, 2], -1.0, 1.0))),
            math.atan2(-R[0, 1], R[0, 0]))


def h36m_w0(cameras: list[Camera]) -> np.ndarray:
    """<w0> of one rig (in ``h36m.CAMERAS`` order) as every subject's calibration: the release calibrated each
    subject's session anew, the demo's rig never moves."""
    extrinsics = np.array([[*_euler_xyz(c.R), *c.center] for c in cameras])
    # w0 orders the distortion k1 k2 k3 p1 p2 (OpenCV's dist: k1 k2 p1 p2 k3)
    intrinsics = np.array([[c.K[0, 0], c.K[1, 1], c.K[0, 2], c.K[1, 2], *c.dist[[0, 1, 4]], *c.dist[[2, 3]]]
                           for c in cameras])
    per_subject = np.repeat(extrinsics[:, None], _H36M_CALIBRATED_SUBJECTS, axis=1)
    return np.concatenate([per_subject.reshape(-1), intrinsics.reshape(-1)])


def write_pose_cdf(path: Path, poses: np.ndarray, variable: str = "Pose") -> None:
    """An H36M pose file: float32 zVariable ``variable`` with ONE record of [N, values] (read as (1, N, values)),
    uncompressed (cdflib's gzip would stamp the time into the file)."""
    from cdflib import cdfwrite  # pure Python, as the converter's reader: only these files need it

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    data = np.asarray(poses, np.float32).reshape(len(poses), -1)
    cdf = cdfwrite.CDF(str(path), cdf_spec={"Compressed": False})
    cdf.write_var({"Variable": variable, "Data_Type": cdfwrite.CDF.CDF_FLOAT, "Num_Elements": 1, "Rec_Vary": True,
                   "Dim_Sizes": list(data.shape), "Compress": 0}, var_data=data[None])
    cdf.close()


def h36m_file_joints(joints: np.ndarray) -> np.ndarray:
    """[..., 32, 3] joints of the release's files from [..., 25, 3] h36m_25 joints."""
    out = np.zeros((*joints.shape[:-2], h36m.NUM_FILE_JOINTS, joints.shape[-1]))
    out[..., list(h36m.FILE_JOINTS), :] = joints
    for joint, sources in _H36M_DERIVED_FILE_JOINTS.items():
        out[..., joint, :] = out[..., list(sources), :].mean(axis=-2)
    return out


# ---------------------------------------------------------------------------------------------------
# Human3.6M: the demo dataset
# ---------------------------------------------------------------------------------------------------
# the demo's motion styles as the release's action names (the file stems)
H36M_ACTION_NAMES = {"walk": "Walking", "wave": "Greeting", "bend": "Purchases", "squat": "SittingDown",
                     "turn": "Directions", "stretch": "Posing", "gesture": "Discussion"}
_H36M_FPS = 50
_H36M_FRAME = (250, 250)  # a quarter of the real 1000 x 1000
_H36M_FOCAL = 1145.0 * _H36M_FRAME[0] / 1000
# actions per subject, and video frames per take of the training and the test subjects: 3 sampled frames
# each (every 5th, every 64th), so 4 cameras give 120 training and 48 test examples
_H36M_SIZES = {"demo": (2, 11, 129), "tiny": (1, 1, 1)}


def h36m_takes(job: Job) -> list[Take]:
    """The takes ``write_demo_h36m_25`` writes: the training and test subjects of ``h36m.SUBJECT_SPLITS``."""
    actions, *rows = _H36M_SIZES[job.size]
    cameras = ring_rig(job.rng("rig"), len(h36m.CAMERAS), _H36M_FRAME, _H36M_FOCAL, distance=(4500, 5200),
                       height=(1400, 1800))
    rig = dict(zip(h36m.CAMERAS, cameras))
    scene = Scene.random(job.seed, job.name)
    takes = []
    for split, num_rows in zip(("train", "test"), rows):
        step = h36m.EXTRA_OPTIONS[f"{split}_frame_step"]
        for subject in take([s for s, of in h36m.SUBJECT_SPLITS.items() if of == split], job.size):
            body = Body(Subject.random(job.seed, job.name, subject))
            for style in styles(job.rng(subject, "actions"), actions):
                stem = H36M_ACTION_NAMES[style]
                frames = h36m_take_motion(job.seed, job.name, subject, stem, np.arange(num_rows)).frames(body)
                takes.append(Take(subject, stem, split, body, frames, rig, h36m.CAMERAS, scene, step))
    return takes


def h36m_take_motion(seed: int, dataset: str, subject: str, stem: str, rows) -> Motion:
    """The motion of ``subject``'s take ``stem`` (an action name) at the given video frames (pose file rows)."""
    style = style_named(H36M_ACTION_NAMES, stem, dataset, "take")
    start = rng_for(seed, dataset, subject, stem, "start").uniform(0, 30)
    return generate_motion(style, start + np.asarray(rows) / _H36M_FPS, seed, dataset, subject, radius=1000.0)


def write_demo_h36m_25(job: Job) -> int:
    """Human3.6M's layout: ``Release-v1.2/metadata.xml``, per take and camera ``S<n>/MyPoseFeatures/
    {D3_Positions_mono,D2_Positions}/<Action>.<camera>.cdf`` and ``S<n>/Images/<Action>.<camera>/
    frame_%06d.jpg``. Returns the number of images."""
    takes = h36m_takes(job)
    rig, scene = takes[0].rig, takes[0].scene
    write_metadata_xml(job.out / h36m.METADATA_PATHS[0], h36m_w0([rig[c] for c in h36m.CAMERAS]))
    backdrops = {c: render_people(camera, _H36M_FRAME, [], scene) for c, camera in rig.items()}
    count = 0
    for t in takes:
        annotated = h36m_file_joints(t.body.joints(h36m.SKELETON, t.frames))
        if t.subject == "S9" and t.name in h36m.S9_SHIFTED:
            # as released: these takes' poses are 200 mm off their images, which the converter corrects
            annotated = annotated + h36m.S9_SHIFT_WORLD_MM
        figures = figures_of(t.body, t.frames)
        features = job.out / t.subject / "MyPoseFeatures"
        for c in t.views:
            camera = t.rig[c]
            write_pose_cdf(features / "D3_Positions_mono" / f"{t.name}.{c}.cdf", camera.world_to_camera(annotated))
            write_pose_cdf(features / "D2_Positions" / f"{t.name}.{c}.cdf", camera.world_to_image(annotated))
            rng = job.rng(t.subject, t.name, c)
            for row in t.rendered_rows():
                image = _frame(job, rng, camera, _H36M_FRAME, backdrops[c], figures[row], scene)
                write_jpeg(job.out / t.subject / "Images" / f"{t.name}.{c}" / f"frame_{row:06d}.jpg", image)
                count += 1
    return count


# ---------------------------------------------------------------------------------------------------
# ASPset-510: the release's files
# ---------------------------------------------------------------------------------------------------
def write_splits_csv(path: Path, rows) -> None:
    """splits.csv: no header; one (subject_id, clip_id, split, camera_id) row per clip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())


def write_camera_json(path: Path, intrinsic: np.ndarray, extrinsic: np.ndarray, *, flat: bool = False) -> None:
    """A camera file: ``intrinsic_matrix`` 3x4 (K|0), ``extrinsic_matrix`` 4x4 world->camera in mm, as nested
    rows or (``flat``) row-major lists; the release has both."""
    matrices = {"intrinsic_matrix": np.asarray(intrinsic, np.float64),
                "extrinsic_matrix": np.asarray(extrinsic, np.float64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: (m.reshape(-1) if flat else m).tolist() for k, m in matrices.items()}))


def write_c3d(path: Path, joints: np.ndarray, *, units: str = "mm", labels=aspset.JOINT_LABELS,
              rate: float = aspset.FPS) -> None:
    """Joints [frames, points, 3] as a float C3D the way posekit's save_c3d_mocap writes it: POINT:RATE, UNITS,
    LABELS and SKEL; a NaN point is marked invalid (residual -1) in its frame."""
    import c3d  # pure Python, as the converter's reader: only these files need it

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = c3d.Writer(point_rate=rate, point_units=units)
    if labels is not None:
        writer.set_point_labels(list(labels))
    writer.point_group.add_str("SKEL", "skeleton name", aspset.C3D_SKELETON, len(aspset.C3D_SKELETON), 1)
    frames = []
    for pose in np.asarray(joints, np.float64):
        points = np.zeros((len(pose), 5))
        invalid = ~np.isfinite(pose).all(axis=-1)
        points[~invalid, :3] = pose[~invalid]
        points[invalid, 3] = -1
        frames.append((points, np.zeros((0, 0))))
    writer.add_frames(frames)
    with warnings.catch_warnings(), open(path, "wb") as handle:
        warnings.simplefilter("ignore")  # the writer warns "No analog data found"
        writer.write(handle)


def write_boxes_csv(path: Path, boxes: np.ndarray) -> None:
    """Person boxes x1, y1, x2, y2 (frame pixels) after a header row, one row per video frame; a NaN box is an
    empty row (no person found in that frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["" if np.isnan(box).any() else ",".join(f"{v:.4f}" for v in box) for box in np.asarray(boxes)]
    path.write_text("\n".join(["x1,y1,x2,y2", *rows]) + "\n")


# ---------------------------------------------------------------------------------------------------
# ASPset-510: the demo dataset
# ---------------------------------------------------------------------------------------------------
_ASPSET_SUBJECTS = {"train": ("0a3f", "1b7c", "2d9e"), "val": ("3e12",), "test": ("4c55", "5f80")}
_ASPSET_FRAME = (384, 216)  # a tenth of the real 3840 x 2160
_ASPSET_FOCAL = 3900.0 * _ASPSET_FRAME[0] / 3840
# clips per subject and video frames per clip: 6 sampled frames (every 5th) per view, so 3 views give 108
# training and 36 validation examples, and test clips (one view each) 24
_ASPSET_SIZES = {"demo": (2, 30), "tiny": (1, 1)}
_ASPSET_SPREAD_RAD = (0.45, 0.75)  # azimuth between neighbouring cameras of the left-mid-right arc


def _aspset_rig(rng: np.random.Generator) -> dict[str, Camera]:
    """Left, mid and right on an arc in front of the capture area, each looking at its centre, no distortion
    (ASPset's calibration has none). Seen from the mid camera, a larger azimuth lies further right."""
    mid = rng.uniform(0, 2 * np.pi)
    rig = {}
    for name, side in zip(aspset.CAMERAS, (-1, 0, 1)):
        azimuth = mid + side * rng.uniform(*_ASPSET_SPREAD_RAD)
        distance = rng.uniform(5000, 5800)
        position = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), rng.uniform(1200, 1700)])
        K, _ = random_lens(rng, _ASPSET_FRAME, _ASPSET_FOCAL)
        rig[name] = look_at(K, np.zeros(5), position, np.array([0.0, 0.0, 1000.0]) + rng.normal(0, 100, size=3),
                            roll=rng.normal(0, 0.02))
    return rig


def aspset_world(rig: dict[str, Camera]) -> Camera:
    """The session's world frame as a camera: ASPset's world is its left camera's frame (mm)."""
    return rig[aspset.CAMERAS[0]]


def aspset_takes(job: Job) -> list[Take]:
    """The clips ``write_demo_aspset_17`` writes: per subject a session (rig, scene); test clips have one view."""
    clips, rows = _ASPSET_SIZES[job.size]
    takes = []
    for split, subjects in _ASPSET_SUBJECTS.items():
        for subject in take(subjects, job.size):
            rig = _aspset_rig(job.rng(subject, "rig"))
            body = Body(Subject.random(job.seed, job.name, subject))
            scene = Scene.random(job.seed, job.name, subject)
            for clip in (f"{n:04d}" for n in range(1, clips + 1)):
                rng = job.rng(subject, clip)
                frames = _aspset_clip_motion(rng, job.seed, job.name, subject, clip, np.arange(rows)).frames(body)
                views = (str(rng.choice(aspset.CAMERAS)),) if split == "test" else aspset.CAMERAS
                takes.append(Take(subject, clip, split, body, frames, rig, views, scene, aspset.DEFAULT_FRAME_STEP))
    return takes


def _aspset_clip_motion(rng, seed: int, dataset: str, subject: str, clip: str, rows) -> Motion:
    """The clip's motion at the given video frames; its style and start are the first draws of its stream ``rng``."""
    style = styles(rng, 1)[0]
    times = rng.uniform(0, 30) + np.asarray(rows) / aspset.FPS
    return generate_motion(style, times, seed, dataset, subject, clip, radius=600.0)


def aspset_clip_motion(seed: int, dataset: str, subject: str, clip: str, rows) -> Motion:
    """The motion of ``subject``'s clip (``0001``, ...) at the given video frames."""
    return _aspset_clip_motion(rng_for(seed, dataset, subject, clip), seed, dataset, subject, clip, rows)


def aspset_session_world(seed: int, dataset: str, subject: str) -> Camera:
    """``aspset_world`` of ``subject``'s session."""
    return aspset_world(_aspset_rig(rng_for(seed, dataset, subject, "rig")))


def write_demo_aspset_17(job: Job) -> int:
    """ASPset-510's layout: ``splits.csv`` and, under ``trainval/`` or ``test/``, ``cameras/<subj>/<subj>-<cam>
    .json``, ``joints_3d/<subj>/<subj>-<clip>.c3d``, ``boxes/<subj>/<subj>-<clip>-<cam>.csv`` and ``frames/
    <subj>/<subj>-<clip>-<cam>/%06d.jpg``. Returns the number of images."""
    takes = aspset_takes(job)
    write_splits_csv(job.out / "splits.csv", [
        (t.subject, t.name, t.split, aspset.ALL_CAMERAS if t.views == aspset.CAMERAS else t.views[0]) for t in takes])
    backdrops = {}
    count = 0
    for t in takes:
        split_dir = job.out / aspset.SPLIT_FOLDERS[t.split]
        world = aspset_world(t.rig)
        # the release has every camera of a session, whichever views its clips have
        if not (split_dir / "cameras" / t.subject).is_dir():
            for c, camera in t.rig.items():
                write_camera_json(split_dir / "cameras" / t.subject / f"{t.subject}-{c}.json",
                                  np.concatenate([camera.K, np.zeros((3, 1))], axis=1),
                                  camera.extrinsic_matrix @ np.linalg.inv(world.extrinsic_matrix))
        write_c3d(split_dir / "joints_3d" / t.subject / f"{t.subject}-{t.name}.c3d",
                  world.world_to_camera(t.body.joints(aspset.SKELETON, t.frames)))
        figures = figures_of(t.body, t.frames)
        for c in t.views:
            camera, stem = t.rig[c], f"{t.subject}-{t.name}-{c}"
            boxes = np.array([figure_box(camera, figure) for figure in figures])
            write_boxes_csv(split_dir / "boxes" / t.subject / f"{stem}.csv",
                            np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1))
            if (t.subject, c) not in backdrops:
                backdrops[t.subject, c] = render_people(camera, _ASPSET_FRAME, [], t.scene)
            rng = job.rng(t.subject, t.name, c)
            for row in t.rendered_rows():
                image = _frame(job, rng, camera, _ASPSET_FRAME, backdrops[t.subject, c], figures[row], t.scene)
                write_jpeg(split_dir / "frames" / t.subject / stem / aspset.FRAME_NAME.format(row), image)
                count += 1
    return count
