"""Sixteen more demo datasets, one per further skeleton format, all in one generic raw layout.

Real datasets of these formats were captured and labelled differently: studio rings of calibrated cameras
with marker-based labels that drop out now and then, a single Kinect, a game's or a phone's moving camera,
crowds and furniture hiding the person, frames from 320x240 to 4K. ``FORMAT_DATASETS`` gives each demo
dataset such a profile; ``write_format_dataset`` writes any of them in the layout
``docs/raw_layouts.md#demo_format`` (read by ``assets/converters/demo_format.py``). Deterministic as the
rest of the demo world: every random stream is keyed by (seed, dataset, names).
"""

from dataclasses import dataclass

import numpy as np

from assets.cameras import Camera
from assets.skeletons import get_skeleton

from .body import Body, Subject
from .motion import STYLES, Motion, generate_motion
from .render import Scene, figure_box
from .rigs import crop_around, handheld_cameras, ring_rig
from .seeding import rng_for
from .writing import Job, figures_of, render, save_npy, stored_box, take, write_jpeg, write_json


@dataclass(frozen=True)
class StaticRig:
    """Calibrated cameras standing around the capture area, all aimed at its centre; one rig per dataset."""

    num_cameras: int
    distance_mm: tuple[float, float]
    height_mm: tuple[float, float]

    moving = False


@dataclass(frozen=True)
class HandheldRig:
    """One camera carried around the person while filming, a new pose every frame; one per sequence."""

    num_cameras = 1
    moving = True


@dataclass(frozen=True)
class FormatDataset:
    """How one demo dataset was captured and labelled, after the real datasets of its skeleton format."""

    skeleton: str
    rig: StaticRig | HandheldRig
    frame_size: tuple[int, int]  # (W, H) of the original frames
    focal_px: float
    occlusion_rate: float  # share of crops with occluders painted over the person
    # the motions performed (``motion.STYLES``). A tiny world keeps only the first (``writing.take``), so it
    # must be an upright one: one bent-over frame seen by two cameras is a third of a tiny dataset, more
    # than the vertical-axis store check allows
    styles: tuple[str, ...]
    unlabelled_rate: float  # share of joints without a label (marker dropouts, joints the tracker lost)
    labels: str = "3d"  # "3d": world poses; "2d": image coordinates and visibility only


def dataset_name(skeleton: str) -> str:
    """``demo_<format>``, the '+' of a format name (smpl+head_30) made safe for file and partition names."""
    return f"demo_{skeleton.replace('+', '_')}"


FORMAT_DATASETS: dict[str, FormatDataset] = {dataset_name(spec.skeleton): spec for spec in (
    # Kinect v2 recordings: one sensor in front of the person, the tracker loses joints now and then
    FormatDataset(
        "kinectv2_25", StaticRig(1, distance_mm=(2800, 3600), height_mm=(700, 1100)),
        frame_size=(1920, 1080), focal_px=1060.0, styles=("wave", "gesture", "stretch", "squat", "bend"),
        occlusion_rate=0.15, unlabelled_rate=0.05),
    # MPI-INF-3DHP test set: a single camera, studio and outdoor activities, markerless labels
    FormatDataset(
        "mpi_inf_3dhp_17", StaticRig(1, distance_mm=(3000, 4000), height_mm=(900, 1500)),
        frame_size=(2048, 2048), focal_px=1500.0, styles=("walk", "stretch", "squat", "bend", "gesture", "turn"),
        occlusion_rate=0.10, unlabelled_rate=0.0),
    # RICH-like: SMPL-X fits in scenes with furniture, a ring of high-resolution cameras
    FormatDataset(
        "smplx_42", StaticRig(4, distance_mm=(4500, 5800), height_mm=(1000, 1800)),
        frame_size=(4112, 3008), focal_px=4200.0, styles=("walk", "bend", "squat", "gesture", "stretch"),
        occlusion_rate=0.20, unlabelled_rate=0.0),
    # HSPACE: rendered crowds filmed by a moving virtual camera
    FormatDataset(
        "ghum_35", HandheldRig(),
        frame_size=(1280, 720), focal_px=900.0, styles=STYLES,
        occlusion_rate=0.30, unlabelled_rate=0.0),
    # SAIL-VOS: a game's moving camera, people often hidden behind others and objects
    FormatDataset(
        "sailvos_26", HandheldRig(),
        frame_size=(1280, 800), focal_px=1000.0, styles=("walk", "turn", "gesture", "wave"),
        occlusion_rate=0.35, unlabelled_rate=0.0),
    # GPA: a few cameras around boxes, chairs and stairs the person climbs and leans on
    FormatDataset(
        "gpa_34", StaticRig(3, distance_mm=(3500, 4500), height_mm=(1000, 2000)),
        frame_size=(1920, 1080), focal_px=1150.0, styles=("walk", "squat", "bend", "stretch", "turn"),
        occlusion_rate=0.30, unlabelled_rate=0.02),
    # BML-MoVi: two small computer-vision cameras, 87 markers of which some are hidden in every frame
    FormatDataset(
        "bml_movi_87", StaticRig(2, distance_mm=(4500, 5500), height_mm=(1200, 1700)),
        frame_size=(800, 600), focal_px=650.0, styles=STYLES,
        occlusion_rate=0.05, unlabelled_rate=0.10),
    # MADS: martial arts, dance and sports in front of a stereo pair
    FormatDataset(
        "mads_19", StaticRig(2, distance_mm=(3500, 4500), height_mm=(1300, 1700)),
        frame_size=(1024, 768), focal_px=900.0, styles=("turn", "stretch", "squat", "wave", "gesture"),
        occlusion_rate=0.05, unlabelled_rate=0.03),
    # Berkeley MHAD: clusters of small cameras around a marker-based capture
    FormatDataset(
        "berkeley_mhad_43", StaticRig(4, distance_mm=(3500, 4500), height_mm=(1000, 2200)),
        frame_size=(640, 480), focal_px=520.0, styles=("wave", "bend", "squat", "stretch", "gesture"),
        occlusion_rate=0.05, unlabelled_rate=0.05),
    # TotalCapture: a large studio ring of HD cameras, Vicon labels
    FormatDataset(
        "total_capture_21", StaticRig(4, distance_mm=(4800, 5800), height_mm=(1500, 2500)),
        frame_size=(1920, 1080), focal_px=1300.0, styles=("walk", "stretch", "gesture", "turn", "wave"),
        occlusion_rate=0.05, unlabelled_rate=0.01),
    # JTA: a street camera mounted high above a crowd
    FormatDataset(
        "jta_22", StaticRig(1, distance_mm=(5000, 5800), height_mm=(2800, 3800)),
        frame_size=(1920, 1080), focal_px=1400.0, styles=("walk", "turn", "gesture"),
        occlusion_rate=0.45, unlabelled_rate=0.0),
    # IKEA-ASM: furniture assembly filmed by three Kinects, labelled in 2D only, hidden joints left out
    FormatDataset(
        "ikea_asm_17", StaticRig(3, distance_mm=(2800, 3500), height_mm=(1000, 2200)),
        frame_size=(1920, 1080), focal_px=1060.0, styles=("gesture", "bend", "squat", "turn"),
        occlusion_rate=0.35, unlabelled_rate=0.10, labels="2d"),
    # HUMAN4D: four RGB-D sensors around a Vicon capture
    FormatDataset(
        "human4d_32", StaticRig(4, distance_mm=(3300, 4000), height_mm=(1200, 2000)),
        frame_size=(1280, 720), focal_px=920.0, styles=("wave", "gesture", "stretch", "squat", "bend", "turn"),
        occlusion_rate=0.10, unlabelled_rate=0.03),
    # 3DPeople: rendered people seen by four small virtual cameras
    FormatDataset(
        "3dpeople_29", StaticRig(4, distance_mm=(3500, 4500), height_mm=(1000, 1600)),
        frame_size=(640, 480), focal_px=560.0, styles=STYLES,
        occlusion_rate=0.05, unlabelled_rate=0.0),
    # UMPM: several people interacting in a four-camera studio, so others get in the way
    FormatDataset(
        "umpm_15", StaticRig(4, distance_mm=(4000, 5200), height_mm=(1500, 2200)),
        frame_size=(644, 484), focal_px=600.0, styles=("walk", "turn", "gesture", "wave"),
        occlusion_rate=0.25, unlabelled_rate=0.05),
    # SURREAL-like: rendered people seen by one low-resolution virtual camera
    FormatDataset(
        "smpl+head_30", StaticRig(1, distance_mm=(5000, 5800), height_mm=(700, 1300)),
        frame_size=(320, 240), focal_px=600.0, styles=("wave", "bend", "squat", "turn", "stretch", "gesture"),
        occlusion_rate=0.05, unlabelled_rate=0.0),
)}

_SUBJECTS = {"train": ("S1", "S2", "S3", "S4", "S5", "S6", "S7"), "val": ("S8",), "test": ("S9", "S10")}
_CROPS_PER_SUBJECT = {"demo": 20, "tiny": 2}
_SEQUENCES_PER_SUBJECT = {"demo": 2, "tiny": 1}
# a tiny world keeps the front of a rig: still several views to convert, but few images
_TINY_MAX_CAMERAS = 2
# frames far apart in time: few frames per sequence then still span many poses
_FRAME_INTERVAL_S = 0.3
_HANDHELD_MOTION_RADIUS_MM = 1500.0  # the camera follows the person, who may roam further
_LABEL_NOISE_PX = 1.0  # 2D annotators' click error


def write_format_dataset(job: Job) -> int:
    """Write the dataset ``job.name`` of ``FORMAT_DATASETS`` to ``job.out``; returns the number of images."""
    spec = FORMAT_DATASETS[job.name]
    skeleton = get_skeleton(spec.skeleton)
    subjects = {subject: split for split, names in _SUBJECTS.items() for subject in take(names, job.size)}
    write_json(job.out / "dataset.json", {
        "skeleton": skeleton.name, "joint_names": list(skeleton.joint_names), "labels": spec.labels,
        "subjects": subjects,
    })
    sequences = _SEQUENCES_PER_SUBJECT[job.size]
    frames_per_subject = max(sequences, round(_CROPS_PER_SUBJECT[job.size] / _num_cameras(spec, job.size)))
    count = 0
    for subject in subjects:
        rng = job.rng(subject, "styles")
        styles = [str(s) for s in rng.choice(take(spec.styles, job.size), size=sequences, replace=False)]
        lengths = [len(part) for part in np.array_split(np.arange(frames_per_subject), sequences)]
        for style, num_frames in zip(styles, lengths):
            count += _write_sequence(job, spec, subject, style, num_frames)
    return count


def _write_sequence(job: Job, spec: FormatDataset, subject: str, style: str, num_frames: int) -> int:
    """One subject performing one motion style, seen by every camera of the rig; named after the style."""
    folder = job.out / subject / style
    rng = job.rng(subject, style)
    body = Body(Subject.random(job.seed, job.name, subject))
    motion = _sequence_motion(rng, job.seed, job.name, subject, style, np.arange(num_frames))
    frames = motion.frames(body)
    world = body.joints(spec.skeleton, frames)
    figures = figures_of(body, frames)
    views = _camera_views(job, spec, rng, motion.times, frames.origins[:, 0, :2])
    # a studio keeps its backdrop; a moving camera films each sequence somewhere else
    scene = Scene.random(job.seed, job.name, *((subject, style) if spec.rig.moving else ()))

    folder.mkdir(parents=True)
    write_json(folder / "cameras.json", {"cameras": [
        _camera_entry(name, cameras, spec) for name, cameras in views.items()]})
    if spec.labels == "3d":
        unlabelled = rng.random(world.shape[:2]) < spec.unlabelled_rate
        save_npy(folder / "poses3d.npy", np.where(unlabelled[..., None], np.nan, world).astype(np.float32))
    count = 0
    for name, cameras in views.items():
        view_rng = job.rng(subject, style, name)
        if spec.labels == "2d":
            save_npy(folder / f"poses2d.{name}.npy", _labels_2d(cameras, world, spec, view_rng))
        boxes = np.array([stored_box(crop_around(figure_box(c, fig), view_rng)) for c, fig in zip(cameras, figures)])
        save_npy(folder / f"crops.{name}.npy", boxes.astype(np.float32))
        for f, (camera, figure, box) in enumerate(zip(cameras, figures, boxes)):
            image = render(job, view_rng, camera, spec.frame_size, box, figure, scene, spec.occlusion_rate)
            write_jpeg(folder / "images" / name / f"{f:06d}.jpg", image)
            count += 1
    return count


def _sequence_motion(rng, seed: int, dataset: str, subject: str, style: str, frames) -> Motion:
    """The sequence's motion at the given frames; its start is the first draw of its stream ``rng``."""
    times = rng.uniform(0, 30) + _FRAME_INTERVAL_S * np.asarray(frames)
    radius = {"radius": _HANDHELD_MOTION_RADIUS_MM} if FORMAT_DATASETS[dataset].rig.moving else {}
    return generate_motion(style, times, seed, dataset, subject, **radius)


def sequence_motion(seed: int, dataset: str, subject: str, style: str, frames) -> Motion:
    """The motion of ``subject``'s sequence ``style`` (its folder name) at the given frames."""
    return _sequence_motion(rng_for(seed, dataset, subject, style), seed, dataset, subject, style, frames)


def _num_cameras(spec: FormatDataset, size: str) -> int:
    return min(spec.rig.num_cameras, _TINY_MAX_CAMERAS) if size == "tiny" else spec.rig.num_cameras


def _camera_views(job: Job, spec: FormatDataset, rng, times, subject_xy) -> dict[str, list[Camera]]:
    """Camera name -> its camera in every frame of the sequence."""
    if spec.rig.moving:
        return {"handheld": handheld_cameras(rng, times, subject_xy, spec.frame_size, spec.focal_px)}
    rig = ring_rig(job.rng("rig"), spec.rig.num_cameras, spec.frame_size, spec.focal_px,
                   distance=spec.rig.distance_mm, height=spec.rig.height_mm)
    kept = rig[:_num_cameras(spec, job.size)]
    return {f"cam{k}": [camera] * len(times) for k, camera in enumerate(kept)}


def _camera_entry(name: str, cameras: list[Camera], spec: FormatDataset) -> dict:
    def calibration(camera: Camera) -> dict:
        return {"K": camera.K.tolist(), "dist": camera.dist.tolist(), "R": camera.R.tolist(), "t": camera.t.tolist()}

    entry = {"id": name, "image_size": [*spec.frame_size]}
    if spec.rig.moving:
        return {**entry, "frames": [calibration(camera) for camera in cameras]}
    return {**entry, **calibration(cameras[0])}


def _labels_2d(cameras: list[Camera], world: np.ndarray, spec: FormatDataset, rng) -> np.ndarray:
    """float32 [F, J, 3]: u, v (frame pixels, annotator noise) and 1, or 0, 0, 0 where not labelled."""
    uv = np.stack([camera.world_to_image(joints) for camera, joints in zip(cameras, world)])
    uv += rng.normal(0.0, _LABEL_NOISE_PX, size=uv.shape)
    width, height = spec.frame_size
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0) & (uv[..., 1] < height)
    labelled = inside & (rng.random(uv.shape[:2]) >= spec.unlabelled_rate)
    return np.concatenate([np.where(labelled[..., None], uv, 0.0), labelled[..., None]], axis=-1).astype(np.float32)
