"""Fault drills of a multi-process job: 2 trainer processes × 2 CPU devices joined by
`jax.distributed` (gloo collectives), as tests/test_multihost.py runs them, on one machine.

    python benchmarks/pod_drills.py [--steps=16] [--workdir=DIR]     (also run by fault_drills.py)

- kill -9 of one process: the other must stop on its own (seconds until the last survivor
  exited), with status `failed` naming the lost process and the checkpoint to resume from; the
  rerun must end bit-exact with an uninterrupted 2-process run (rows, arrays, data position);
- SIGTERM to one process: every process must checkpoint the same step and stop `pending`; the
  rerun must end bit-exact too;
- processes started with settings that disagree (a config key, the process count, the
  coordinator's address): every process refuses in one line, exit code 2, naming the difference.

Last line: one JSON object (peer_kill_stopped_s, peer_kill_resume_bit_exact,
preempt_one_host_same_step, preempt_one_host_resume_bit_exact, pod_bad_inputs_one_line, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fault_drills as drills  # noqa: E402

PROCESSES, DEVICES = 2, 2
KILL_AT = 6   # after the checkpoint at step 4, before the one at 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CACHE_ENV = "POD_DRILLS_CACHE"


def pod_env(i: int, coordinator: str, **extra: str) -> dict[str, str]:
    """Process `i` of a 2-process job on this machine. Optimisation level 0 and a compilation
    cache shared by the drills' runs (in $POD_DRILLS_CACHE): compiling, not training, is what
    takes the time on a small machine."""
    env = drills.env()
    if os.environ.get(CACHE_ENV):
        env.update(JAX_COMPILATION_CACHE_DIR=os.environ[CACHE_ENV],
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES} "
                         "--xla_backend_optimization_level=0",
               PJRT_NPROC="1", TF_CPP_MIN_LOG_LEVEL="2", IMGSYNTH_COORDINATOR=coordinator,
               IMGSYNTH_NUM_PROCESSES=str(PROCESSES), IMGSYNTH_PROCESS_ID=str(i))
    return {**env, **extra}


def start_pod(workdir: str, steps: int, log: str, *, extra=(), env_of=None) -> list:
    """The processes of one job; `extra[i]`: argv added to process i, `env_of(i)`: its env."""
    coordinator = f"127.0.0.1:{free_port()}"
    procs = []
    for i in range(PROCESSES):
        env = env_of(i, coordinator) if env_of else pod_env(i, coordinator)
        argv = drills.train_argv(workdir, steps, *(extra[i] if extra else ()))
        with open(f"{log}.{i}", "ab") as f:
            procs.append(subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                                          cwd=drills.REPO, stdin=subprocess.DEVNULL))
    return procs


def wait_all(procs, timeout_s: float = 900.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def finish_pod(workdir: str, steps: int, log: str) -> None:
    """Runs (or resumes) the job to the end; raises unless every process ends done."""
    codes = wait_all(start_pod(workdir, steps, log))
    status = status_of(workdir)
    if any(codes) or status["status"] != "done":
        raise RuntimeError(f"{workdir}: exit codes {codes}, status {status['status']} "
                           f"({status.get('reason')}); see {log}.*")


def status_of(workdir: str) -> dict:
    try:
        with open(os.path.join(workdir, "status.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"status": "missing", "reason": "no status.json"}


def checkpoint_steps(workdir: str) -> list[int]:
    return [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]


def records(workdir: str) -> list[dict]:
    """processes/<i>.json: what each process last recorded."""
    return [json.load(open(os.path.join(workdir, "processes", f"{i}.json")))
            for i in range(PROCESSES)]


def reach(procs, workdir: str, step: int) -> None:
    if not drills.wait(procs[0], lambda: drills.last_step(workdir) >= step, timeout_s=900):
        raise RuntimeError(f"{workdir}: the job ended before step {step}")


# ---- The drills ---------------------------------------------------------------------------------

def peer_kill_drill(tmp: str, steps: int, reference: futures.Future, victim: int = 1) -> dict:
    """kill -9 of process `victim` after step KILL_AT; the survivor must end itself. Process 1
    lost: process 0's watchdog records it. Process 0 (the coordinator) lost: JAX's runtime aborts
    process 1 at once, before it can write anything (the local launcher then names the lost
    process from the exit codes)."""
    work = os.path.join(tmp, f"peer-kill-{victim}")
    log = work + ".log"
    procs = start_pod(work, steps, log)
    reach(procs, work, KILL_AT)
    procs[victim].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    codes = wait_all(procs, timeout_s=600)
    stopped_s = time.monotonic() - t0
    status = status_of(work)
    named = (status["status"] == "failed"
             and f"lost process {victim} of {PROCESSES}" in (status.get("reason") or ""))
    resume = status.get("resume_step")
    completed = max(checkpoint_steps(work), default=None)   # what the rerun will start from
    print(f"  kill -9 of process {victim}: the other exited {stopped_s:.1f} s later "
          f"(exit codes {codes}); status {status['status']}: {status.get('reason')}", flush=True)
    finish_pod(work, steps, log)
    same, arrays = drills.same_run(reference.result(), work)
    return {"stopped_s": round(stopped_s, 1), "status_names_lost_process": named,
            "exit_codes": codes, "last_complete_checkpoint": completed,
            "resume_step": resume, "resume_bit_exact": same, "arrays_compared": arrays}


def preempt_drill(tmp: str, steps: int, reference: futures.Future, victim: int = 1) -> dict:
    """SIGTERM to process `victim` only: every process must save one step and stop pending."""
    work, log = os.path.join(tmp, "preempt"), os.path.join(tmp, "preempt.log")
    procs = start_pod(work, steps, log)
    reach(procs, work, KILL_AT)
    procs[victim].send_signal(signal.SIGTERM)
    codes = wait_all(procs, timeout_s=600)
    status, per_process = status_of(work), records(work)
    steps_saved = [r.get("step") for r in per_process]
    same_step = (codes == [0] * PROCESSES and status["status"] == "pending"
                 and all(r["status"] == "pending" for r in per_process)
                 and len(set(steps_saved)) == 1 and steps_saved[0] == status.get("step")
                 and os.path.isdir(os.path.join(work, "checkpoints", str(status.get("step")))))
    print(f"  SIGTERM to process {victim}: exit codes {codes}, status {status['status']} at step "
          f"{status.get('step')}, processes saved steps {steps_saved}", flush=True)
    finish_pod(work, steps, log)
    # The stopped-at step is kept as one of the last checkpoints: compare those both runs kept.
    both = sorted(set(checkpoint_steps(work)) & set(checkpoint_steps(reference.result())))
    same, arrays = drills.same_run(reference.result(), work, steps=both)
    same = same and steps in both
    return {"same_step": same_step, "step": status.get("step"), "resume_bit_exact": same,
            "arrays_compared": arrays}


def bad_setting_cases() -> dict:
    """Each way two processes of one job can disagree: (argv extras, env of process i)."""
    def env_with(changes):
        return lambda i, coordinator: pod_env(i, coordinator, **(changes(coordinator) if i == 1
                                                                 else {}))
    return {
        "a config key": ([(), ("--config.optimizer.lr=0.5",)], None, "optimizer.lr"),
        "the process count": ((), env_with(lambda c: {"IMGSYNTH_NUM_PROCESSES": "3"}),
                              "processes 3"),
        "the coordinator's address": ((), env_with(lambda c: {
            "IMGSYNTH_COORDINATOR": c.replace("127.0.0.1", "localhost")}), "coordinator"),
    }


def refused(code: int, output: str) -> bool:
    """Exit code 2 and one `error:` line, the last, no traceback (JAX's own INFO lines of
    joining the job may come before it)."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return code == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in output


def bad_settings_drill(tmp: str, steps: int) -> tuple[int, int, dict]:
    """Every process of each disagreeing job must exit 2 with one `error:` line naming the
    difference."""
    answered, failures = 0, {}
    for n, (name, (extra, env_of, named)) in enumerate(bad_setting_cases().items()):
        work, log = os.path.join(tmp, f"bad-settings-{n}"), os.path.join(tmp, f"bad{n}.log")
        codes = wait_all(start_pod(work, steps, log, extra=extra, env_of=env_of), timeout_s=600)
        outputs = [open(f"{log}.{i}").read() for i in range(PROCESSES)]
        ok = all(refused(c, out) and named in out for c, out in zip(codes, outputs))
        answered += ok
        print(f"  processes disagreeing in {name}: exit codes {codes}; "
              f"{outputs[0].strip().splitlines()[-1:]}"[:300], flush=True)
        if not ok:
            failures[name] = [out[-400:] for out in outputs]
    return answered, len(bad_setting_cases()), failures


def run(tmp: str, steps: int = 16) -> dict:
    """Every drill of this module; the keys fault_drills.py reports."""
    t0 = time.monotonic()
    os.makedirs(tmp, exist_ok=True)
    os.environ.setdefault(CACHE_ENV, os.path.join(tmp, "jax-cache"))
    with futures.ThreadPoolExecutor(2) as pool:
        reference = pool.submit(lambda: (finish_pod(os.path.join(tmp, "pod-reference"), steps,
                                                    os.path.join(tmp, "pod-reference.log"))
                                         or os.path.join(tmp, "pod-reference")))
        kill = peer_kill_drill(tmp, steps, reference)
        coordinator = peer_kill_drill(tmp, steps, reference, victim=0)
        preempt = preempt_drill(tmp, steps, reference)
    answered, tried, failures = bad_settings_drill(tmp, steps)
    return {"peer_kill_stopped_s": kill["stopped_s"],
            "peer_kill_status_names_lost_process": kill["status_names_lost_process"],
            "peer_kill_resume_step": kill["resume_step"],
            "peer_kill_resume_bit_exact": kill["resume_bit_exact"],
            "coordinator_kill_stopped_s": coordinator["stopped_s"],
            "coordinator_kill_survivor_exit": coordinator["exit_codes"][1],
            "coordinator_kill_resume_bit_exact": coordinator["resume_bit_exact"],
            "preempt_one_host_same_step": preempt["same_step"],
            "preempt_one_host_step": preempt["step"],
            "preempt_one_host_resume_bit_exact": preempt["resume_bit_exact"],
            "pod_arrays_compared": sum(d["arrays_compared"] for d in (kill, coordinator, preempt)),
            "pod_bad_inputs_one_line": answered, "pod_bad_inputs_tried": tried,
            "pod_bad_inputs_failed": sorted(failures),
            "pod_seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--workdir", help="keep the drills' runs here (default: a temporary folder)")
    args = p.parse_args()
    tmp = args.workdir or tempfile.mkdtemp(prefix="pod-drills-")
    os.makedirs(tmp, exist_ok=True)
    result = run(tmp, args.steps)
    if not args.workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
