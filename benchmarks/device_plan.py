"""The estimate of one `benchmarks/device_run.sh` call on one GPU, itemised, before anything runs.

Every item is a figure measured on a GPU (docs/benchmarks.md, the H200 rows), measured on the
2-core CPU machine where the work is CPU-bound there too (data building, the input pipeline), or
an assumption named as one (`SOURCES`). Training runs at 0.25 of a 700 TFLOP/s peak where no step
time has been measured for the shapes. The grid is simulated as the launcher runs it: `parallel`
processes at a time sharing the one GPU (each job's GPU work shares it with the others'; a job
whose input pipeline or per-layer latency bounds it uses only its part), trunks first, a branch
once its trunk has passed its fork step, each branch's evaluation as soon as it is trained.
Nothing here touches a device: importing the grid imports JAX but runs nothing on it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

PEAK_FLOPS = 700e12            # bf16, round: 682-710 measured on the H200 (docs/benchmarks.md)
UNMEASURED_MFU = 0.25          # training at shapes without a measured step time
TRAIN_FLOPS_PER_S = UNMEASURED_MFU * PEAK_FLOPS
# Rematerialisation recomputes each block's forward in the backward pass: 4/3 of the counted
# training FLOPs (forward 1, backward 2) run on the device.
REMAT_WORK = 4 / 3

# Measured on the H200 (docs/benchmarks.md, device check): 424M flow / 322M next-token update
# steps compiled in 27 s and 9 s (MaskGIT's, not measured, counted as flow's; a sampler's first
# compilation likewise); sampling at batch 64, 256 tokens, 16 layers of width 1024.
COMPILE_S = {"flow": 27.0, "maskgit": 27.0, "ar": 9.0}
SAMPLE_IMAGES_PER_S = {"flow": 32.5, "maskgit": 134.0, "ar": 32.9}
SAMPLE_LATENCY_S = {"flow": 0.16, "maskgit": 0.040, "ar": 0.44}    # one image, batch 1
MEASURED_SAMPLER_STEPS = {"flow": 50, "maskgit": 12, "ar": 256}   # sequential steps of those
MEASURED_DEPTH = 16
# Measured on the 2-core CPU machine: the input pipeline over encoded records, 7,700-8,300
# images/s in one process (Python threads: more cores do not raise it); the shapes build,
# 555 images/s in one process at load 8.5.
PIPELINE_IMAGES_PER_S = 8_000.0
BUILD_IMAGES_PER_S_PER_PROCESS = 555.0
R32_IMAGES = 110_000           # train 100k, validation 5k, test 5k
# Assumptions, each named in the plan's `assumed` list.
START_S = 10.0                 # a process: Python, JAX and CUDA start, model and state built
CACHED_COMPILE_S = 3.0         # a program another process compiled (the CPU figure)
TRAIN_END_S = 4.0              # final eval loss and checkpoint
STEP_FLOOR_S_PER_LAYER = 0.5e-3   # launch-bound small models: per layer (backbone + text)
EVAL_FIXED_S = 15.0            # instruments loaded and compiled, metrics of 300 images
# The post-hoc EMA reads back both profiles' float32 snapshots before it samples (orbax restores
# from the page cache at 0.74-0.84 GB/s on the 2-core CPU machine); its candidates' validation
# passes are seconds of GPU work, counted in EVAL_FIXED_S.
SNAPSHOT_READ_BYTES_PER_S = 0.8e9
ENV_S = 8.0                    # device query and the bf16 peak (8192^2 matmuls)
LAUNCHER_START_S = 4.0         # the launcher's imports and the grid's expansion (no device)
BUILD_FIXED_S = 5.0            # writing and fingerprinting the dataset
SHIPPED_S = 3.0                # copying the shipped autoencoders, judge and alignment model
ENCODE_IMAGES_PER_S = 20_000.0  # PNG decoding on one core feeding the encoder
ENCODE_COMPILE_S = 10.0
REPORT_S = 25.0                # tables, fits (200 bootstrap resamples), figures, montage
# Kept free at the end of the grid for evaluating what finished after the launcher's stop.
EVAL_RESERVE_S = START_S + COMPILE_S["flow"] + EVAL_FIXED_S

SOURCES = {
    "measured_gpu": ["update step compiled in 27 s (flow) and 9 s (next-token; H200)",
                     "sampling images/s and batch-1 latency per paradigm (H200)",
                     "peak 682-710 TFLOP/s (H200)"],
    "measured_cpu": ["input pipeline 8,000 images/s a process", "shapes build 555 images/s a "
                     "process", "post-hoc EMA snapshots restored at 0.8 GB/s"],
    "assumed": [f"training at {UNMEASURED_MFU} of {PEAK_FLOPS / 1e12:.0f} TFLOP/s (4/3 of the "
                "work with rematerialisation)",
                f"process start {START_S:.0f} s (the launcher's {LAUNCHER_START_S:.0f} s)",
                f"cached compile {CACHED_COMPILE_S:.0f} s",
                f"step floor {STEP_FLOOR_S_PER_LAYER * 1e3:.1f} ms a layer",
                f"evaluation fixed {EVAL_FIXED_S:.0f} s", f"report {REPORT_S:.0f} s",
                f"encoding {ENCODE_IMAGES_PER_S:.0f} images/s + {ENCODE_COMPILE_S:.0f} s",
                "the shapes build scales to cores - 1 generating processes (the main one "
                "writing every record keeps up)"],
}


@dataclasses.dataclass
class Job:
    name: str
    kind: str                   # train | eval
    start_s: float              # CPU before its GPU work: start-up and compilation
    gpu_s: float                # seconds of the whole GPU its work needs
    floor_s: float              # the least its work can take (input pipeline, latency)
    end_s: float                # after its work
    trunk: str = ""             # a branch: its trunk, and the fraction of the trunk's work
    fork: float = 0.0           # that must be done before the branch can start
    evaluate: bool = False
    key: str = ""               # (paradigm, size): who compiles first pays the compilation
    # simulation state
    phase: str = "queued"       # queued | start | work | end | done
    left: float = 0.0
    progress: float = 0.0


def _layers(run) -> int:
    return run.config.model.depth + run.config.text.depth


def train_job(run, compiled: set) -> Job:
    key = f"{run.paradigm}-{run.size}"
    first = key not in compiled
    compiled.add(key)
    steps = run.steps - run.fork_step
    batch = run.config.global_batch_size
    gpu_s = (steps * run.flops_per_step / TRAIN_FLOPS_PER_S
             * (REMAT_WORK if run.config.model.remat != "none" else 1.0))
    floor_s = steps * max(batch / PIPELINE_IMAGES_PER_S, _layers(run) * STEP_FLOOR_S_PER_LAYER)
    return Job(name=run.name, kind="train", key=key,
               start_s=START_S + (COMPILE_S[run.paradigm] if first else CACHED_COMPILE_S),
               gpu_s=gpu_s, floor_s=floor_s, end_s=TRAIN_END_S, trunk=run.trunk,
               evaluate=run.evaluate)


def eval_job(run, compiled: set) -> Job:
    """Sampling `eval.num_samples` images per weight set in batches of at most 64, at the
    measured sampler's FLOP rate or its per-layer latency, whichever is slower."""
    from imgsynth import phema, registry
    key = f"eval-{run.paradigm}-{run.size}"
    first = key not in compiled
    compiled.add(key)
    config = run.config
    images = config.eval.num_samples * len(config.eval.weights)
    per_image = registry.paradigm_module(config).inference_flops(config)
    rate = SAMPLE_IMAGES_PER_S[run.paradigm] * measured_inference_flops(run.paradigm)
    batches = math.ceil(images / 64)
    snapshot_bytes = (len(config.ema.sigma_rels) * run.params * 4 * (
        1 if phema.all_tracked(config.ema.candidates, config.ema.sigma_rels)
        else config.ema.snapshots) if config.get("ema") else 0)
    tokens = (config.data.resolution // config.autoencoder.downsample) ** 2
    steps = config.sampler.steps or tokens   # next-token: one step a token
    per_layer_step = SAMPLE_LATENCY_S[run.paradigm] / (MEASURED_SAMPLER_STEPS[run.paradigm]
                                                       * MEASURED_DEPTH)
    return Job(name=f"eval {run.name}", kind="eval", key=key,
               start_s=START_S + (COMPILE_S[run.paradigm] if first else CACHED_COMPILE_S),
               gpu_s=images * per_image / rate,
               floor_s=batches * steps * config.model.depth * per_layer_step,
               end_s=EVAL_FIXED_S + snapshot_bytes / SNAPSHOT_READ_BYTES_PER_S)


def measured_inference_flops(paradigm: str) -> float:
    """FLOPs per image of the model whose sampling rate the H200 measured (device_check)."""
    import device_check
    from imgsynth import registry
    config = device_check.model_config(paradigm, smoke=False, global_batch_size=64)
    return registry.paradigm_module(config).inference_flops(config)


def _gpu_shares(jobs: Sequence[Job]) -> dict[str, float]:
    """Water-filling: the GPU split evenly among the jobs at work, except that a job bound by
    its floor takes only the share that keeps pace with it and leaves the rest to the others."""
    want = {j.name: (j.gpu_s / j.floor_s if j.floor_s > 0 else math.inf) for j in jobs}
    shares, free, open_ = {}, 1.0, sorted(jobs, key=lambda j: want[j.name])
    while open_:
        even = free / len(open_)
        j = open_[0]
        if want[j.name] <= even:
            shares[j.name] = want[j.name]
            free -= want[j.name]
            open_.pop(0)
        else:
            for j in open_:
                shares[j.name] = even
            break
    return shares


def simulate(runs: Sequence, parallel: int, dt: float = 0.05) -> dict:
    """Seconds from the launcher's start to its last evaluation, and where they went."""
    compiled: set = set()
    trunks = sorted((r for r in runs if r.role == "trunk"), key=lambda r: -r.own_flops)
    order = [*trunks, *(r for r in runs if r.role != "trunk")]
    jobs = {r.name: train_job(r, compiled) for r in order}
    by_name = {r.name: r for r in runs}
    for r in runs:
        if r.trunk:
            jobs[r.name].fork = r.fork_step / by_name[r.trunk].steps
    queue = [jobs[r.name] for r in order]
    active: list[Job] = []
    t = 0.0
    while queue or active:
        for job in list(queue):
            if len(active) >= parallel:
                break
            trunk = jobs.get(job.trunk)   # a branch waits for its trunk's fork checkpoint
            if trunk is not None and not (trunk.phase in ("end", "done") or (
                    trunk.phase == "work" and trunk.progress >= job.fork)):
                continue
            queue.remove(job)
            job.phase, job.left = "start", job.start_s
            active.append(job)
        shares = _gpu_shares([j for j in active if j.phase == "work"])
        for job in list(active):
            if job.phase == "work":
                rate = min(shares[job.name] / job.gpu_s if job.gpu_s else math.inf,
                           1 / job.floor_s if job.floor_s else math.inf)
                job.progress += dt * rate if math.isfinite(rate) else 1.0
                if job.progress >= 1.0:
                    job.phase, job.left = "end", job.end_s
            else:
                job.left -= dt
                if job.left <= 0 and job.phase == "start":
                    job.phase = "work"
                elif job.left <= 0 and job.phase == "end":
                    job.phase = "done"
                    active.remove(job)
                    if job.kind == "train" and job.evaluate:
                        queue.insert(0, eval_job(by_name[job.name], compiled))
        t += dt
    return {"grid_s": t}


def estimate(runs: Sequence, parallel: int, *, images: int = R32_IMAGES,
             cores: int = 16) -> dict:
    """The whole call, itemised (seconds)."""
    items = {
        "start_env_peak_s": START_S + ENV_S,
        # generated by cores - 1 processes; the main one encodes and writes
        "data_s": BUILD_FIXED_S + images / (BUILD_IMAGES_PER_S_PER_PROCESS * max(1, cores - 1)),
        "shipped_s": SHIPPED_S,
        "launcher_start_s": LAUNCHER_START_S,
        # the launcher's stages, one process per autoencoder side by side: encoding, the peak
        "stages_encode_s": START_S + ENCODE_COMPILE_S + images / ENCODE_IMAGES_PER_S + ENV_S,
        **simulate(runs, parallel),
        "report_s": REPORT_S,
    }
    flops = sum(r.own_flops for r in runs)
    return {"train_flops": flops, "top_budget": max(r.budget for r in runs if r.role != "trunk"),
            "runs": len(runs), "evaluations": sum(r.evaluate for r in runs),
            "eta_s": round(sum(items.values()), 1),
            "items": {k: round(v, 1) for k, v in items.items()},
            # the GPU's training work at the assumed rate, rematerialisation included
            "gpu_train_s": round(sum(train_job(r, set()).gpu_s for r in runs), 1),
            "parallel": parallel,
            "sources": SOURCES}
