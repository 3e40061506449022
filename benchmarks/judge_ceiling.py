"""Judge ceiling: train the default judge on the default shapes dataset and measure how exactly it
reads real held-out images (its prompt-following accuracy on the test split) and how often it
credits destroyed ones (its false-positive rate per corruption).

    python benchmarks/judge_ceiling.py [--data_dir=~/.cache/imgsynth/data] [--builder_config=r32]

Builds the dataset first if it is missing (not timed), always retrains the judge (and caches it
where `load_judge` finds it), prints a per-category table and ends with one JSON line holding
`ceiling`, `false_positive` (the worst corruption's) and `train_minutes` (wall clock, reading the data and the test evaluation included).
`train_cpu_minutes` is this process's CPU time: on a busy shared machine wall time overstates
what an idle one needs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgsynth.data import build  # noqa: E402
from imgsynth.data.scene import SCENE_CATEGORIES  # noqa: E402
from imgsynth.metrics import train_judge  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="~/.cache/imgsynth/data")
    parser.add_argument("--builder_config", default="r32")
    parser.add_argument("--steps", type=int, default=train_judge.TrainSettings.steps)
    args = parser.parse_args()
    data_dir = os.path.expanduser(args.data_dir)
    build.build_shapes(data_dir, args.builder_config, log=print)
    judge = train_judge.train_judge(data_dir, args.builder_config,
                                    settings=train_judge.TrainSettings(steps=args.steps))
    info = judge.info
    print(f"\n{'category':<20}{'ceiling':>10}")
    for cat in SCENE_CATEGORIES:
        if cat in info["ceiling_per_category"]:
            print(f"{cat:<20}{info['ceiling_per_category'][cat]:>10.4f}")
    print(f"{'overall':<20}{info['ceiling']:>10.4f}")
    print(f"{'exact scene':<20}{info['scene_accuracy']:>10.4f}")
    print(f"{'unreadable (real)':<20}{info['unreadable_real']:>10.4f}")
    print(f"\n{'destroyed images':<20}{'credited':>10}{'unreadable':>12}")
    for name, rate in info["false_positive_per_corruption"].items():
        print(f"{name:<20}{rate:>10.4f}{info['unreadable_per_corruption'][name]:>12.4f}")
    print(f"train minutes {info['train_minutes']:.2f} wall, {info['train_cpu_minutes']:.2f} CPU; "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}\n")
    print(json.dumps({"ceiling": info["ceiling"], "train_minutes": info["train_minutes"],
                      "train_cpu_minutes": info["train_cpu_minutes"],
                      "scene_accuracy": info["scene_accuracy"],
                      "false_positive": info["false_positive"],
                      "false_positive_per_corruption": info["false_positive_per_corruption"],
                      "unreadable_real": info["unreadable_real"],
                      "ceiling_per_category": info["ceiling_per_category"],
                      "builder_config": args.builder_config, "num_test": info["num_test"],
                      "steps": args.steps}))


if __name__ == "__main__":
    main()
