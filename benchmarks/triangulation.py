"""Triangulation benchmark: this project's ``triangulate`` against aniposelib, on the Pose2Sim demo rig.

    .venv/bin/python benchmarks/triangulation.py [--poses 2000] [--ransac-points 1000]

Scene: the four calibrated cameras of the Pose2Sim demo (its Qualisys calibration, read from the cached
Pose2Sim wheel; a synthetic 4-camera ring of the same lens only if the wheel cannot be had, which the
output says), ``--poses`` random standing people (33 BlazePose-like joints, random heading, size and
limb jitter) in the capture volume, projected with lens distortion, 1.5 px Gaussian noise, and a
fraction of the detections replaced by outliers 50-300 px away from the truth. Joints that project
outside an image are missing there.

aniposelib needs OpenCV, numba and JAX, so it runs in its own virtualenv (``<cache>/aniposelib-venv``,
created on first use) in a subprocess: this file is also that subprocess's script (``--worker``), which is
why only the standard library and NumPy are imported at the top. aniposelib's ``triangulate_ransac``
loops over points in Python, so it runs on the first ``--ransac-points`` points only; its throughput is
measured there. Times are wall-clock seconds of the triangulation call alone (aniposelib's JIT
compilation is warmed up first).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ANIPOSELIB_REQUIREMENTS = ("aniposelib==0.8.0",)
NOISE_PX = 1.5
OUTLIER_PX = (50.0, 300.0)
OUTLIER_FRACTIONS = (0.0, 0.1, 0.3)
# A standing person, z up, facing +y, millimetres: BlazePose's 33 landmarks in their order
TEMPLATE = np.array([
    (0, 100, 1640), (15, 85, 1670), (32, 80, 1672), (45, 75, 1670), (-15, 85, 1670), (-32, 80, 1672),
    (-45, 75, 1670), (75, 0, 1650), (-75, 0, 1650), (25, 85, 1600), (-25, 85, 1600), (180, 0, 1430),
    (-180, 0, 1430), (230, 0, 1150), (-230, 0, 1150), (250, 30, 900), (-250, 30, 900), (260, 40, 820),
    (-260, 40, 820), (245, 60, 815), (-245, 60, 815), (235, 70, 850), (-235, 70, 850), (100, 0, 950),
    (-100, 0, 950), (105, 20, 520), (-105, 20, 520), (105, 0, 90), (-105, 0, 90), (105, -40, 40),
    (-105, -40, 40), (110, 150, 20), (-110, 150, 20)], dtype=np.float64)


# -- the aniposelib side (runs in the aniposelib venv) -----------------------------------------------

def aniposelib_worker(inputs: Path, outputs: Path) -> None:
    import cv2
    from aniposelib.cameras import Camera, CameraGroup

    data = np.load(inputs)
    cameras = [Camera(matrix=K, dist=dist, size=tuple(int(v) for v in size), rvec=cv2.Rodrigues(R)[0].ravel(),
                      tvec=t, name=f"cam{i}")
               for i, (K, dist, R, t, size) in enumerate(zip(data["K"], data["dist"], data["R"], data["t"],
                                                            data["size"]))]
    group = CameraGroup(cameras)
    results = {}
    for key in sorted(k for k in data.files if k.startswith("points_")):
        points = data[key]  # [C, P, 2], NaN = missing
        group.triangulate(points)  # JAX compiles per input shape: compile outside the timing
        started = time.perf_counter()
        plain = group.triangulate(points)
        results[f"plain_{key}"] = plain
        results[f"plain_seconds_{key}"] = time.perf_counter() - started
        subset = points[:, :int(data["ransac_points"])]
        group.triangulate_ransac(subset[:, :4])  # compiles the 2-, 3- and 4-view shapes
        started = time.perf_counter()
        ransac = group.triangulate_ransac(subset)[0]
        results[f"ransac_{key}"] = ransac
        results[f"ransac_seconds_{key}"] = time.perf_counter() - started
    np.savez(outputs, **results)


# -- the project side ----------------------------------------------------------------------------------

def rig_cameras():
    """(cameras, image sizes, description): the Pose2Sim demo rig, or a synthetic stand-in."""
    from assets.cameras import Camera
    from assets.real.cache import AcquisitionError, pose2sim_wheel, read_member
    from assets.real.pose2sim import CALIBRATION_MEMBER
    from assets.real.qca import read_qca

    try:
        wheel = pose2sim_wheel()
        qca = read_qca(read_member(wheel, CALIBRATION_MEMBER), f"{wheel}!{CALIBRATION_MEMBER}")
        return [q.camera for q in qca], [q.image_size for q in qca], f"Pose2Sim demo calibration ({wheel.name})"
    except AcquisitionError as exc:
        print(f"Pose2Sim wheel unavailable ({str(exc).splitlines()[0]}): using a SYNTHETIC 4-camera ring",
              file=sys.stderr)
    cameras = []
    for i, angle in enumerate(np.radians([30, 120, 210, 300])):
        position = np.array([3500 * np.cos(angle), 3500 * np.sin(angle), 1900.0])
        forward = np.array([0.0, 0.0, 1000.0]) - position
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        R = np.stack([right, np.cross(forward, right), forward])
        cameras.append(Camera(K=[[1680, 0, 540], [0, 1680, 960], [0, 0, 1]], dist=[-7e-4, 2e-3, 0, 0, 0], R=R,
                              t=-R @ position, name=f"synthetic{i}"))
    return cameras, [(1088, 1920)] * 4, "SYNTHETIC 4-camera ring (Pose2Sim wheel unavailable)"


def random_people(num_poses: int, rng: np.random.Generator) -> np.ndarray:
    """[N, 33, 3] world mm: the template turned, scaled, jittered and placed in the capture volume."""
    heading = rng.uniform(0, 2 * np.pi, num_poses)
    cos, sin = np.cos(heading), np.sin(heading)
    rotation = np.zeros((num_poses, 3, 3))
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
    rotation[:, 2, 2] = 1
    scale = rng.uniform(0.85, 1.15, (num_poses, 1, 1))
    jitter = rng.normal(0, 60, (num_poses, len(TEMPLATE), 3))
    position = np.concatenate([rng.uniform(-800, 800, (num_poses, 1, 2)), np.zeros((num_poses, 1, 1))], axis=-1)
    return (scale * TEMPLATE + jitter) @ rotation.transpose(0, 2, 1) + position


def observations(cameras, sizes, people: np.ndarray, outlier_fraction: float, rng: np.random.Generator):
    """Pixel detections [C, P, 2] (NaN outside the image) and which of them are outliers."""
    from assets.cameras import CameraRig

    rig = CameraRig(cameras)
    points = people.reshape(-1, 3)
    uv = rig.world_to_image(points) + rng.normal(0, NOISE_PX, (len(cameras), len(points), 2))
    outlier = rng.random(uv.shape[:2]) < outlier_fraction
    direction = rng.uniform(0, 2 * np.pi, uv.shape[:2])
    distance = rng.uniform(*OUTLIER_PX, uv.shape[:2])
    offset = np.stack([np.cos(direction), np.sin(direction)], axis=-1) * distance[..., None]
    uv = np.where(outlier[..., None], uv + offset, uv)
    size = np.asarray(sizes, dtype=np.float64)[:, None, :]
    inside = (uv >= 0).all(axis=-1) & (uv < size).all(axis=-1) & (rig.world_to_camera(points)[..., 2] > 0)
    return np.where(inside[..., None], uv, np.nan), outlier


def run_aniposelib(cameras, sizes, detections: dict, ransac_points: int) -> dict:
    from assets.real.cache import cache_dir, venv_python

    python = venv_python("aniposelib-venv", ANIPOSELIB_REQUIREMENTS)
    work = cache_dir() / "benchmark"
    work.mkdir(parents=True, exist_ok=True)
    inputs, outputs = work / "aniposelib_in.npz", work / "aniposelib_out.npz"
    np.savez(inputs, K=np.stack([c.K for c in cameras]), dist=np.stack([c.dist for c in cameras]),
             R=np.stack([c.R for c in cameras]), t=np.stack([c.t for c in cameras]), size=np.asarray(sizes),
             ransac_points=ransac_points, **{f"points_{k}": v for k, v in detections.items()})
    result = subprocess.run([str(python), __file__, "--worker", str(inputs), str(outputs)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("aniposelib worker failed:\n" + "\n".join(result.stderr.strip().splitlines()[-15:]))
    with np.load(outputs) as data:
        return {k: data[k] for k in data.files}


def error_row(method: str, fraction: float, estimate: np.ndarray, truth: np.ndarray, seconds: float) -> dict:
    error = np.linalg.norm(estimate - truth, axis=-1)
    found = np.isfinite(error)
    return {"method": method, "outliers": fraction, "points": len(truth), "median_mm": float(np.median(error[found])),
            "p95_mm": float(np.percentile(error[found], 95)), "missing": float(1 - found.mean()),
            "points_per_s": len(truth) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=2000)
    parser.add_argument("--ransac-points", type=int, default=1000,
                        help="points given to aniposelib's triangulate_ransac (it is slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        aniposelib_worker(*args.worker)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from assets.triangulation import triangulate

    rng = np.random.default_rng(args.seed)
    cameras, sizes, description = rig_cameras()
    people = random_people(args.poses, rng)
    truth = people.reshape(-1, 3)
    detections = {}
    for fraction in OUTLIER_FRACTIONS:
        detections[f"{int(fraction * 100)}"], _ = observations(cameras, sizes, people, fraction, rng)
    print(f"rig: {description}; {args.poses} poses x {TEMPLATE.shape[0]} joints = {len(truth)} points; "
          f"noise {NOISE_PX} px, outliers {OUTLIER_PX[0]:g}-{OUTLIER_PX[1]:g} px; aniposelib RANSAC on the first "
          f"{args.ransac_points} points", flush=True)

    rows = []
    variants = (("dozens triangulate (default)", {}),
                ("dozens triangulate (threshold 10 px)", {"threshold_px": 10.0}),
                ("dozens triangulate (robust=False)", {"robust": False}))
    for key, uv in detections.items():
        fraction = int(key) / 100
        confidence = np.isfinite(uv).all(axis=-1).astype(np.float64)
        for name, options in variants:
            started = time.perf_counter()
            result = triangulate(uv, confidence, cameras, image_sizes=sizes, **options)
            rows.append(error_row(name, fraction, result.points3d, truth, time.perf_counter() - started))
    anipose = run_aniposelib(cameras, sizes, detections, args.ransac_points)
    for key in detections:
        fraction = int(key) / 100
        rows.append(error_row("aniposelib triangulate", fraction, anipose[f"plain_points_{key}"], truth,
                              float(anipose[f"plain_seconds_points_{key}"])))
        rows.append(error_row("aniposelib triangulate_ransac", fraction, anipose[f"ransac_points_{key}"],
                              truth[:args.ransac_points], float(anipose[f"ransac_seconds_points_{key}"])))
    rows.sort(key=lambda r: (r["outliers"], r["method"]))

    header = f"| {'method':38s} | outliers | points | median mm | p95 mm | missing | points/s |"
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['method']:38s} | {r['outliers']:7.0%} | {r['points']:6d} | {r['median_mm']:9.2f} | "
              f"{r['p95_mm']:6.1f} | {r['missing']:6.1%} | {r['points_per_s']:8.0f} |")
    for fraction in OUTLIER_FRACTIONS:
        ours = next(r for r in rows if r["outliers"] == fraction and r["method"] == variants[0][0])
        ransac = next(r for r in rows if r["outliers"] == fraction and r["method"] == "aniposelib triangulate_ransac")
        print(f"{fraction:.0%} outliers: dozens (default) is {ours['points_per_s'] / ransac['points_per_s']:.0f}x "
              f"aniposelib triangulate_ransac's throughput")
    if args.json:
        args.json.write_text(json.dumps({"rig": description, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
