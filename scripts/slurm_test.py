"""The SLURM integration test's driver (run by scripts/test-slurm.sh on a running local cluster).

Runs the tiny workflow through profiles/slurm-local with longer distillations and, while it runs:
  1. checks the multi-GPU launch of the first distill job SLURM starts (the one-node cluster runs
     one at a time): one srun task, one torchrun with --nproc_per_node = the job's `gpu`, that
     many worker processes;
  2. scancels that job after its first checkpoint: Snakemake must notice within a minute and
     resubmit, and the new attempt must resume at the student's latest checkpoint when the job
     was stopped (the one written on SIGTERM, if any);
  3. `scontrol requeue`s the other student's distill job after its first checkpoint (same job id, resumes),
     then lowers that job's time limit to 1 min: SLURM kills it (TIMEOUT), Snakemake resubmits,
     and the next attempt resumes again; each time at the latest checkpoint when the job stopped;
then the workflow must finish with all outputs; its fine-tuning runs (two seeds) must go in packed
allocations, at most a quarter as many as runs, each with one GPU. Then:
  4. adds a seed: only the new runs train, packed; one packed allocation is scancelled mid-way (some
     of its runs finished, some not), and its retry restores the finished runs (metrics.json
     byte-identical, not trained again) and trains only the unfinished ones;
  5. edits student-b and checks that exactly that student's jobs are submitted;
  6. retrains one packed run alone in its own allocation: the same scores, bit for bit.
Prints one summary line; exit status 1 on any failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / "profiles" / "slurm-local"
TINY = REPO / "tests" / "workflow_tiny.yaml"
SUMMARY = ["runs.csv", "summary.csv", "table.csv", "efficiency.csv", "score_vs_params.png"]
# long enough that the distillations outlive a 1-min SLURM time limit on this machine's 2 CPUs
NOTICE_LIMIT_S = 60
SUBMIT_RE = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
SEEDS = [0, 1]  # two seeds from the start: 24 runs, 4 packed allocations (one per model)


class Failure(Exception):
    pass


RUNS: list["Run"] = []  # interrupted on failure


def check(cond, message):
    if not cond:
        raise Failure(message)


def sh(*argv: str, check_rc: bool = True, stderr: bool = False) -> str:
    """stdout of a command (with its stderr appended if `stderr`)."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check_rc and proc.returncode != 0:
        raise Failure(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout + (proc.stderr if stderr else "")


def say(msg: str) -> None:
    print(f"[test-slurm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Run:
    """One snakemake invocation in the background, its output in a file that we poll."""

    def __init__(self, workdir: Path, config: Path, name: str, targets: list[str] | None = None,
                 options: list[str] | None = None):
        self.log = workdir / f"{name}.out"
        # targets first: --configfile takes every argument after it
        cmd = [sys.executable, "-m", "snakemake", *(targets or []), *(options or []),
               "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--workflow-profile", str(PROFILE), "--configfile", str(config)]
        say(f"{name}: {' '.join(cmd)}")
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.workdir = workdir
        RUNS.append(self)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def submissions(self) -> list[tuple[str, str, str]]:
        """(slurm job id, rule, wildcards) in submission order, from the plugin's log lines; a
        packed allocation (group job) is ("<group id>", "group", "") e.g. ("finetune-scratch")."""
        out = []
        for _, jobid, path in SUBMIT_RE.findall(self.text()):
            parts = Path(path).parts
            i = next(k for k, p in enumerate(parts) if p.startswith(("rule_", "group_")))
            if parts[i].startswith("group_"):  # group_<group id>_<rules>
                out.append((jobid, "group", parts[i][len("group_"):].rsplit("_", 1)[0]))
            else:
                out.append((jobid, parts[i][len("rule_"):], "/".join(parts[i + 1:-1])))
        return out

    def allocations(self) -> list[tuple[str, str]]:
        """(slurm job id, group id) of the packed fine-tuning allocations, in submission order."""
        return [(j, w) for j, r, w in self.submissions() if r == "group"]

    def jobs_of(self, rule: str, wildcards: str) -> list[str]:
        return [j for j, r, w in self.submissions() if r == rule and w == wildcards]

    def wait(self, what: str, cond, timeout: float, poll: float = 1.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = cond()
            if value:
                return value
            if self.proc.poll() is not None:
                value = cond()
                if value:
                    return value
                raise Failure(f"snakemake exited ({self.proc.returncode}) while waiting for {what}; "
                              f"tail of {self.log}:\n{self.text()[-3000:]}")
            time.sleep(poll)
        raise Failure(f"timed out after {timeout:.0f}s waiting for {what}; tail of {self.log}:\n{self.text()[-3000:]}")

    def finish(self, timeout: float) -> None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            raise Failure(f"snakemake did not finish within {timeout:.0f}s; tail:\n{self.text()[-3000:]}") from None
        check(rc == 0, f"snakemake exited with {rc}; tail of {self.log}:\n{self.text()[-4000:]}")


def job_state(jobid: str) -> dict[str, str]:
    out = sh("scontrol", "-o", "show", "job", jobid, check_rc=False)
    return dict(re.findall(r"(\w+)=(\S*)", out))


def checkpoints(workdir: Path, student: str) -> list[int]:
    steps = []
    for d in (workdir / "results" / "checkpoints" / "students").glob(f"{student}-*"):
        for c in d.glob("step-*"):
            if (c / "meta.json").is_file():
                steps.append(int(c.name.split("-")[1]))
    return sorted(steps)


class StopWatch(threading.Thread):
    """Watches SLURM job `jobid` from just before it is stopped: `step` is `student`'s latest
    checkpoint once the job has no process left (so including the one training writes on
    SIGTERM), the step at which its next run must resume. Read at once, before a new run can
    start and checkpoint (it needs the stopped job's CPUs; a requeued job is held ~2 min)."""

    def __init__(self, workdir: Path, student: str, jobid: str):
        super().__init__(daemon=True)
        self.workdir, self.student, self.jobid = workdir, student, jobid
        self.step: int | None = None
        check(job_processes(jobid), f"job {jobid} has no process to watch")
        self.start()

    def run(self) -> None:
        while job_processes(self.jobid):
            time.sleep(0.2)
        self.step = checkpoints(self.workdir, self.student)[-1]

    def stopped_at(self, timeout: float = 300) -> int:
        self.join(timeout)
        check(self.step is not None, f"job {self.jobid} still has processes {timeout:.0f}s after it was stopped")
        return self.step


def job_processes(jobid: str) -> list[tuple[int, list[str], dict[str, str]]]:
    """(pid, argv, environment) of every process that runs inside SLURM job `jobid`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (p / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in kv)
            argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if env.get("SLURM_JOB_ID") == jobid:
            found.append((int(p.name), argv, env))
    return found


def check_multi_gpu_launch(jobid: str, gpus: int) -> str:
    """One srun step with one task, one torchrun with nproc_per_node = gpus, gpus workers."""
    def torchruns():
        return [(pid, argv) for pid, argv, _ in job_processes(jobid)
                if "torch.distributed.run" in argv and "-m" in argv]
    # the workers exist once the first checkpoint was written; count twice, a second apart
    for _ in range(2):
        procs = job_processes(jobid)
        runs = torchruns()
        workers = [pid for pid, argv, env in procs if "LOCAL_RANK" in env and "minialbert.cli" in " ".join(argv)
                   and "torch.distributed.run" not in argv]
        check(len(runs) == 1, f"job {jobid}: expected exactly one torchrun, found {len(runs)}: {runs}")
        nproc = [a.split("=", 1)[1] for a in runs[0][1] if a.startswith("--nproc_per_node=")]
        check(nproc == [str(gpus)], f"job {jobid}: torchrun --nproc_per_node {nproc}, expected {gpus}")
        check(len(workers) == gpus, f"job {jobid}: {len(workers)} worker processes, expected {gpus}")
        time.sleep(1)
    steps = [line.split("|") for line in sh("sacct", "-n", "-P", "-j", jobid, "-o", "JobID,NTasks").split()]
    srun_steps = [s for s in steps if re.fullmatch(rf"{jobid}\.\d+", s[0])]
    check(len(srun_steps) == 1 and srun_steps[0][1] == "1",
          f"job {jobid}: expected one srun step with one task, sacct says {steps}")
    info = job_state(jobid)
    return f"1 srun task, 1 torchrun --nproc_per_node={gpus}, {gpus} workers (TRES {info.get('TRES', '?')})"


def calibrate(workdir: Path, config: dict, gpus: int, steps: int = 300) -> float:
    """Distillation steps per second of a tiny student, timed in a job like the workflow's."""
    student = config["students"]["student-b"]
    job = {"teacher": "results/teachers/teacher/model", "windows": f"results/windows/{student['windows']}",
           "student": student["student"], "loss": {},
           "training": dict(student["training"], max_steps=steps, checkpoint_interval=10 * steps, log_interval=steps,
                            checkpoint_dir=str(workdir / "calibration" / "checkpoints"))}
    cfg = workdir / "calibration" / "distill.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump(job))
    account = yaml.safe_load((PROFILE / "config.yaml").read_text())["x-cluster"]
    out = sh("srun", "-A", account["account"], "-p", account["gpu_partition"], f"--gpus={account['gpu_model']}:{gpus}",
             "--cpus-per-gpu=1", "--chdir", str(workdir), "--export=ALL,OMP_NUM_THREADS=1",
             sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
             "-m", "minialbert.cli", "distill", "--config", str(cfg), "--output", str(cfg.parent / "out"), stderr=True)
    # tqdm's last update: "300/300 [00:11<00:00, ...]"
    return steps / max(1.0, _elapsed(out, steps))


def _elapsed(text: str, steps: int) -> float:
    found = re.findall(rf"{steps}/{steps} \[(\d+):(\d+)<", text)
    if not found:
        raise Failure(f"calibration: no tqdm line for {steps} steps in:\n{text[-2000:]}")
    minutes, seconds = found[-1]
    return 60 * int(minutes) + int(seconds)


def expected_rerun(student: str) -> set[tuple[str, str]]:
    """The non-finetune jobs an edit of one student reruns (plus its fine-tuning runs)."""
    return {("distill", student), ("efficiency", student), ("aggregate", "")}


# ---------------------------------------------------------------------- fine-tuning runs

def run_attempts(workdir: Path) -> dict[str, list[tuple[str, str]]]:
    """Per fine-tuning run (model/task/mode/lr_seed): (SLURM job id, log text) of each attempt."""
    runs: dict[str, list[tuple[int, str, str]]] = {}
    root = workdir / "logs" / "finetune"
    for f in root.rglob("*.attempt*.log"):
        text = f.read_text(errors="replace")
        m = re.match(r"=== attempt (\d+) \(SLURM job (\d+)\) ===", text)
        if not m:
            continue
        run = str(f.relative_to(root)).rsplit(".attempt", 1)[0]
        runs.setdefault(run, []).append((int(m.group(1)), m.group(2), text))
    return {run: [(j, text) for _, j, text in sorted(attempts)] for run, attempts in runs.items()}


def runs_of(workdir: Path, jobid: str) -> dict[str, str]:
    """The runs SLURM job `jobid` started: run -> its log from that job."""
    return {run: text for run, attempts in run_attempts(workdir).items() for j, text in attempts if j == jobid}


def metrics_file(workdir: Path, run: str) -> Path:
    return workdir / "results" / "finetune" / f"{run}/metrics.json"


RESTORED = "not trained again"  # jobs.restore_finished_run's log line
TRAINED_RE = re.compile(r"^\[workflow\] trained \S+metrics\.json: ", re.M)  # jobs.finetune's last line


def check_allocation_gpus(jobid: str) -> str:
    """The allocation's TRES: one GPU, the one its runs use in turn."""
    tres = sh("sacct", "-X", "-n", "-P", "-j", jobid, "-o", "AllocTRES").strip()
    check("gres/gpu=1" in tres.split(","), f"packed allocation {jobid}: AllocTRES {tres!r}, expected gres/gpu=1")
    return tres


def main() -> int:
    t_start = time.monotonic()
    check(subprocess.run([sys.executable, str(REPO / "scripts" / "slurm_local_profile.py"), "--check"]).returncode == 0,
          "profiles/slurm-local is out of date with profiles/slurm")
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    gpus = int(profile["set-resources"]["distill"]["gpu"])
    runtime_min = int(profile["set-resources"]["distill"]["runtime"])

    workdir = Path(tempfile.mkdtemp(prefix="minialbert-slurm-test-", dir=os.environ.get("SLURM_TEST_TMP", "/var/tmp")))
    say(f"workdir {workdir}")
    config = yaml.safe_load(TINY.read_text())
    config["finetune"]["seeds"] = list(SEEDS)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    facts: dict[str, str] = {}

    # ------------------------------------------------------------------ run 0: data and teacher
    # The faults below need distillations that outlive a 1-min SLURM time limit but not by much
    # (the machine is shared, its speed varies): build the teacher first, time distillation steps
    # on the cluster, then size the students' max_steps from that.
    run0 = Run(workdir, config_path, "run0", targets=["results/teachers/teacher", "results/windows/w64"])
    run0.finish(timeout=900)
    subs0 = run0.submissions()
    speed = calibrate(workdir, config, gpus)
    interval = max(5, round(3 * speed))                       # a checkpoint every ~3 s
    # multiples of the interval, so that the last step is logged
    # ~200 s: requeue after the first checkpoint, then the requeued run must outlive a 1-min limit;
    # it runs while student-a's scancel is handled (up to a minute when the machine is loaded), so
    # it needs a margin beyond that
    # (SLURM kills 60-90 s after its start, ~15 s of which are startup)
    steps_b = interval * max(8, round(200 * speed / interval))
    # Whichever distillation SLURM starts first gets the scancel, the other the requeue and the
    # time limit (the node runs one at a time: 2 CPUs), so both are sized for the longer role.
    for name, steps in (("student-a", steps_b), ("student-b", steps_b)):
        config["students"][name]["training"].update(max_steps=steps, checkpoint_interval=interval,
                                                    log_interval=interval)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    say(f"distillation: {speed:.1f} steps/s on {gpus} fake GPUs -> {steps_b} steps per student, "
        f"a checkpoint every {interval}")

    # ------------------------------------------------------------------ run 1 with the faults
    run = Run(workdir, config_path, "run1")

    def running_job(student):
        def cond():
            ids = run.jobs_of("distill", student)
            if ids and job_state(ids[-1]).get("JobState") == "RUNNING" and checkpoints(workdir, student):
                return ids[-1]
            return None
        return cond

    # 1 + 2: the first distillation to run: launch check, then scancel
    def first_running():
        for student in ("student-a", "student-b"):
            jobid = running_job(student)()
            if jobid:
                return student, jobid
        return None

    sa, a1 = run.wait("a distill job to run and checkpoint", first_running, timeout=900, poll=0.5)
    sb = "student-b" if sa == "student-a" else "student-a"
    facts["launch"] = check_multi_gpu_launch(a1, gpus)
    say(f"{sa} distill = SLURM job {a1}: {facts['launch']}")
    tl = job_state(a1).get("TimeLimit", "")
    check(tl in (f"{runtime_min // 1440}-{runtime_min % 1440 // 60:02d}:{runtime_min % 60:02d}:00",
                 f"{runtime_min // 60:02d}:{runtime_min % 60:02d}:00"),
          f"job {a1}: TimeLimit {tl}, expected the profile's runtime {runtime_min} min")
    ckpt_before = checkpoints(workdir, sa)[-1]
    age = job_state(a1).get("RunTime", "?")
    stop_a = StopWatch(workdir, sa, a1)
    sh("scancel", a1)
    t0 = time.monotonic()
    say(f"scancel {a1} (latest checkpoint: step {ckpt_before})")
    run.wait(f"Snakemake to notice the scancel of {a1}",
             lambda: re.search(rf"SLURM-job '{a1}' failed, SLURM status is: 'CANCELLED'", run.text()), timeout=240)
    notice = time.monotonic() - t0
    # seen through squeue (the plugin's sacct path misreads "CANCELLED by 0"), also for a young job
    check(re.search(rf"SLURM-job '{a1}' failed, SLURM status is: 'CANCELLED'. Detailed failure reason unavailable "
                    r"\(status command is not 'sacct'\)", run.text()), f"the scancel of {a1} was not seen through squeue")
    say(f"Snakemake noticed the scancel after {notice:.0f}s")
    check(notice <= NOTICE_LIMIT_S, f"Snakemake noticed the scancel of {a1} after {notice:.0f}s (> {NOTICE_LIMIT_S}s)")
    a2 = run.wait(f"{sa}'s distill job to be resubmitted", lambda: (lambda ids: ids[-1] if len(ids) >= 2 else None)(
        run.jobs_of("distill", sa)), timeout=120)
    resubmit = time.monotonic() - t0
    say(f"resubmitted as SLURM job {a2} {resubmit:.0f}s after the scancel")

    # 3: the other distillation: requeue, then a runtime-limit kill of the same job
    b1 = run.wait(f"{sb}'s distill job to run and checkpoint", running_job(sb), timeout=900, poll=0.5)
    ckpt_b = checkpoints(workdir, sb)[-1]
    stop_b_requeue = StopWatch(workdir, sb, b1)
    sh("scontrol", "requeue", b1)
    say(f"scontrol requeue {b1} (latest checkpoint: step {ckpt_b})")
    say(f"{sb}: latest checkpoint when job {b1} stopped: step {stop_b_requeue.stopped_at()}")
    run.wait(f"job {b1} to run again after the requeue",
             lambda: job_state(b1).get("JobState") == "RUNNING" and job_state(b1).get("Restarts") == "1",
             # SLURM holds a requeued job ~2 min, then it waits for the node: the other student's
             # resubmitted distillation (~200 s of work) may hold both CPUs
             timeout=720)
    log_b = workdir / "logs" / "distill" / f"{sb}.log"
    run.wait(f"the requeued {sb} job to resume", lambda: log_b.is_file() and "resuming from checkpoint" in
             log_b.read_text(errors="replace"), timeout=180)
    check(run.jobs_of("distill", sb) == [b1], f"the requeue made Snakemake submit {sb} again: "
          f"{run.jobs_of('distill', sb)}")
    stop_b_timeout = StopWatch(workdir, sb, b1)
    sh("scontrol", "update", f"JobId={b1}", "TimeLimit=1")
    say(f"time limit of {b1} lowered to 1 min")
    t_limit = time.monotonic()
    run.wait(f"SLURM to kill {b1} at its time limit",
             lambda: re.search(rf"SLURM-job '{b1}' failed, SLURM status is: 'TIMEOUT'", run.text()), timeout=240)
    say(f"{b1} TIMEOUT noticed {time.monotonic() - t_limit:.0f}s after lowering its limit")
    b2 = run.wait(f"{sb}'s distill job to be resubmitted", lambda: (lambda ids: ids[-1] if len(ids) >= 2 else None)(
        run.jobs_of("distill", sb)), timeout=120)

    run.finish(timeout=1500)
    check("Falling back to 'sacct'" not in run.text(), "the plugin fell back to sacct for job status")
    subs1 = run.submissions()
    say(f"run 1 finished: {len(subs1)} sbatch submissions")
    # the tiny workflow's 14 cluster jobs besides fine-tuning and its 4 packed fine-tuning
    # allocations (one per model) once each, the two distillations twice (scancel, time limit)
    counts: dict[tuple[str, str], int] = {}
    for _, r, w in subs0 + subs1:
        counts[(r, w)] = counts.get((r, w), 0) + 1
    twice = {k for k, n in counts.items() if n == 2}
    check(len(counts) == 18 and twice == {("distill", sa), ("distill", sb)}
          and max(counts.values()) == 2, f"submissions per job: {counts}")
    check(not [s for s in subs1 if s[1] == "finetune"], "run 1 submitted fine-tuning runs on their own")
    allocations1 = run.allocations()
    runs1 = {jobid: runs_of(workdir, jobid) for jobid, _ in allocations1}
    n_runs = sum(map(len, runs1.values()))
    expected_runs = len(config["tasks"]) * len(SEEDS) * (2 + 2 * 2)  # teacher, scratch: full; students: both modes
    check(n_runs == expected_runs and len(list((workdir / "results" / "finetune").rglob("metrics.json"))) == n_runs,
          f"run 1: {n_runs} fine-tuning runs in its allocations, expected {expected_runs}")
    check(4 * len(allocations1) <= n_runs, f"run 1: {n_runs} runs in {len(allocations1)} allocations (> a quarter)")
    for jobid, group in allocations1:
        model = group[len("finetune-"):]
        check(runs1[jobid] and all(r.startswith(model + "/") for r in runs1[jobid]),
              f"allocation {jobid} ({group}) ran {sorted(runs1[jobid])}")
        check_allocation_gpus(jobid)
    facts["packing"] = f"finetune: {n_runs} runs in {len(allocations1)} allocations"
    say(f"run 1: {facts['packing']}, 1 GPU each ({check_allocation_gpus(allocations1[0][0])})")

    # outputs and logs of run 1
    for name in SUMMARY:
        f = workdir / "results" / "summary" / name
        check(f.is_file() and f.stat().st_size > 0, f"missing output {f}")
    students = sorted(p.name for p in (workdir / "results" / "students").iterdir())
    check(students == ["student-a", "student-b"], f"results/students holds {students}")
    for v in students:
        check((workdir / "results" / "students" / v / "model" / "config.json").is_file(), f"{v}: no model written")
        # a completed run removes its checkpoints (a forced rerun starts at step 0): only its job config is left
        left = list((workdir / "results" / "checkpoints" / "students").glob(f"{v}-*"))
        check(not [d for d in left if d.is_dir()] and [d for d in left if d.suffix == ".yaml"],
              f"{v}: after completion, expected only the job config in results/checkpoints, found {left}")
        # one writer: the training log's steps increase (N copies of the job would interleave)
        steps = [r["step"] for r in map(json.loads, (workdir / "results" / "students" / v / "train_log.jsonl")
                 .read_text().splitlines()) if "step" in r and r.get("event") != "resume"]
        max_steps = config["students"][v]["training"]["max_steps"]
        check(steps and steps == sorted(set(steps)) and steps[-1] == max_steps, f"{v}: train_log steps {steps}")

    def attempt_logs(v, jobid):
        """Contents of the per-attempt logs written by SLURM job `jobid` (one per run of it)."""
        found = []
        for f in sorted((workdir / "logs" / "distill").glob(f"{v}.attempt*.log"),
                        key=lambda f: int(re.search(r"attempt(\d+)", f.name).group(1))):
            text = f.read_text(errors="replace")
            if text.startswith("=== attempt ") and f"(SLURM job {jobid})" in text.splitlines()[0]:
                found.append(text)
        return found

    def resumed_step(text, what):
        m = re.findall(r"resuming from checkpoint \S+ at step (\d+)", text)
        check(m, f"{what}: no 'resuming from checkpoint' in its log")
        return int(m[-1])

    runs_a1, runs_a2 = attempt_logs(sa, a1), attempt_logs(sa, a2)
    runs_b1, runs_b2 = attempt_logs(sb, b1), attempt_logs(sb, b2)
    check(len(runs_a1) == 1 and len(runs_a2) == 1 and len(runs_b2) == 1 and len(runs_b1) == 2,
          f"per-attempt logs: {sa} {len(runs_a1)} of job {a1}, {len(runs_a2)} of {a2}; {sb} "
          f"{len(runs_b1)} of {b1} (expected 2: before and after the requeue), {len(runs_b2)} of {b2}")
    def check_resumed(text: str, what: str, stopped: StopWatch, seen_before: int) -> int:
        """The step a run resumed at, which must be the latest checkpoint when the job before it stopped."""
        step, at_stop = resumed_step(text, what), stopped.stopped_at()
        check(at_stop >= seen_before, f"{what}: checkpoint step {at_stop} when the job stopped, {seen_before} before")
        check(step == at_stop, f"{what}: resumed at step {step}, but the latest checkpoint when the job stopped "
              f"was step {at_stop}")
        return step

    step_a = check_resumed(runs_a2[0], f"{sa}, job {a2} after the scancel", stop_a, ckpt_before)
    step_b_requeue = check_resumed(runs_b1[1], f"{sb}, job {b1} after the requeue", stop_b_requeue, ckpt_b)
    step_b_timeout = check_resumed(runs_b2[0], f"{sb}, job {b2} after the time limit", stop_b_timeout,
                                   stop_b_requeue.step)
    for text in runs_a1 + runs_a2 + runs_b1 + runs_b2:
        launches = len(re.findall(rf"torch\.distributed\.run --standalone --nproc_per_node={gpus} ", text))
        check(launches == 1, f"{launches} torchrun launches in the log headed {text.splitlines()[0]}")
    check((workdir / "logs" / "distill" / f"{sa}.log").read_text() == runs_a2[0],
          f"logs/distill/{sa}.log is not the last attempt's log")

    # ------------------------------------------------------------------ run 2: add a seed, scancel a packed allocation
    before = {str(f): (f.read_bytes(), f.stat().st_mtime_ns) for f in (workdir / "results" / "finetune").rglob("metrics.json")}
    new_seed = max(SEEDS) + 1
    config["finetune"]["seeds"] = [*SEEDS, new_seed]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run2 = Run(workdir, config_path, "run2")

    def packed_mid_way():
        """A running allocation of a student (4 runs) with some runs finished and some not:
        (job id, group, {finished run: its metrics.json bytes})."""
        for jobid, group in run2.allocations():
            if not group.startswith("finetune-student") or job_state(jobid).get("JobState") != "RUNNING":
                continue
            started = runs_of(workdir, jobid)
            done = {r: metrics_file(workdir, r).read_bytes() for r in started if metrics_file(workdir, r).is_file()}
            if done and len(done) < 3:
                return jobid, group, done
        return None

    c1, cgroup, _ = run2.wait("a packed student allocation with a finished run", packed_mid_way, timeout=900, poll=0.2)
    sh("scancel", c1)
    end = time.monotonic() + 120
    while job_processes(c1) and time.monotonic() < end:
        time.sleep(0.2)
    # what c1 finished: the runs whose record it wrote (a run may finish between the poll and the
    # scancel; Snakemake deletes the metrics.json of all of them once it sees the failure)
    started_at_cancel = sorted(runs_of(workdir, c1))
    done_at_cancel = {}
    for r in started_at_cancel:
        record = metrics_file(workdir, r).with_name("finished.json")
        if record.is_file() and json.loads(record.read_text()).get("slurm_job") == c1:
            done_at_cancel[r] = json.loads(record.read_text())["metrics"].encode()
    check(0 < len(done_at_cancel) < 4, f"allocation {c1} had finished {sorted(done_at_cancel)} when cancelled")
    say(f"scancel packed allocation {c1} ({cgroup}) with {len(done_at_cancel)} run(s) finished: "
        f"{sorted(done_at_cancel)}; started: {started_at_cancel}")
    c2 = run2.wait(f"{cgroup}'s allocation to be resubmitted", lambda: next(
        (j for j, g in run2.allocations() if g == cgroup and j != c1), None), timeout=300)
    run2.finish(timeout=900)
    subs2 = run2.submissions()
    check(sorted({r for _, r, _ in subs2}) == ["aggregate", "group"],
          f"run 2 (a seed added) submitted {sorted((r, w) for _, r, w in subs2)}")
    trained2 = {r for jobid, _ in run2.allocations() for r, text in runs_of(workdir, jobid).items()
                if TRAINED_RE.search(text)}
    expected_new = {r for r in run_attempts(workdir) if r.endswith(f"_seed{new_seed}")}
    check(trained2 == expected_new and len(expected_new) == len(config["tasks"]) * 6,
          f"run 2 trained {sorted(trained2)}, expected the {len(expected_new)} runs of seed {new_seed}")
    for f, (data, mtime) in before.items():
        check(Path(f).read_bytes() == data and Path(f).stat().st_mtime_ns == mtime, f"run 2 touched {f}")
    retry = runs_of(workdir, c2)
    check(set(started_at_cancel) <= set(retry) and len(retry) == 4,
          f"the retry {c2} of {c1} ran {sorted(retry)}")
    for r, text in retry.items():
        if r in done_at_cancel:
            check(RESTORED in text and not TRAINED_RE.search(text), f"{r} finished in {c1} but {c2} trained it again")
            check(metrics_file(workdir, r).read_bytes() == done_at_cancel[r],
                  f"{r}: metrics.json after the retry differs from the one its finished run wrote")
        else:
            check(TRAINED_RE.search(text) and RESTORED not in text, f"{r} was unfinished in {c1}; {c2} did not train it")
    allocations2 = run2.allocations()
    facts["scancel"] = (f"scancel packed {c1} ({cgroup}) mid-way: retry {c2} restored {len(done_at_cancel)} finished, "
                        f"trained {len(retry) - len(done_at_cancel)} unfinished")
    facts["seed"] = (f"seed {new_seed} added: {len(trained2)} new runs trained in {len(allocations2)} allocations "
                     f"(1 resubmitted), none of the {len(before)} old")
    say(facts["scancel"] + "; " + facts["seed"])

    # ------------------------------------------------------------------ run 3: edit one student
    config["students"]["student-b"]["training"].update(max_steps=20, checkpoint_interval=10)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run3 = Run(workdir, config_path, "run3")
    run3.finish(timeout=900)
    subs3 = run3.submissions()
    got = sorted((r, w) for _, r, w in subs3)
    groups = [w for r, w in got if r == "group"]
    others = sorted((r, w) for r, w in got if r != "group")
    trained3 = {r for jobid, _ in run3.allocations() for r, text in runs_of(workdir, jobid).items()
                if TRAINED_RE.search(text)}
    n_b = len(config["tasks"]) * 2 * len(config["finetune"]["seeds"])
    check(others == sorted(expected_rerun("student-b")) and set(groups) == {"finetune-student-b"}
          and len(trained3) == n_b and all(r.startswith("student-b/") for r in trained3),
          f"run 3 submitted {got} and trained {sorted(trained3)}, expected distill/efficiency/aggregate "
          f"and the {n_b} runs of student-b")
    # the scheduler agrees: exactly these jobs ran under run 3's name
    uuid = set()
    for jobid, _, _ in subs3:
        uuid.add(job_state(jobid).get("JobName"))
    check(len(uuid) == 1, f"run 3 jobs have several names {uuid}")
    sacct_ids = {line.split("|")[0] for line in sh("sacct", "-X", "-n", "-P", "-a", "-S", "now-1hour",
                                                    "--name", uuid.pop(), "-o", "JobID").split()}
    check(sacct_ids == {j for j, _, _ in subs3}, f"sacct lists {sorted(sacct_ids)} for run 3, the log {subs3}")

    # ------------------------------------------------------------------ run 4: a packed run, alone
    alone = next(r for r in sorted(runs1[allocations1[0][0]]))
    packed = json.loads(metrics_file(workdir, alone).read_text())
    target = str(metrics_file(workdir, alone).relative_to(workdir))
    run4 = Run(workdir, config_path, "run4", targets=[target], options=["--forcerun", target])
    run4.finish(timeout=600)
    check(len(run4.allocations()) == 1 and list(runs_of(workdir, run4.allocations()[0][0])) == [alone],
          f"run 4 did not retrain {alone} alone: {run4.submissions()}")
    single = json.loads(metrics_file(workdir, alone).read_text())
    for key in ("dev", "test", "final_train_loss", "train_steps", "config_hash"):
        check(single[key] == packed[key], f"{alone}: {key} packed {packed[key]!r}, alone {single[key]!r}")
    facts["alone"] = f"{alone} alone = packed (dev {single['dev']})"

    rerun = ", ".join([f"{r}:{w}" if w else r for r, w in others] + [f"{n_b} x finetune:student-b/* in {len(groups)} allocations"])
    # "resumed at step N": N is also the latest checkpoint when the job was stopped (checked above)
    print(f"test-slurm: PASS | {len(subs0) + len(subs1)} sbatch jobs (18 + 2 resubmissions) | {facts['packing']} | scancel {a1} ({sa}) at age {age}: noticed "
          f"{notice:.0f}s, resubmitted {resubmit:.0f}s, resumed at step {step_a} (its checkpoint at the stop) | requeue {b1} ({sb}): "
          f"same job, resumed at step {step_b_requeue} (its checkpoint at the stop) | time limit {b1}: TIMEOUT, resubmitted as "
          f"{b2}, resumed at step {step_b_timeout} (its checkpoint at the stop) | "
          f"launch: {facts['launch']} | {facts['seed']} | {facts['scancel']} | "
          f"rerun after editing student-b: {len(subs3)} jobs ({rerun}) | {facts['alone']} | "
          f"{time.monotonic() - t_start:.0f}s", flush=True)
    if os.environ.get("SLURM_TEST_KEEP") != "1":
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        for r in RUNS:
            if r.proc.poll() is None:
                # SIGINT: snakemake scancels its jobs (SIGTERM would wait for them to finish)
                r.proc.send_signal(signal.SIGINT)
                try:
                    r.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    print(f"snakemake (pid {r.proc.pid}) still running 60 s after SIGINT: killed", flush=True)
        print(f"test-slurm: FAIL | {e}", flush=True)
        sys.exit(1)
