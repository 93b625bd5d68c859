"""Benchmark: conversion throughput (examples/s) and peak memory against the number of examples.

Writes a raw tree in Human3.6M's release layout (metadata.xml, D3_Positions_mono and D2_Positions CDFs,
one mp4 video per take and camera, no extracted frames, so every frame is decoded from video) with the
test suite's generator (tests/test_h36m.py), at a chosen frame size, for a small and a 4x larger number
of frames per take. Each conversion runs in its own process with ``workers`` cropping processes, every
frame kept (``train_frame_step: 1``); it prints one row per (examples, workers):

  examples/s    examples written per second of the whole conversion (both annotation passes included)
  peak RSS MB   of the converting process (its high-water mark), and of its largest worker process

Streaming means the peak RSS does not grow with the number of examples (the 4x row against the 1x row).

Run:  .venv/bin/python benchmarks/conversion.py [--frames 40] [--takes 2] [--scale 0.3] [--workers 1,2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

_CONVERT = """
import json, resource, sys, time
from assets.converters import get_converter
from assets.converters.common import convert
started = time.perf_counter()
result = convert(get_converter("h36m"), sys.argv[1], sys.argv[2], image_size=int(sys.argv[3]),
                 workers=int(sys.argv[4]), options={"train_frame_step": 1, "test_frame_step": 1},
                 progress=lambda message: None)
seconds = time.perf_counter() - started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (here: the tree builder)
peak_kb = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
print(json.dumps({"examples": result.num_examples, "seconds": seconds, "rss_mb": peak_kb / 1024,
                  "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def build_tree(root: Path, *, frames: int, takes: int, scale: float) -> Path:
    """An H36M-layout tree: ``takes`` training takes of ``frames`` frames x 4 cameras, videos only."""
    sys.path.insert(0, str(PROJECT / "tests"))
    import test_h36m as layout

    subjects = ("S1", "S5", "S6", "S7", "S8")
    settings = {"SCALE": scale,
                "SIZES": {camera: (round(1000 * scale), round((1002 if camera in ("54138969", "60457274") else 1000)
                                                              * scale)) for camera in layout.CAMERAS},
                "TAKES": [(subjects[i % len(subjects)], f"Walking {i + 1}", frames) for i in range(takes)]}
    saved = {name: getattr(layout, name) for name in settings}
    try:  # the module may be the one the test suite runs: put its settings back afterwards
        for name, value in settings.items():
            setattr(layout, name, value)
        return layout.build_raw(root, images=False, video=True)
    finally:
        for name, value in saved.items():
            setattr(layout, name, value)


def measure(raw: Path, out: Path, image_size: int, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    done = subprocess.run([sys.executable, "-c", _CONVERT, str(raw), str(out), str(image_size), str(workers)],
                          capture_output=True, text=True, env=env, cwd=PROJECT)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="frames per take at 1x (default 40)")
    parser.add_argument("--takes", type=int, default=2, help="training takes (x 4 cameras)")
    parser.add_argument("--scale", type=float, default=0.3, help="frame size relative to H36M's 1000 px")
    parser.add_argument("--image-size", type=int, default=128, help="crop side in the store")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (1, 4):
            raw = build_tree(Path(tmp) / f"raw{factor}", frames=args.frames * factor, takes=args.takes,
                             scale=args.scale)
            for count in workers:
                result = measure(raw, Path(tmp) / f"store{factor}-{count}", args.image_size, count)
                rows.append((result["examples"], count, result["examples"] / result["seconds"], result["rss_mb"],
                             result["worker_rss_mb"]))
    print(f"\nH36M layout, {args.takes} takes x 4 cameras, frames {round(1000 * args.scale)} px decoded from mp4, "
          f"crops {args.image_size} px, {os.cpu_count()} CPUs")
    print("| examples | workers | examples/s | peak RSS MB | worker peak RSS MB |\n|---|---|---|---|---|")
    for examples, count, rate, rss, worker_rss in rows:
        print(f"| {examples} | {count} | {rate:.1f} | {rss:.0f} | {worker_rss:.0f} |")


if __name__ == "__main__":
    main()
