"""The demo world: a small dataset for every skeleton format, written in the raw layouts of
``docs/raw_layouts.md`` (five dataset-like ones, one generic layout for sixteen more formats) or, where the
project reads the real release, in that release's layout (``release_layouts.py``).

Each dataset has its own subjects (bone lengths), motions, cameras, backdrops and labelling gaps, all drawn
from one body model, so the same person could be read off in any skeleton format. Generation is
deterministic: every random stream is keyed by (seed, dataset, names) and every file is written without
timestamps, so the same seed and size give byte-identical files.
"""

import shutil
import time
from pathlib import Path

import numpy as np

from assets.cameras import Camera
from assets.skeletons import get_skeleton

from .body import Body, Subject
from .format_datasets import FORMAT_DATASETS, write_format_dataset
from .motion import Motion, generate_motion
from .render import Scene, figure_box
from .release_layouts import write_demo_aspset_17, write_demo_h36m_25
from .rigs import aimed_beside, crop_around, cut_crop, handheld_cameras, look_at, random_lens, ring_rig
from .seeding import rng_for
from .writing import (Job, figures_of, render, save_npy, save_npz, stored_box, style_named, styles, take,
                      write_jpeg, write_json)

# every dataset the world writes -> the converter that reads it (params.yaml's `converter:`)
READERS = {
    "demo_h36m": "demo_h36m", "demo_3dhp": "demo_3dhp", "demo_smpl": "demo_smpl",
    "demo_multiview2d": "demo_multiview2d", "demo_lsp2d": "demo_lsp2d",
    "demo_h36m_25": "h36m", "demo_aspset_17": "aspset",
    **dict.fromkeys(FORMAT_DATASETS, "demo_format"),
}
DATASETS = tuple(READERS)
SIZES = ("demo", "tiny")

_ACTION_NAMES = {
    "walk": "Walking", "wave": "Greeting", "bend": "Bending", "squat": "Squatting", "turn": "Turning",
    "stretch": "Stretching", "gesture": "Directions",
}


# ---------------------------------------------------------------------------------------------------
# demo_h36m
# ---------------------------------------------------------------------------------------------------
_H36M_SPLITS = {"train": ("S1", "S5", "S6"), "val": ("S7",), "test": ("S9",)}
_H36M_CAMERAS = ("54138969", "55011271", "58860488", "60457274")
_H36M_FRAME = (1000, 1000)
# frames far apart in time: a training set of few frames then spans many poses and headings, as the
# reference's subsampled video does (H36M every 64th frame for evaluation)
_H36M_FRAME_INTERVAL_S = 0.4


def h36m_motion(seed: int, dataset: str, subject: str, action: str, frames) -> Motion:
    """The motion of ``subject``'s ``action`` (its pose file's stem) at the given frames (the file's rows)."""
    style = style_named(_ACTION_NAMES, action, dataset, "action")
    start = rng_for(seed, dataset, subject, action, "start").uniform(0, 30)
    return generate_motion(style, start + _H36M_FRAME_INTERVAL_S * np.asarray(frames), seed, dataset, subject)


def _demo_h36m(job: Job) -> int:
    actions, num_frames = {"demo": (4, 12), "tiny": (1, 2)}[job.size]
    cameras = ring_rig(job.rng("rig"), 4, _H36M_FRAME, 1145.0, distance=(4500, 5200), height=(1400, 1800))
    entries = [
        {
            "id": camera_id, "K": c.K.tolist(), "dist": c.dist.tolist(), "R": c.R.tolist(), "t": c.t.tolist(),
            "image_size": [*_H36M_FRAME],
        }
        for camera_id, c in zip(_H36M_CAMERAS, cameras)
    ]
    write_json(job.out / "calibration.json", {"cameras": entries})
    scene = Scene.random(job.seed, job.name)
    count = 0
    for subjects in _H36M_SPLITS.values():
        for subject in take(subjects, job.size):
            body = Body(Subject.random(job.seed, job.name, subject))
            for style in styles(job.rng(subject, "actions"), actions):
                action = _ACTION_NAMES[style]
                frames = h36m_motion(job.seed, job.name, subject, action, np.arange(num_frames)).frames(body)
                poses = body.joints("h36m_17", frames).astype(np.float32)
                save_npy(job.out / subject / "poses3d" / f"{action}.npy", poses)
                figures = figures_of(body, frames)
                for cid, camera in zip(_H36M_CAMERAS, cameras):
                    rng = job.rng(subject, action, cid)
                    boxes = np.array([stored_box(crop_around(figure_box(camera, fig), rng)) for fig in figures])
                    save_npy(job.out / subject / "crops" / f"{action}.{cid}.npy", boxes.astype(np.float32))
                    for f, (fig, box) in enumerate(zip(figures, boxes)):
                        image = render(job, rng, camera, _H36M_FRAME, box, fig, scene, occlusion_rate=0.1)
                        write_jpeg(job.out / subject / "images" / f"{action}.{cid}" / f"{f:06d}.jpg", image)
                        count += 1
    return count


# ---------------------------------------------------------------------------------------------------
# demo_3dhp
# ---------------------------------------------------------------------------------------------------
_3DHP_SPLITS = {"train": ("S1", "S2"), "val": ("S3",), "test": ("S4",)}
_3DHP_CAMERAS = (0, 1, 2, 4)  # a subset of the studio's cameras, as 3DHP training setups use
_3DHP_OFF_AIM_CAMERA = 4  # aimed beside the subject, who then leaves the frame partly now and then
_3DHP_FRAME = (2048, 2048)
_3DHP_FRAME_STEP, _3DHP_FPS = 20, 25.0
_3DHP_CUT_RATE = 0.05  # crops that cut the person on top of the off-aim camera's frame truncation
_3DHP_UNLABELLED_RATE = 0.05


def _calibration_block(index: int, camera: Camera, frame_size) -> str:
    def numbers(values):
        return " ".join(repr(float(v)) for v in np.ravel(values))

    intrinsic = np.eye(4)
    intrinsic[:3, :3] = camera.K
    return (
        f"name          {index}\n"
        f"  size        {frame_size[0]} {frame_size[1]}\n"
        f"  intrinsic   {numbers(intrinsic)}\n"
        f"  extrinsic   {numbers(camera.extrinsic_matrix)}\n"
        f"  distortion  {numbers(camera.dist)}\n"
    )


def _3dhp_rig(rng: np.random.Generator) -> list[Camera]:
    """A sequence's cameras, the first draws of its stream ``rng``."""
    cameras = ring_rig(rng, len(_3DHP_CAMERAS), _3DHP_FRAME, 1500.0, (3500, 4500), height=(800, 2200))
    off_aim = _3DHP_CAMERAS.index(_3DHP_OFF_AIM_CAMERA)
    beside = rng.choice([-1, 1]) * rng.uniform(900, 1300)
    cameras[off_aim] = aimed_beside(cameras[off_aim], (0.0, 0.0, 1000.0), beside)
    return cameras


def _3dhp_motion(rng: np.random.Generator, seed: int, dataset: str, subject: str, sequence: str, frame_numbers) -> Motion:
    """The sequence's motion at the given video frames; its style and start are the draws of its stream
    ``rng`` after the rig's (``_3dhp_rig``)."""
    style = styles(rng, 1)[0]
    times = rng.uniform(0, 30) + np.asarray(frame_numbers) / _3DHP_FPS
    return generate_motion(style, times, seed, dataset, subject, sequence)


def mpi_3dhp_motion(seed: int, dataset: str, subject: str, sequence: str, frame_numbers) -> Motion:
    """The motion of ``subject``'s sequence (``Seq<m>``) at the given video frames."""
    rng = rng_for(seed, dataset, subject, sequence)
    _3dhp_rig(rng)
    return _3dhp_motion(rng, seed, dataset, subject, sequence, frame_numbers)


def _demo_3dhp(job: Job) -> int:
    sequences, num_frames = {"demo": (3, 16), "tiny": (1, 2)}[job.size]
    joint_count = get_skeleton("mpi_inf_3dhp_28").num_joints
    count = 0
    for subjects in _3DHP_SPLITS.values():
        for subject in take(subjects, job.size):
            body = Body(Subject.random(job.seed, job.name, subject))
            for seq in (f"Seq{m}" for m in range(1, sequences + 1)):
                folder = job.out / subject / seq
                folder.mkdir(parents=True)
                rng = job.rng(subject, seq)
                cameras = _3dhp_rig(rng)
                (folder / "camera.calibration").write_text(
                    "".join(_calibration_block(c, cam, _3DHP_FRAME) for c, cam in zip(_3DHP_CAMERAS, cameras))
                )
                frame_numbers = _3DHP_FRAME_STEP * np.arange(num_frames)
                frames = _3dhp_motion(rng, job.seed, job.name, subject, seq, frame_numbers).frames(body)
                world = body.joints("mpi_inf_3dhp_28", frames)
                figures = figures_of(body, frames)
                scene = Scene.random(job.seed, job.name, subject, seq)

                annot3 = np.stack([cam.world_to_camera(world) for cam in cameras]).astype(np.float32)
                annot2 = np.stack([cam.world_to_image(world) for cam in cameras]).astype(np.float32)
                unlabelled = rng.random((len(cameras), num_frames, joint_count)) < _3DHP_UNLABELLED_RATE
                annot3[unlabelled] = np.nan
                annot2[unlabelled] = np.nan
                crops = np.zeros((len(cameras), num_frames, 4), dtype=np.float32)
                for c, (index, camera) in enumerate(zip(_3DHP_CAMERAS, cameras)):
                    for f, frame in enumerate(frame_numbers):
                        person = figure_box(camera, figures[f])
                        box = cut_crop(person, rng) if rng.random() < _3DHP_CUT_RATE else crop_around(person, rng)
                        crops[c, f] = box = stored_box(box)
                        image = render(job, rng, camera, _3DHP_FRAME, box, figures[f], scene, occlusion_rate=0.25)
                        write_jpeg(folder / "imageSequence" / f"video_{index}" / f"frame_{frame:06d}.jpg", image)
                        count += 1
                save_npz(
                    folder / "annot.npz",
                    cameras=np.array(_3DHP_CAMERAS, dtype=np.int64),
                    frames=frame_numbers.astype(np.int64),
                    annot3=annot3,
                    annot2=annot2,
                )
                np.save(folder / "crops.npy", crops)
    return count


# ---------------------------------------------------------------------------------------------------
# demo_smpl
# ---------------------------------------------------------------------------------------------------
_SMPL_FRAME = (1080, 1920)  # portrait phone video
_SMPL_DT = 6 / 30.0  # every sixth frame of a 30 fps video
_SMPL_PLACES = ("courtyard", "downtown", "outdoors", "flat", "office", "park")


def _smpl_sequence(rng: np.random.Generator, seed: int, dataset: str, index: int, frames) -> tuple[str, Motion]:
    """(name, motion at the given frames) of sequence ``index``: the first draws of its stream ``rng``."""
    style = styles(rng, 1)[0]
    name = f"{_SMPL_PLACES[int(rng.integers(len(_SMPL_PLACES)))]}_{style}_{index:02d}"
    times = rng.uniform(0, 30) + _SMPL_DT * np.asarray(frames)
    return name, generate_motion(style, times, seed, dataset, name, radius=1500.0)


def smpl_motion(seed: int, dataset: str, name: str, frames) -> Motion:
    """The motion of sequence ``name`` (``<place>_<style>_<index>``) at the given frames."""
    index = name.rpartition("_")[2]
    if index.isdigit():
        drawn, motion = _smpl_sequence(rng_for(seed, dataset, "sequence", int(index)), seed, dataset, int(index), frames)
        if drawn == name:
            return motion
    raise ValueError(f"{dataset} (world seed {seed}) has no sequence {name!r}")


def _demo_smpl(job: Job) -> int:
    per_split, num_frames = {
        "demo": ({"train": 9, "validation": 2, "test": 2}, 45),
        "tiny": ({"train": 1, "validation": 1, "test": 1}, 2),
    }[job.size]
    count = 0
    index = 0
    for split, sequences in per_split.items():
        (job.out / "sequenceFiles" / split).mkdir(parents=True)
        for _ in range(sequences):
            rng = job.rng("sequence", index)
            name, motion = _smpl_sequence(rng, job.seed, job.name, index, np.arange(num_frames))
            index += 1
            body = Body(Subject.random(job.seed, job.name, name))
            frames = motion.frames(body)
            cameras = handheld_cameras(rng, motion.times, frames.origins[:, 0, :2], _SMPL_FRAME, 1960.0)
            scene = Scene.random(job.seed, job.name, name)
            figures = figures_of(body, frames)
            boxes = np.zeros((num_frames, 4), dtype=np.float32)
            for f, (camera, fig) in enumerate(zip(cameras, figures)):
                boxes[f] = box = stored_box(crop_around(figure_box(camera, fig), rng))
                image = render(job, rng, camera, _SMPL_FRAME, box, fig, scene, occlusion_rate=0.2)
                write_jpeg(job.out / "imageFiles" / name / f"image_{f:05d}.jpg", image)
                count += 1
            poses = np.stack([cam.extrinsic_matrix for cam in cameras])
            poses[:, :3, 3] /= 1000.0  # metres
            save_npz(
                job.out / "sequenceFiles" / split / f"{name}.npz",
                jointPositions=(body.joints("smpl_24", frames) / 1000.0).reshape(num_frames, -1),
                cam_poses=poses,
                cam_intrinsics=cameras[0].K,
                cam_distortion=cameras[0].dist,
                image_size=np.array(_SMPL_FRAME, dtype=np.int64),
                crop_boxes=boxes,
            )
    return count


# ---------------------------------------------------------------------------------------------------
# demo_multiview2d
# ---------------------------------------------------------------------------------------------------
_MV_FRAME = (1920, 1080)
_MV_MISS_RATE = 0.05
_MV_OUTLIER_RATE = 0.10
_MV_OUTLIER_PX = (40.0, 200.0)
_MV_SWAP_MIN_PX = 30.0


def simulate_detections(truth_uv: np.ndarray, frame_size, mirror: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulated 2D detector output [F, J, 3] (u, v, confidence) for true projections ``truth_uv`` [F, J, 2].

    Inliers: Gaussian noise of a per-camera 2-4 px and confidence 0.5-0.98. Exactly 10% outliers (a
    left/right swap, or a jump of 40-200 px) with confidence 0.3-0.9, so confidence alone cannot reject
    them. Exactly 5% misses, plus every joint outside the frame: (0, 0, 0).
    """
    num_frames, num_joints = truth_uv.shape[:2]
    sigma = rng.uniform(2.0, 4.0)
    uv = truth_uv + rng.normal(0.0, sigma, size=truth_uv.shape)
    confidence = rng.uniform(0.5, 0.98, size=(num_frames, num_joints))
    order = rng.permutation(num_frames * num_joints)
    n_miss = round(_MV_MISS_RATE * order.size)
    n_out = round(_MV_OUTLIER_RATE * order.size)
    for flat in order[n_miss:n_miss + n_out]:
        f, j = divmod(int(flat), num_joints)
        swapped = truth_uv[f, mirror[j]]
        if mirror[j] != j and np.linalg.norm(swapped - truth_uv[f, j]) >= _MV_SWAP_MIN_PX and rng.random() < 0.3:
            uv[f, j] = swapped + rng.normal(0.0, sigma, size=2)
        else:
            angle = rng.uniform(0, 2 * np.pi)
            uv[f, j] = truth_uv[f, j] + rng.uniform(*_MV_OUTLIER_PX) * np.array([np.cos(angle), np.sin(angle)])
        confidence[f, j] = rng.uniform(0.3, 0.9)
    missed = np.zeros(order.size, dtype=bool)
    missed[order[:n_miss]] = True
    missed = missed.reshape(num_frames, num_joints)
    w, h = frame_size
    missed |= (truth_uv[..., 0] < 0) | (truth_uv[..., 0] >= w) | (truth_uv[..., 1] < 0) | (truth_uv[..., 1] >= h)
    out = np.concatenate([uv, confidence[..., None]], axis=-1)
    out[missed] = 0.0
    return out


def _demo_multiview2d(job: Job) -> int:
    camera_counts, num_frames = {"demo": ((4, 3, 4, 3), 32), "tiny": ((4, 3), 2)}[job.size]
    skeleton = get_skeleton("coco_19")
    (job.out / "_evaluation_only").mkdir()
    count = 0
    for i, num_cameras in enumerate(camera_counts):
        rng = job.rng("sequence", i)
        style = styles(rng, 1)[0]
        sequence = f"1712{4 + i:02d}_{style}{i + 1}"
        names = [f"00_{k:02d}" for k in sorted(rng.choice(31, size=num_cameras, replace=False))]
        cameras = ring_rig(rng, num_cameras, _MV_FRAME, 1500.0, distance=(3000, 4500), height=(1200, 2400))
        entries = [
            {
                "name": n, "K": c.K.tolist(), "distCoef": c.dist.tolist(), "R": c.R.tolist(),
                "t": (c.t / 10.0).reshape(3, 1).tolist(),  # centimetres
                "resolution": [*_MV_FRAME],
            }
            for n, c in zip(names, cameras)
        ]
        write_json(job.out / f"calibration_{sequence}.json", {"cameras": entries})
        body = Body(Subject.random(job.seed, job.name, sequence))
        times = rng.uniform(0, 30) + 0.1 * np.arange(num_frames)
        frames = generate_motion(style, times, job.seed, job.name, sequence, radius=1000.0).frames(body)
        world = body.joints("coco_19", frames)
        np.save(job.out / "_evaluation_only" / f"{sequence}.npy", world.astype(np.float32))
        figures = figures_of(body, frames)
        scene = Scene.random(job.seed, job.name, sequence)
        (job.out / "detections" / sequence).mkdir(parents=True)
        for name, camera in zip(names, cameras):
            cam_rng = job.rng(sequence, name)
            detections = simulate_detections(camera.world_to_image(world), _MV_FRAME, skeleton.mirror_indices, cam_rng)
            entries = []
            for f, fig in enumerate(figures):
                box = stored_box(crop_around(figure_box(camera, fig), cam_rng))
                image = render(job, cam_rng, camera, _MV_FRAME, box, fig, scene, occlusion_rate=0.15)
                write_jpeg(job.out / "images" / sequence / name / f"{f:06d}.jpg", image)
                count += 1
                entries.append({"frame": f, "crop_box": [float(v) for v in box], "keypoints": detections[f].tolist()})
            write_json(job.out / "detections" / sequence / f"{name}.json", {"skeleton": "coco_19", "frames": entries})
    return count


# ---------------------------------------------------------------------------------------------------
# demo_lsp2d
# ---------------------------------------------------------------------------------------------------
_LSP_FRAME = (1000, 1000)
_LSP_SIDE_PX = (100, 180)
_LSP_UNLABELLED_RATE = 0.05
_LSP_LABEL_NOISE_PX = 1.0


def _demo_lsp2d(job: Job) -> int:
    num_images = {"demo": 500, "tiny": 10}[job.size]
    joints = np.zeros((num_images, get_skeleton("lsp_14").num_joints, 3), dtype=np.float32)
    for i in range(num_images):
        rng = job.rng("image", i)
        body = Body(Subject.random(job.seed, job.name, i))
        style = styles(rng, 1)[0]
        frames = generate_motion(style, [rng.uniform(0, 30)], job.seed, job.name, i, radius=500.0).frames(body)
        figure = figures_of(body, frames)[0]
        root = frames.origins[0, 0]
        azimuth, distance = rng.uniform(0, 2 * np.pi), rng.uniform(2500, 5000)
        position = root + np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), 0.0])
        position[2] = rng.uniform(300, 2500)
        K, dist = random_lens(rng, _LSP_FRAME, rng.uniform(900, 1600))
        camera = look_at(K, dist, position, root + rng.normal(0, 80, size=3), roll=rng.normal(0, 0.08))
        width, height = (int(v) for v in rng.integers(_LSP_SIDE_PX[0], _LSP_SIDE_PX[1] + 1, size=2))
        box = stored_box(crop_around(figure_box(camera, figure), rng, scale=(1.1, 1.3), aspect=width / height))
        scene = Scene.random(job.seed, job.name, i, centre=root[:2])
        image = render(job, rng, camera, _LSP_FRAME, box, figure, scene, occlusion_rate=0.2, out_size=(width, height))
        write_jpeg(job.out / "images" / f"im{i:04d}.jpg", image)
        uv = camera.cropped(box, (width, height)).world_to_image(body.joints("lsp_14", frames)[0])
        uv += rng.normal(0.0, _LSP_LABEL_NOISE_PX, size=uv.shape)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        labelled = inside & (rng.random(len(uv)) >= _LSP_UNLABELLED_RATE)
        joints[i, :, :2] = np.where(labelled[:, None], uv, 0.0)
        joints[i, :, 2] = labelled
    np.save(job.out / "joints.npy", joints)
    return num_images


_GENERATORS = {
    "demo_h36m": _demo_h36m, "demo_3dhp": _demo_3dhp, "demo_smpl": _demo_smpl,
    "demo_multiview2d": _demo_multiview2d, "demo_lsp2d": _demo_lsp2d,
    "demo_h36m_25": write_demo_h36m_25, "demo_aspset_17": write_demo_aspset_17,
    **dict.fromkeys(FORMAT_DATASETS, write_format_dataset),
}


def generate_dataset(root, name: str, size: str = "demo", seed: int = 0, image_size: int = 128) -> tuple[Path, int]:
    """Write one dataset to ``<root>/<name>``, replacing any previous one; returns (folder, image count).

    The dataset is built in a hidden sibling folder and renamed into place when complete, so an
    interrupted run never leaves a half-written ``<root>/<name>``.
    """
    if name not in _GENERATORS:
        raise ValueError(f"unknown demo dataset {name!r}; known: {', '.join(DATASETS)}")
    if size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; known: {', '.join(SIZES)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    for stale in root.glob(f".{name}.tmp*"):
        shutil.rmtree(stale)
    temporary = root / f".{name}.tmp"
    temporary.mkdir()
    try:
        count = _GENERATORS[name](Job(name=name, out=temporary, size=size, seed=seed, image_size=image_size))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if final.exists():
        retired = root / f".{name}.tmp-old"
        final.rename(retired)
        temporary.rename(final)
        shutil.rmtree(retired)
    else:
        temporary.rename(final)
    return final, count


def generate_world(
    root="data/raw", size: str = "demo", seed: int = 0, datasets=None, image_size: int = 128, progress=None
) -> dict[str, Path]:
    """Write the demo datasets (all of ``DATASETS`` unless ``datasets`` names some) under ``root``.

    ``size``: "demo" (450 to 960 images for the five dataset-like layouts, about 200 for the others) or
    "tiny" (a few images per split, for tests).
    ``progress``: optional callable receiving one line per finished dataset.
    """
    names = DATASETS if datasets is None else tuple(datasets)
    written = {}
    for name in names:
        started = time.perf_counter()
        written[name], count = generate_dataset(root, name, size=size, seed=seed, image_size=image_size)
        if progress is not None:
            progress(f"{name}: {count} images in {time.perf_counter() - started:.1f} s")
    return written
