"""Write the sample images and ground_truth.json: `python scripts/make_samples.py [--oversized] OUTDIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from local_stack.samples import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--oversized", action="store_true", help="also write bad/huge.jpg (over 15 MB)")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    truth = generate(args.outdir, oversized=args.oversized)
    total = sum(s.size_bytes for s in truth.samples)
    print(f"wrote {len(truth.samples)} samples ({total / 1e6:.2f} MB) and ground_truth.json to {args.outdir}")


if __name__ == "__main__":
    main()
