"""Fault drills on tiny synthetic runs, with real trainer processes, in a temporary directory.

    python benchmarks/fault_drills.py [--seed=0] [--kills=3] [--steps=40] [--workdir=DIR]

- kill -9 at seeded random points (one of them while a checkpoint is being saved), resuming after
  each: every metrics row (timings aside) and every array of every kept checkpoint must equal an
  uninterrupted run's, bit for bit, and so must the data iterator's position;
- the newest checkpoint of a killed run corrupted four ways (a truncated data file, a truncated
  index, a missing manifest/metadata file, a missing process file): the rerun must fall back to
  the previous checkpoint and end bit-exact too;
- a second trainer on a run another one is training must be refused (and the first one, sent
  SIGTERM, checkpoints and stops as `pending`);
- each bad input must be answered in one line with exit code 2;
- a workdir on a 3 MB tmpfs (mounted as root; skipped with the reason elsewhere): the first
  checkpoint does not fit, the trainer answers in one `error:` line naming the path and its free
  space, exit 1, no half-written checkpoint; once the tmpfs is enlarged the rerun finishes;
- the faults of a 2-process job (a lost peer, SIGTERM to one process, settings that differ):
  benchmarks/pod_drills.py.

Last line: one JSON object (kills, bit_exact, corruptions_recovered, corruptions_tried,
duplicate_trainers_refused, bad_inputs_one_line, bad_inputs_tried, disk_full_one_line,
peer_kill_stopped_s, peer_kill_resume_bit_exact, preempt_one_host_same_step,
preempt_one_host_resume_bit_exact, ...).
"""
from __future__ import annotations

import argparse
import json
from concurrent import futures
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


# ---- Trainer processes --------------------------------------------------------------------------

def train_argv(workdir: str, steps: int, *extra: str) -> list[str]:
    """A tiny synthetic flow run: size T, checkpoints every 4 steps, three kept."""
    return [PYTHON, "-m", "imgsynth.train",
            f"--config={REPO}/experiments/flow.py:size=T,steps={steps},global_batch_size=8",
            "--config.data.name=synthetic", "--config.data.synthetic_examples=64",
            "--config.log_every_steps=1", "--config.checkpoint_every_steps=4",
            "--config.keep_checkpoints=3", "--config.eval_every_steps=1000",
            "--config.eval_examples=16", "--config.peak_flops_per_s=1e11",
            "--config.optimizer.warmup_steps=2", f"--workdir={workdir}", *extra]


def env() -> dict[str, str]:
    out = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    out.pop("IMGSYNTH_VERBOSE", None)
    return out


def start(argv: list[str], log: str) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env(), cwd=REPO)


def last_step(workdir: str) -> int:
    """The last complete metrics row's step (-1: none yet)."""
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            lines = f.read().split("\n")[:-1]
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except ValueError:
            continue
    return -1


def wait(proc: subprocess.Popen, until, timeout_s: float = 1800.0, poll_s: float = 0.002) -> bool:
    """Polls `until()` while `proc` runs; False if the process ended first."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if until():
            return True
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{proc.args[:3]} did not get there in {timeout_s:.0f} s")
        time.sleep(poll_s)
    return False


def saving(workdir: str) -> bool:
    """Whether orbax is writing a checkpoint now (its temporary directory exists)."""
    try:
        return any("tmp" in name for name in os.listdir(os.path.join(workdir, "checkpoints")))
    except FileNotFoundError:
        return False


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def killed_run(workdir: str, steps: int, targets: list[tuple[int, bool]], log: str) -> int:
    """Runs to the end with a kill -9 at each (step, during_save) target; returns the kills."""
    kills = 0
    for step, during_save in targets:
        proc = start(train_argv(workdir, steps), log)
        reached = wait(proc, lambda: last_step(workdir) >= step)
        if reached and during_save:
            reached = wait(proc, lambda: saving(workdir))
        if not reached:
            raise RuntimeError(f"the run ended before the kill at step {step}; see {log}")
        kill(proc)
        kills += 1
    finish(workdir, steps, log)
    return kills


def finish(workdir: str, steps: int, log: str) -> None:
    rc = subprocess.run(train_argv(workdir, steps), stdout=open(log, "ab"),
                        stderr=subprocess.STDOUT, env=env(), cwd=REPO).returncode
    status = json.load(open(os.path.join(workdir, "status.json")))["status"]
    if rc or status != "done":
        raise RuntimeError(f"resume of {workdir} ended with exit code {rc}, status {status}; "
                           f"see {log}")


# ---- Comparing runs -----------------------------------------------------------------------------

def rows(workdir: str) -> list[dict]:
    """metrics.jsonl without the wall-clock fields, which no two runs share."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
                for line in f]


def checkpoint_arrays(workdir: str) -> dict:
    """{step: (flat arrays of the state, the data iterator's saved files)} of every checkpoint."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    out = {}
    root = os.path.join(workdir, "checkpoints")
    for step in sorted(int(s) for s in os.listdir(root) if s.isdigit()):
        with ocp.StandardCheckpointer() as c:   # onto this process's device: a checkpoint of
            path = os.path.join(root, str(step), "state")   # several processes restores too
            one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            tree = c.restore(path, jax.tree.map(lambda m: jax.ShapeDtypeStruct(
                m.shape, m.dtype, sharding=one), c.metadata(path).item_metadata.tree))
        flat = {jax.tree_util.keystr(k): np.asarray(v)
                for k, v in jax.tree_util.tree_leaves_with_path(tree)}
        data_dir = os.path.join(root, str(step), "data")
        data = {name: open(os.path.join(data_dir, name), "rb").read()   # not the commit marker:
                for name in sorted(os.listdir(data_dir))   # it names the folder and the time
                if name != "commit_success.txt"} if os.path.isdir(data_dir) else {}
        out[step] = (flat, data)
    return out


def same_run(a: str, b: str, steps=None) -> tuple[bool, int]:
    """(bit-exact, arrays compared): every row and every array of every checkpoint equal
    (`steps`: of those checkpoints only, which both must have)."""
    import numpy as np

    if rows(a) != rows(b):
        return False, 0
    ca, cb = checkpoint_arrays(a), checkpoint_arrays(b)
    if steps is not None:
        ca, cb = ({s: c[s] for s in steps if s in c} for c in (ca, cb))
    if sorted(ca) != sorted(cb):
        return False, 0
    n = 0
    for step in ca:
        (fa, da), (fb, db) = ca[step], cb[step]
        if sorted(fa) != sorted(fb) or da != db:
            return False, n
        for key in fa:
            if fa[key].dtype != fb[key].dtype or not np.array_equal(fa[key], fb[key]):
                return False, n
            n += 1
    return True, n


# ---- Corruptions --------------------------------------------------------------------------------

def _files(step_dir: str, match) -> list[str]:
    found = sorted(os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
                   if match(os.path.relpath(os.path.join(d, f), step_dir)))
    if not found:
        raise FileNotFoundError(f"no file to corrupt in {step_dir}")
    return found


def _truncate(paths: list[str]) -> None:
    for p in paths:
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) // 3)


def _remove(paths: list[str]) -> None:
    for p in paths:
        os.remove(p)


CORRUPTIONS = {
    # OCDBT keeps the arrays in d/<hash> data files and their index in manifest.ocdbt files.
    "truncated data file": lambda d: _truncate(sorted(   # the largest: it surely holds arrays
        _files(d, lambda r: "/d/" in f"/{r}"), key=os.path.getsize)[-1:]),
    "truncated index": lambda d: _truncate(_files(d, lambda r: r.endswith("manifest.ocdbt"))),
    "missing manifest/metadata": lambda d: _remove(_files(
        d, lambda r: r.endswith("_METADATA") or r.endswith("_CHECKPOINT_METADATA"))),
    "missing process file": lambda d: shutil.rmtree(_process_dir(d)),
}


def _process_dir(step_dir: str) -> str:
    for d, dirs, _ in os.walk(step_dir):
        for name in dirs:
            if name.startswith("ocdbt.process_"):
                return os.path.join(d, name)
    raise FileNotFoundError(f"no ocdbt.process_* folder in {step_dir}")


def corruption_drills(base: str, reference: str, ready: futures.Future, steps: int,
                      tmp: str) -> tuple[int, int]:
    """Copies of a killed run, each with its newest checkpoint corrupted one way, resumed side by
    side; each must end equal to the uninterrupted `reference` (done once `ready` is)."""
    def drill(i: int, name: str, corrupt) -> bool:
        work = os.path.join(tmp, f"corrupt{i}")
        shutil.copytree(base, work)
        root = os.path.join(work, "checkpoints")
        newest = max(int(s) for s in os.listdir(root) if s.isdigit())
        corrupt(os.path.join(root, str(newest)))
        try:
            finish(work, steps, os.path.join(tmp, f"corrupt{i}.log"))
            ready.result()
            ok = (os.path.isdir(os.path.join(work, "checkpoints.broken", str(newest)))
                  and same_run(reference, work)[0])
        except RuntimeError as e:
            print(f"  {name}: {e}", flush=True)
            ok = False
        print(f"  corruption '{name}' of checkpoint {newest}: "
              f"{'recovered' if ok else 'NOT recovered'}", flush=True)
        return ok

    with futures.ThreadPoolExecutor(len(CORRUPTIONS)) as pool:
        done = list(pool.map(drill, range(len(CORRUPTIONS)), *zip(*CORRUPTIONS.items())))
    return sum(done), len(CORRUPTIONS)


# ---- A second trainer, bad input ----------------------------------------------------------------

def duplicate_drill(tmp: str) -> dict:
    """A second trainer on a run the first one trains: refused in one line, exit 2; the first,
    sent SIGTERM, then checkpoints and stops as `pending`."""
    work, log = os.path.join(tmp, "duplicate"), os.path.join(tmp, "duplicate.log")
    first = start(train_argv(work, 10 ** 6), log)
    status = os.path.join(work, "status.json")
    wait(first, lambda: last_step(work) >= 1)
    second = run_cli(train_argv(work, 10 ** 6))
    refused = second[0] == 2 and one_line(second) and "in use by another process" in second[1]
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=300)
    after = json.load(open(status))
    stopped = (first.returncode == 0 and after["status"] == "pending"
               and str(after["step"]) in os.listdir(os.path.join(work, "checkpoints")))
    return {"duplicate_trainers_refused": refused, "sigterm_checkpointed": stopped,
            "refusal": second[1].strip()}


def run_cli(argv: list[str]) -> tuple[int, str]:
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env(), cwd=REPO,
                       stdin=subprocess.DEVNULL, timeout=600)
    return p.returncode, p.stdout.decode(errors="replace")


def one_line(result: tuple[int, str]) -> bool:
    lines = [line for line in result[1].splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("error:")


def bad_inputs(tmp: str, done_run: str) -> dict[str, list[str]]:
    """Each user mistake and the command line that makes it (`done_run`: a finished run)."""
    afile = os.path.join(tmp, "a-file")
    open(afile, "w").close()
    run = os.path.join(tmp, "bad-run")
    flow = f"--config={REPO}/experiments/flow.py:size=T,runlocal"
    m = lambda module, *a: [PYTHON, "-m", module, *a]   # noqa: E731
    return {
        "train: unknown config key": m("imgsynth.train", flow, "--config.optimizer.lrr=1",
                                       f"--workdir={run}"),
        "train: unknown size": m("imgsynth.train", flow.replace("size=T", "size=XXXL"),
                                 f"--workdir={run}"),
        "train: unknown paradigm": m("imgsynth.train", flow, "--config.paradigm=gan",
                                     f"--workdir={run}"),
        "train: negative budget": m("imgsynth.train", flow + ",budget=-1", f"--workdir={run}"),
        "train: budget below one step": m("imgsynth.train", flow + ",budget=1",
                                          f"--workdir={run}"),
        "train: workdir is a file": m("imgsynth.train", flow, "--config.data.name=synthetic",
                                      f"--workdir={afile}"),
        "train: different config on a finished run": train_argv(done_run, 40,
                                                                 "--config.optimizer.lr=0.5"),
        "train: no workdir": m("imgsynth.train", flow),
        "evaluate: no such run": m("imgsynth.evaluate", f"--workdir={run}-missing"),
        "train_autoencoder: unknown config key": m(
            "imgsynth.train_autoencoder", f"--config={REPO}/experiments/autoencoder.py:runlocal",
            "--config.no_such_key=1", f"--workdir={run}-ae"),
        "stages: unknown size": m("imgsynth.stages", flow.replace("size=T", "size=XXXL")),
        "data.build: unknown dataset": m("imgsynth.data.build", "--dataset=imagenet",
                                         f"--data_dir={tmp}"),
        "data.build: unknown shapes config": m("imgsynth.data.build", "--dataset=shapes",
                                               f"--data_dir={tmp}", "--config=r99"),
        "data.encode: no dataset": m("imgsynth.data.encode", f"--autoencoder={run}-ae",
                                     f"--data_dir={tmp}/none"),
        "launch: unknown grid": m("launch", "--grid=no_such_grid", f"--workdir={tmp}/study"),
        "launch: parallel 0": m("launch", "--grid=quickstart", f"--workdir={tmp}/study",
                                "--parallel=0"),
        "imgsynth-study: workdir is a file": m("launch.study", f"--workdir={afile}"),
        "imgsynth-study: unknown flag": m("launch.study", "--gird=quickstart"),
    }


def bad_input_drills(tmp: str, done_run: str) -> tuple[int, int, dict]:
    answered, failures = 0, {}
    cases = bad_inputs(tmp, done_run)
    with futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(run_cli, cases.values())))
    for name, result in results.items():
        ok = result[0] == 2 and one_line(result)
        answered += ok
        print(f"  {name}: exit {result[0]}, {result[1].strip().splitlines()[-1:] or ['']}"[:300],
              flush=True)
        if not ok:
            failures[name] = result[1][-500:]
    return answered, len(cases), failures


def disk_full_drill(tmp: str) -> dict:
    """A run on a 3 MB tmpfs (its first checkpoint does not fit), then on the same one at 64 MB."""
    mnt, run = os.path.join(tmp, "tmpfs"), os.path.join(tmp, "tmpfs", "run")
    os.makedirs(mnt, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt],
                           capture_output=True, text=True)
    if mount.returncode:
        return {"disk_full_one_line": None,
                "disk_full_skipped": f"cannot mount a tmpfs: {mount.stderr.strip()}"[:200]}
    try:
        code, out = run_cli(train_argv(run, 8))
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        half = [n for n in os.listdir(os.path.join(run, "checkpoints")) if "tmp" in n]
        one = (code == 1 and len(errors) == 1 and "Traceback" not in out and not half
               and run in errors[0] and " free" in errors[0])
        subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
        rerun = run_cli(train_argv(run, 8))[0] == 0
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
    print(f"disk full: exit {code}, {errors[-1:]}, half-written {half}, rerun ok {rerun}",
          flush=True)
    return {"disk_full_one_line": one, "disk_full_rerun_done": rerun}


# ---- The drills ---------------------------------------------------------------------------------

def killed_base(tmp: str, steps: int) -> str:
    """A run killed after its third checkpoint: the base the corruptions start from."""
    base, log = os.path.join(tmp, "base"), os.path.join(tmp, "base.log")
    proc = start(train_argv(base, steps), log)
    wait(proc, lambda: last_step(base) >= 13)   # checkpoints 4, 8 and 12 are written
    kill(proc)
    return base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kills", type=int, default=3, help="kill -9 points (one during a save)")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--workdir", help="keep the drills' runs here (default: a temporary folder)")
    args = p.parse_args()
    tmp = args.workdir or tempfile.mkdtemp(prefix="fault-drills-")
    os.makedirs(tmp, exist_ok=True)
    t0 = time.monotonic()
    rng = random.Random(args.seed)
    steps = args.steps

    targets = sorted(rng.sample(range(2, steps - 4), args.kills))
    during_save = rng.randrange(args.kills)
    plan = [(s, i == during_save) for i, s in enumerate(targets)]
    reference, killed = os.path.join(tmp, "reference"), os.path.join(tmp, "killed")
    # Independent drills side by side: the machine's cores, not one process, bound the time.
    with futures.ThreadPoolExecutor(4) as pool:
        ref = pool.submit(finish, reference, steps, os.path.join(tmp, "reference.log"))
        kills = pool.submit(killed_run, killed, steps, plan, os.path.join(tmp, "killed.log"))
        corruptions = pool.submit(lambda: corruption_drills(
            killed_base(tmp, steps), reference, ref, steps, tmp))
        duplicate = pool.submit(duplicate_drill, tmp).result()
        print(f"second trainer: {duplicate['refusal']}", flush=True)
        kills = kills.result()
        ref.result()
        bit_exact, arrays = same_run(reference, killed)
        print(f"kill -9 at {plan} (step, during a save): bit-exact {bit_exact} ({arrays} "
              "arrays)", flush=True)
        recovered, tried = corruptions.result()
    answered, bad_tried, failures = bad_input_drills(tmp, reference)
    disk = disk_full_drill(tmp)
    import pod_drills   # the multi-process drills (it imports this module's helpers)
    pod = pod_drills.run(os.path.join(tmp, "pod"))
    result = {"kills": kills, "kill_points": plan, "bit_exact": bit_exact,
              "arrays_compared": arrays, "corruptions_recovered": recovered,
              "corruptions_tried": tried,
              "duplicate_trainers_refused": duplicate["duplicate_trainers_refused"],
              "sigterm_checkpointed": duplicate["sigterm_checkpointed"],
              "bad_inputs_one_line": answered, "bad_inputs_tried": bad_tried,
              "bad_inputs_failed": sorted(failures), **disk, **pod, "seed": args.seed,
              "steps": steps,
              "seconds": round(time.monotonic() - t0, 1)}
    if not args.workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
