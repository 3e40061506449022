"""Data throughput: shapes generation (records written per second) and the grain pipeline's
batch rate.

    python benchmarks/data_throughput.py [--records=5000] [--resolution=32] [--global_batch_size=64]
        [--num_workers=N]

Generation builds `--records` training records with the real TFDS builder (workers render, PNG-
and protobuf-encode; the main process shuffles and writes ArrayRecord, then reads the captions
back for the vocabulary) and extrapolates the minutes for 100k records; `--records=100000`
measures the full build instead. The CPU seconds of the workers and of the main process give the
rate one worker sustains (`per_worker_images_per_s`) and the rate the main process allows
(`main_process_images_per_s`): a machine with N free cores builds at about the smaller of N × the
first and the second, whatever the load was here. The pipeline reads that build through
`train_iterator` with the standard transform (decode, tokenize, normalise, batch) on this
process alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgsynth.data import build, pipeline, shapes  # noqa: E402
from imgsynth.data.render import make_record  # noqa: E402


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_seconds() -> tuple[float, float]:
    """User + system CPU time of this process, and of its finished children (workers)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--global_batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--num_workers", type=int, default=None)
    args = parser.parse_args()

    # Rendering alone (scene, raster, PNG), without TFDS encoding and writing.
    n_render = min(args.records, 2000)
    start = time.perf_counter()
    for i in range(n_render):
        make_record(args.resolution, 0, 0, i)
    render_per_s = n_render / (time.perf_counter() - start)

    tmp = tempfile.mkdtemp(prefix="imgsynth-bench-")
    try:
        config = shapes.ShapesConfig(name=f"r{args.resolution}_bench", resolution=args.resolution,
                                     num_train=args.records, num_validation=0, num_test=0)
        workers = shapes.default_workers() if args.num_workers is None else args.num_workers
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        path = build.build_shapes(tmp, config, num_workers=workers, log=lambda m: None)
        build_s = time.perf_counter() - start  # includes the vocabulary pass
        main_cpu_s, worker_cpu_s = (b - a for a, b in zip(cpu_start, _cpu_seconds()))
        build_cpu_s = main_cpu_s + worker_cpu_s
        images_per_s = args.records / build_s
        minutes_100k = 100_000 / images_per_s / 60
        # CPU seconds barely depend on what else runs on the machine: the minutes an idle
        # machine would need, when the build runs in one process.
        minutes_100k_cpu = 100_000 * build_cpu_s / args.records / 60
        # With one worker the main process renders nothing, but with none it renders everything.
        per_worker = args.records / (worker_cpu_s if workers > 1 else build_cpu_s)
        main_rate = args.records / main_cpu_s if workers > 1 else per_worker

        import tensorflow_datasets as tfds
        source = tfds.builder_from_directory(path).as_data_source("train")
        tokenizer = pipeline.load_tokenizer({"name": "tfds", "tfds_name": "-", "label_key": "-",
                                             "tokenizer": "byte", "text_max_len": 64})
        it = pipeline.train_iterator(
            source, global_batch_size=args.global_batch_size, seed=0,
            transform=pipeline.ModelInputs(tokenizer, args.resolution),
            process_index=0, process_count=1)
        for _ in range(10):  # warm-up: threads start, prefetch buffer fills
            next(it)
        start, cpu_start = time.perf_counter(), sum(_cpu_seconds())
        for _ in range(args.batches):
            next(it)
        batches_per_s = args.batches / (time.perf_counter() - start)
        cpu_ms_per_batch = 1000 * (sum(_cpu_seconds()) - cpu_start) / args.batches
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    extrapolated = args.records < 100_000
    load = os.getloadavg()[0]  # other work on the machine slows every figure
    rows = [
        ("cpu", f"{_cpu()} ({len(os.sched_getaffinity(0))} cores), load average {load:.1f}"),
        ("render only (scene, raster, PNG)", f"{render_per_s:,.0f} records/s"),
        (f"build {args.records:,} records at {args.resolution} px, {workers} worker(s)",
         f"{build_s:.1f} s = {images_per_s:,.0f} records/s"),
        ("100k records at this rate" + (" (extrapolated)" if extrapolated else " (measured)"),
         f"{minutes_100k:.2f} min"),
        ("CPU time of the build", f"{build_cpu_s:.1f} s = {minutes_100k_cpu:.2f} CPU-min per 100k"),
        ("one worker's rate (its CPU time, start-up included)", f"{per_worker:,.0f} records/s"),
        ("the main process's rate (its CPU time)", f"{main_rate:,.0f} records/s"),
        ("16 free cores (estimated)", f"{min(16 * per_worker, main_rate):,.0f} records/s"),
        (f"grain pipeline, global_batch_size {args.global_batch_size}",
         f"{batches_per_s:.1f} batches/s = {batches_per_s * args.global_batch_size:,.0f} images/s"),
        ("CPU time per batch", f"{cpu_ms_per_batch:.1f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps({
        "images_per_s": round(images_per_s, 1),
        "pipeline_batches_per_s": round(batches_per_s, 2),
        "pipeline_images_per_s": round(batches_per_s * args.global_batch_size, 1),
        "pipeline_cpu_ms_per_batch": round(cpu_ms_per_batch, 1),
        "render_only_per_s": round(render_per_s, 1),
        "minutes_per_100k": round(minutes_100k, 2),
        "minutes_per_100k_extrapolated": extrapolated,
        "cpu_minutes_per_100k": round(minutes_100k_cpu, 2),
        "per_worker_images_per_s": round(per_worker, 1),
        "main_process_images_per_s": round(main_rate, 1),
        "images_per_s_16_cores_estimated": round(min(16 * per_worker, main_rate), 1),
        "records": args.records, "resolution": args.resolution,
        "global_batch_size": args.global_batch_size, "num_workers": workers,
        "cpu": _cpu(), "cores": len(os.sched_getaffinity(0)), "load_average_1min": round(load, 2),
    }))


if __name__ == "__main__":
    main()
