"""Benchmark: reading training examples from a local store vs the same store on an S3 API (moto on loopback).

One store of --examples random examples at --image-size px is published twice, to a local folder and to
an S3 bucket served by moto on 127.0.0.1 (tests/object_store.py). Then, for each, random examples (image
and labels, as the training loader draws them) are read:

  * local          the store on the local disk
  * s3 direct      the store on S3 read in place: every example is a few GET requests
  * s3 staged      what training does with an object-store root (assets.versions.local_published): the
                   published version is copied to the local cache once, then read locally; the copy's
                   seconds are shown separately, and a second run finds it cached

Loopback S3 has no network latency, so "s3 direct" is a lower bound on the cost of in-place reads from a
real object store (tens of ms per request); the ratio column is examples/s relative to the local store.

Run:  .venv/bin/python benchmarks/object_store.py [--examples 1024] [--image-size 128] [--reads 512]
(needs the test extras: ``pip install -e .[test]`` for moto)
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from assets.locations import location  # noqa: E402
from assets.store import open_store, write_store  # noqa: E402
from assets.versions import local_published  # noqa: E402
from object_store import fresh_prefix, loopback_s3  # noqa: E402
from store_factory import make_store_arrays  # noqa: E402


def read_rate(store_path, reads: int, seed: int = 0) -> float:
    """Examples per second of random single-example reads (image and labels)."""
    store = open_store(store_path)
    order = np.random.default_rng(seed).integers(0, len(store), reads)
    started = time.perf_counter()
    for index in order:
        store["image"][int(index)]
        store["pose3d"][int(index)]
        store["joint_valid"][int(index)]
    return reads / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--reads", type=int, default=512, help="random examples read per measurement")
    args = parser.parse_args(argv)

    arrays, attrs = make_store_arrays(n=args.examples, image_size=args.image_size)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        with loopback_s3(scratch / "cache"):
            local = write_store(scratch / "local" / "toy", arrays, attrs).parent
            started = time.perf_counter()
            remote = location(fresh_prefix("benchmark")) / "toy"
            write_store(remote, arrays, attrs)
            upload_seconds = time.perf_counter() - started
            # publishing kept the uploaded version as the cache's copy: drop it to time a first copy
            shutil.rmtree(scratch / "cache" / "objects")
            rates = {"local": read_rate(local, args.reads)}
            rates["s3 direct"] = read_rate(remote, max(args.reads // 8, 16))
            started = time.perf_counter()
            staged = local_published(remote)
            copy_seconds = time.perf_counter() - started
            started = time.perf_counter()
            assert local_published(remote) == staged
            cached_seconds = time.perf_counter() - started
            rates["s3 staged"] = read_rate(staged, args.reads)

    print(f"store: {args.examples} examples, {args.image_size} px images; write + upload to S3 {upload_seconds:.2f} s")
    print(f"{'source':<12} {'examples/s':>11} {'vs local':>9}  note")
    notes = {"local": "", "s3 direct": "one GET per array chunk per example",
             "s3 staged": f"first copy {copy_seconds:.2f} s, then cached ({cached_seconds * 1000:.0f} ms)"}
    for name, rate in rates.items():
        print(f"{name:<12} {rate:>11.0f} {rate / rates['local']:>8.2f}x  {notes[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
