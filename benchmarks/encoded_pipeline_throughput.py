"""Batch rate of the grain pipeline over precomputed latents/tokens (what generators train on).

    python benchmarks/encoded_pipeline_throughput.py --encoded=AE_WORKDIR/encoded/shapes-r32_small

Prints the rate and a final JSON line with `batches_per_s` and `images_per_s`; compare it with a
model's `perf/images_per_s` from `benchmarks/train_throughput.py`.
"""
from __future__ import annotations

import argparse
import json
import time

from imgsynth.data import encode, pipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoded", required=True, help="an encoded dataset directory")
    parser.add_argument("--global_batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    source = encode.load_encoded(args.encoded, "train")
    it = pipeline.train_iterator(source, global_batch_size=args.global_batch_size, seed=0,
                                 process_index=0, process_count=1)
    next(it)   # start the prefetch threads
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    rate = args.batches / (time.perf_counter() - t0)
    result = {"batches_per_s": rate, "images_per_s": rate * args.global_batch_size,
              "global_batch_size": args.global_batch_size, "records": len(source)}
    print(f"{rate:.1f} batches/s = {rate * args.global_batch_size:.0f} images/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
