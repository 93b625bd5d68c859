"""python -m assets.synthetic --out data/raw --size demo --seed 0 [--datasets demo_h36m ...]"""

import argparse
import sys
import time

from .world import DATASETS, SIZES, generate_world


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assets.synthetic", description="Generate the synthetic demo datasets."
    )
    parser.add_argument("--out", default="data/raw", help="root folder, one <out>/<name> per dataset")
    parser.add_argument("--size", choices=SIZES, default="demo", help="demo: ~1000 images per dataset; tiny: a few")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, help="only these datasets (default: all)")
    parser.add_argument("--image-size", type=int, default=128, help="side of the square crop images in pixels")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    written = generate_world(
        args.out, size=args.size, seed=args.seed, datasets=args.datasets, image_size=args.image_size,
        progress=lambda line: print(line, flush=True),
    )
    print(f"wrote {len(written)} datasets to {args.out} in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
