"""Instrument false positives: what the cached judge and alignment model of a shapes dataset credit
in real test images destroyed until they carry no scene (`imgsynth.metrics.corruptions`), and,
given an autoencoder, in its decodes of random latents or tokens — the numbers every `eval.json`
stores as ceilings, here on as many test images as asked — and, as the control that must stay
readable, the judge on the real images and on the autoencoder's reconstructions of them.

    python benchmarks/instrument_false_positives.py [--data_dir=~/.cache/imgsynth/data]
        [--builder_config=r32] [--num=5000] [--autoencoder_dir=DIR]

Loads (never trains) the instruments; prints a table per corruption and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgsynth.metrics import _data, alignment, corruptions, instruments, judge  # noqa: E402
from imgsynth.metrics import prompt_following  # noqa: E402
from imgsynth.models import autoencoder_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="~/.cache/imgsynth/data")
    parser.add_argument("--builder_config", default="r32")
    parser.add_argument("--num", type=int, default=5000, help="test images to destroy")
    parser.add_argument("--autoencoder_dir", default="",
                        help="a trained autoencoder: adds its decodes of random latents/tokens")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data_dir = os.path.expanduser(args.data_dir)
    start = time.perf_counter()
    j = judge.load_judge(data_dir, args.builder_config)
    a = alignment.load_alignment(data_dir, args.builder_config)
    real = _data.read_split(data_dir, args.builder_config, "test", limit=args.num)
    destroyed = corruptions.destroyed(real.images, args.seed)
    readable = {"real": real.images}
    if args.autoencoder_dir:
        model, _ = autoencoder_files.load(os.path.expanduser(args.autoencoder_dir))
        destroyed["autoencoder_random_decodes"] = corruptions.random_decodes(
            model, len(real.images), real.images.shape[1], args.seed)
        readable["autoencoder_reconstructions"] = instruments.reconstructions(model, real.images)
    out = {}
    for name, images in readable.items():   # what must stay readable
        scenes, unreadable = j.read(images)
        out[f"judge_prompt_following_{name}"] = prompt_following.prompt_following(
            scenes, real.captions, real.categories)["accuracy"]
        out[f"judge_unreadable_{name}"] = float(unreadable.mean())
    out |= {f"judge_{k}": v for k, v in
            prompt_following.false_positive_rates(j, real, destroyed).items()}
    out |= alignment.false_positive_rates(a, real.images, real.captions, destroyed)
    out["alignment_retrieval_accuracy_real"] = alignment.retrieval_accuracy(
        a, real.images, real.captions, min(alignment.RETRIEVAL_GROUP, len(real.captions)))
    out |= {"num": len(real.captions), "seconds": round(time.perf_counter() - start, 1)}

    print(f"\n{'images':<28}{'judge credits':>14}{'unreadable':>12}{'retrieval':>11}{'score':>8}")
    for name in readable:
        print(f"{name:<28}{out[f'judge_prompt_following_{name}']:>14.4f}"
              f"{out[f'judge_unreadable_{name}']:>12.4f}")
    for name in destroyed:
        print(f"{name:<28}{out['judge_false_positive_per_corruption'][name]:>14.4f}"
              f"{out['judge_unreadable_per_corruption'][name]:>12.4f}"
              f"{out['alignment_false_positive_per_corruption'][name]:>11.4f}"
              f"{out['alignment_score_per_corruption'][name]:>8.1f}")
    print(f"retrieval by chance {out['alignment_retrieval_chance']:.4f}; score of real images "
          f"with mismatched captions {out['alignment_score_mismatched']:.1f}\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
