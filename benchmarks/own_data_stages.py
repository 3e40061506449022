"""How long the stages of an own-data study take before any generator trains, and what they are
worth: the autoencoders against their quality bar, the instruments against destroyed images.

    python benchmarks/own_data_stages.py [--images=1800] [--classes=10] [--workdir=DIR]

A folder of generated captioned, labelled images (one of `classes` shapes in a random colour on
noise: the class is the shape, `tests/fixtures/own_data.py`) is built as the README's own-data
section does, then the stages the quickstart grid (`runlocal`) needs on it are prepared one by one, each
timed: the label classifier and the alignment model, the KL autoencoder (flow) and the FSQ one
(masked-token and next-token) with their quality bar (`stages.autoencoder_bar`) and encoded
data. Each training stage's status.json gives its per-step time; its start-up (compiling,
reading data) is the rest. `launch --dry_run` estimates the stages of a dataset without shipped
instruments from these (launch/stage_estimate.py). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1800)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--workdir", help="keep the data and stages here (default: a temporary one)")
    args = p.parse_args()
    from imgsynth import config as config_lib, io, perf, stages
    from imgsynth.data import build
    from imgsynth.metrics import corruptions
    from imgsynth.metrics import alignment as alignment_lib, labels as labels_lib
    from fixtures.own_data import make_shape_folder   # the own-data tests' generated folder

    tmp = args.workdir or tempfile.mkdtemp(prefix="own-data-stages-")
    data_dir, cache = os.path.join(tmp, "data"), os.path.join(tmp, "cache")
    t0 = time.perf_counter()
    src = make_shape_folder(os.path.join(tmp, "images"), n=args.images, classes=args.classes)
    build.build_folder(data_dir, src, "shapes", 32, validation_fraction=0.05, test_fraction=0.1)
    out = {"images": args.images, "classes": args.classes,
           "data_s": round(time.perf_counter() - t0, 1), "load_1min_start": os.getloadavg()[0]}

    def config(paradigm):
        c = config_lib.default_config(paradigm, "runlocal")
        c.cache_dir = cache
        c.data.update({"name": "folder", "folder_name": "shapes", "data_dir": data_dir})
        return c

    def timed(name, fn, c, steps=None, run_dir=None):
        t = time.perf_counter()
        fn(c)
        out[f"{name}_s"] = round(time.perf_counter() - t, 1)
        if steps:
            timing = io.read_status(run_dir).get("timing") or {}
            step_s = (timing["end"] - timing["first_step"]) / max(steps - 1, 1)
            out[f"{name}_steps"], out[f"{name}_step_s"] = steps, round(step_s, 4)
            out[f"{name}_startup_s"] = round(out[f"{name}_s"] - steps * step_s, 1)
        print(f"{name}: {out}", flush=True)

    flow, maskgit = config("flow"), config("maskgit")
    data = stages._data.Dataset.of(stages.data_config(flow))
    for what, fn in (("labels", stages.labels), ("alignment", stages.alignment)):
        timed(what, fn, flow, stages.instrument_settings(flow, what).steps,
              data.instrument_dir(what) + "-training")
    for c, kind in ((flow, "kl"), (maskgit, "fsq")):
        ae = stages.autoencoder_config(c)
        timed(f"autoencoder_{kind}", stages.autoencoder, c, ae.total_steps,
              stages.autoencoder_dir(c))
        timed(f"encoded_{kind}", stages.encoded, c)
        t = time.perf_counter()
        out[f"autoencoder_{kind}_bar_met"] = stages.autoencoder_bar(c)
        bar = io.read_json(os.path.join(stages.autoencoder_dir(c), stages.BAR_FILE))
        out[f"autoencoder_{kind}_bar"] = {k: round(v, 4) for k, v in bar["measured"].items()
                                          if v is not None}
        out[f"autoencoder_{kind}_bar_s"] = round(time.perf_counter() - t, 1)
    # What the instruments credit in destroyed test images (chance: 1 / classes; the alignment
    # score of real images with mismatched captions).
    test = data.read(data.eval_split())
    labels = labels_lib.load_labels(data)
    align = alignment_lib.load_alignment(data)
    out["label_accuracy"] = round(labels.following(test.images, test.labels), 4)
    out["alignment_score_real"] = round(alignment_lib.alignment_score(
        align, test.images, test.captions), 2)
    out["alignment_score_mismatched"] = round(alignment_lib.alignment_score(
        align, test.images, test.captions[1:] + test.captions[:1]), 2)
    for name, images in corruptions.destroyed(test.images, seed=1).items():
        out[f"label_following_{name}"] = round(labels.following(images, test.labels), 4)
        out[f"alignment_score_{name}"] = round(alignment_lib.alignment_score(
            align, images, test.captions), 2)
    out.update(total_s=round(time.perf_counter() - t0, 1), cores=perf.cores(),
               load_1min=round(os.getloadavg()[0], 1))
    if not args.workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
