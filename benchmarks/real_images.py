"""Benchmark: our model on whole real frames next to BlazePose GHUM, against the triangulated pseudo-GT.

On the held-out frames (the test tail) of the real recordings ``pose2sim_demo`` and ``pose2sim_multi``,
every camera view's whole video frame goes through

  (a) ours:      ``estimator.detect_poses(frame, "blazepose_33", intrinsics=K, distortion=dist)`` (the
                 built-in person detector, virtual-camera crops, the demo's final model);
  (b) BlazePose: MediaPipe's BlazePose GHUM (person detector + full landmark model, run with LiteRT by
                 ``assets.real.blazepose_tflite``), its 3D world landmarks (metres, hip-centred);

and both are scored against the pseudo-GT (the recordings' multi-view triangulation, moved into each
original camera's frame) on the joints the formats share — all 33 of ``blazepose_33``, which our model
outputs too — wherever the pseudo-GT has them:

  * recall:   the share of pseudo-GT people (per view and frame) a method returns; a returned person is
              matched to a pseudo-GT person when its 2D joints lie on average within a quarter of that
              person's box size (one-to-one, best first);
  * MPJPE:    after aligning the hip midpoint (the format's root), mm, over matched people;
  * PA-MPJPE: after similarity Procrustes alignment, mm;
  * frames/s: whole frames per second on this machine's CPU, detection included.

The mean-pose floor of the test set (``evaluation.benchmark.mean_pose_baseline``, on the stored crops)
is printed beside them. Keep in mind that the pseudo-GT was triangulated from BlazePose's own 2D
landmarks, which favours BlazePose.

Needs the demo's stores and final model (``make demo`` first) and the cached Pose2Sim wheel (``make setup``).

Run:  .venv/bin/python benchmarks/real_images.py [--model data/models/final/model.pt] [--config params.yaml]
                                                 [--datasets pose2sim_demo,pose2sim_multi] [--max-frames N]
                                                 [--out data/benchmarks/real_images]
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from assets.converters.common import person_box
from assets.converters.pose2sim_demo import read_cameras
from assets.real.blazepose import SKELETON_NAME
from assets.real.cache import pose2sim_wheel, read_member
from assets.store import open_store
from evaluation.benchmark import mean_pose_baseline
from evaluation.metrics import mpjpe, pa_mpjpe
from orchestration.config import load_config

DATASETS = ("pose2sim_demo", "pose2sim_multi")
MATCH_DISTANCE = 0.25  # mean 2D joint distance, relative to the pseudo-GT person's larger box side
MIN_LABELLED_JOINTS = 8  # pseudo-GT people with fewer triangulated joints are not scored


def frame_offsets(manifest: dict) -> dict[str, dict[str, int]]:
    """{sequence: {camera: offset}} with global frame = video frame - offset: one set for the single-person
    recording, one per tracked person for the multi-person one (docs/pose2sim_multi.md)."""
    if "people" in manifest:
        return {person["sequence"]: person["frame_offsets"] for person in manifest["people"]}
    return {manifest["sequence"]: manifest["frame_offsets"]}


def test_people(config, dataset: str) -> tuple[dict, dict]:
    """Pseudo-GT people of the test split, in their original cameras: {(camera, video frame): [pose [33, 3]
    mm]}, and the raw manifest."""
    raw = config.datasets[dataset].raw
    manifest = json.loads((raw / "manifest.json").read_text())
    cameras = read_cameras(raw / "calibration" / "cameras.json")
    store = open_store(config.pseudo_gt_store_path(dataset))
    rows = store.split_indices("test")
    pose3d = store["pose3d"].get_orthogonal_selection((rows,)).astype(np.float64)
    extrinsics = store["extrinsics"].get_orthogonal_selection((rows,)).astype(np.float64)
    camera_codes = store.load("camera")[rows]
    sequence_codes = store.load("sequence")[rows]
    frames = store.load("frame")[rows]
    camera_table, sequence_table = store.attrs["codes"]["camera"], store.attrs["codes"]["sequence"]
    offsets = frame_offsets(manifest)
    people = defaultdict(list)
    for pose, extrinsic, code, sequence, frame in zip(pose3d, extrinsics, camera_codes, sequence_codes, frames):
        if np.isfinite(pose).all(-1).sum() < MIN_LABELLED_JOINTS:
            continue
        name = camera_table[code]
        rotation, translation = extrinsic[:3, :3], extrinsic[:3, 3]
        world = (pose - translation) @ rotation  # the crop's virtual camera -> world
        video_frame = int(frame) + int(offsets[sequence_table[sequence]][name])
        people[name, video_frame].append(cameras[name].world_to_camera(world))
    return dict(people), {"manifest": manifest, "cameras": cameras}


def video_frames(manifest: dict, camera: str, wanted: list[int]):
    """(video frame, uint8 RGB frame) of the recording's video for ``camera``, decoded with PyAV."""
    import io

    import av

    wheel = pose2sim_wheel(download=False)
    member = f"{manifest['source']['demo']}/videos/{camera}.mp4"
    with av.open(io.BytesIO(read_member(wheel, member))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                yield index, frame.to_ndarray(format="rgb24")
            if index >= max(wanted):
                break


def match(predicted_2d: list[np.ndarray], truth: list[np.ndarray], camera) -> list[tuple[int, int]]:
    """One-to-one (prediction, truth) pairs whose mean 2D joint distance is within MATCH_DISTANCE."""
    if not predicted_2d or not truth:
        return []
    cost = np.full((len(predicted_2d), len(truth)), np.inf)
    for j, pose in enumerate(truth):
        labelled = np.isfinite(pose).all(-1)
        uv = camera.camera_to_image(pose[labelled])
        size = max(person_box(uv)[2:])
        for i, predicted in enumerate(predicted_2d):
            distance = np.nanmean(np.linalg.norm(predicted[labelled] - uv, axis=-1)) / size
            if distance <= MATCH_DISTANCE:
                cost[i, j] = distance
    finite = np.where(np.isfinite(cost), cost, 1e9)
    rows, cols = linear_sum_assignment(finite)
    return [(i, j) for i, j in zip(rows, cols) if np.isfinite(cost[i, j])]


class Method:
    def __init__(self, name: str):
        self.name = name
        self.predictions, self.truths = [], []
        self.found = self.total = 0
        self.seconds = 0.0
        self.frames = 0

    def add(self, predicted_2d, predicted_3d, truth, camera, seconds: float) -> None:
        pairs = match(predicted_2d, truth, camera)
        self.found += len(pairs)
        self.total += len(truth)
        self.predictions += [predicted_3d[i] for i, _ in pairs]
        self.truths += [truth[j] for _, j in pairs]
        self.seconds += seconds
        self.frames += 1

    def scores(self, root) -> dict:
        out = {"method": self.name, "people": self.total, "recall": self.found / max(self.total, 1),
               "frames_per_second": self.frames / max(self.seconds, 1e-9)}
        if self.predictions:
            pred, gt = np.stack(self.predictions), np.stack(self.truths)
            out["mpjpe_mm"] = float(np.nanmean(mpjpe(pred, gt, root)))
            out["pa_mpjpe_mm"] = float(np.nanmean(pa_mpjpe(pred, gt)))
        return out


def run_dataset(config, dataset: str, estimator, max_frames: int | None, report) -> dict:
    from assets.real.blazepose_tflite import Landmarker, PersonDetector, detect_people

    people, recording = test_people(config, dataset)
    manifest, cameras = recording["manifest"], recording["cameras"]
    ours, blazepose = Method("ours (detect_poses)"), Method("BlazePose GHUM")
    detector, landmarker = PersonDetector(), Landmarker()
    for camera in manifest["cameras"]:
        frames = sorted(frame for name, frame in people if name == camera)[:max_frames]
        if not frames:
            continue
        lens = cameras[camera]
        for frame, image in video_frames(manifest, camera, frames):
            truth = people[camera, frame]
            started = time.perf_counter()
            out = estimator.detect_poses(image, SKELETON_NAME, intrinsics=lens.K, distortion=lens.dist)
            ours.add(list(out["poses2d"].astype(np.float64)), list(out["poses3d"].astype(np.float64)), truth, lens,
                     time.perf_counter() - started)
            started = time.perf_counter()
            found = detect_people(image, detector, landmarker)
            blazepose.add([p.landmarks[:, :2] for p in found], [p.world * 1000.0 for p in found], truth, lens,
                          time.perf_counter() - started)
        report(f"  {dataset} {camera}: {len(frames)} held-out frames")
    store_path = config.pseudo_gt_store_path(dataset)
    root = open_store(store_path).skeleton.root_joints
    floor = mean_pose_baseline(store_path)
    return {"dataset": dataset, "floor": {"mpjpe_mm": floor["mpjpe_mm"], "pa_mpjpe_mm": floor["pa_mpjpe_mm"]},
            "methods": [ours.scores(root), blazepose.scores(root)]}


def print_table(results: list[dict]) -> None:
    header = (f"| {'dataset':14s} | {'method':22s} | {'people':>6s} | {'recall':>6s} | {'MPJPE mm':>8s} | "
              f"{'PA-MPJPE mm':>11s} | {'frames/s':>8s} |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for result in results:
        for scores in result["methods"]:
            print(f"| {result['dataset']:14s} | {scores['method']:22s} | {scores['people']:6d} | "
                  f"{scores['recall']:6.1%} | {scores.get('mpjpe_mm', float('nan')):8.1f} | "
                  f"{scores.get('pa_mpjpe_mm', float('nan')):11.1f} | {scores['frames_per_second']:8.1f} |")
        floor = result["floor"]
        print(f"| {result['dataset']:14s} | {'mean-pose floor':22s} | {'':6s} | {'':6s} | {floor['mpjpe_mm']:8.1f} | "
              f"{floor['pa_mpjpe_mm']:11.1f} | {'':8s} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/models/final/model.pt")
    parser.add_argument("--config", default=None)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--max-frames", type=int, default=None, help="held-out frames per camera (default: all)")
    parser.add_argument("--out", default="data/benchmarks/real_images", help="folder for latest.json")
    args = parser.parse_args(argv)
    from model.inference import load_estimator

    config = load_config(args.config)
    estimator = load_estimator(args.model)
    datasets = [name for name in args.datasets.split(",") if name]
    missing = [name for name in datasets if name not in config.datasets]
    if missing:
        parser.error(f"--datasets: {', '.join(missing)} not in the config's datasets ({', '.join(config.datasets)})")
    results = []
    for name in datasets:
        results.append(run_dataset(config, name, estimator, args.max_frames,
                                   lambda text: print(text, file=sys.stderr, flush=True)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"model": args.model, "results": results}, indent=1))
    print()
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
