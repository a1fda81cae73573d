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
then the workflow must finish with all outputs. Finally it edits student-b and checks that exactly
that student's jobs are submitted. Prints one summary line; exit status 1 on any failure.
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
SUBMIT_RE = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


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
        """(slurm job id, rule, wildcards) in submission order, from the plugin's log lines."""
        out = []
        for _, jobid, path in SUBMIT_RE.findall(self.text()):
            parts = Path(path).parts
            i = next(k for k, p in enumerate(parts) if p.startswith("rule_"))
            out.append((jobid, parts[i][len("rule_"):], "/".join(parts[i + 1:-1])))
        return out

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
    """The non-finetune jobs an edit of one student reruns (plus its 4 fine-tuning runs)."""
    return {("distill", student), ("efficiency", student), ("aggregate", "")}


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
    # the tiny workflow's 26 cluster jobs once each, the two distillations twice (scancel, time limit)
    counts: dict[tuple[str, str], int] = {}
    for _, r, w in subs0 + subs1:
        counts[(r, w)] = counts.get((r, w), 0) + 1
    twice = {k for k, n in counts.items() if n == 2}
    check(len(counts) == 26 and twice == {("distill", sa), ("distill", sb)}
          and max(counts.values()) == 2, f"submissions per job: {counts}")

    # outputs and logs of run 1
    for name in SUMMARY:
        f = workdir / "results" / "summary" / name
        check(f.is_file() and f.stat().st_size > 0, f"missing output {f}")
    students = sorted(p.name for p in (workdir / "results" / "students").iterdir())
    check(students == ["student-a", "student-b"], f"results/students holds {students}")
    for v in students:
        check((workdir / "results" / "students" / v / "model" / "config.json").is_file(), f"{v}: no model written")
        ckpt_dirs = list((workdir / "results" / "checkpoints" / "students").glob(f"{v}-*"))
        check(len([d for d in ckpt_dirs if d.is_dir()]) == 1, f"{v}: checkpoint dirs {ckpt_dirs}")
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

    # ------------------------------------------------------------------ run 2: edit one student
    config["students"]["student-b"]["training"].update(max_steps=20, checkpoint_interval=10)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run2 = Run(workdir, config_path, "run2")
    run2.finish(timeout=900)
    subs2 = run2.submissions()
    got = sorted((r, w) for _, r, w in subs2)
    finetunes = [w for r, w in got if r == "finetune"]
    others = sorted((r, w) for r, w in got if r != "finetune")
    check(others == sorted(expected_rerun("student-b")) and len(finetunes) == 4
          and all(w.startswith("student-b_") for w in finetunes) and len(set(finetunes)) == 4,
          f"run 2 submitted {got}, expected distill/efficiency/4 finetunes of student-b and aggregate")
    # the scheduler agrees: exactly these jobs ran under run 2's name
    uuid = set()
    for jobid, _, _ in subs2:
        uuid.add(job_state(jobid).get("JobName"))
    check(len(uuid) == 1, f"run 2 jobs have several names {uuid}")
    sacct_ids = {line.split("|")[0] for line in sh("sacct", "-X", "-n", "-P", "-a", "-S", "now-1hour",
                                                    "--name", uuid.pop(), "-o", "JobID").split()}
    check(sacct_ids == {j for j, _, _ in subs2}, f"sacct lists {sorted(sacct_ids)} for run 2, the log {subs2}")

    rerun = ", ".join([f"{r}:{w}" if w else r for r, w in others] + ["4 x finetune:student-b_*"])
    # "resumed at step N": N is also the latest checkpoint when the job was stopped (checked above)
    print(f"test-slurm: PASS | {len(subs0) + len(subs1)} sbatch jobs (26 + 2 resubmissions) | scancel {a1} ({sa}) at age {age}: noticed "
          f"{notice:.0f}s, resubmitted {resubmit:.0f}s, resumed at step {step_a} (its checkpoint at the stop) | requeue {b1} ({sb}): "
          f"same job, resumed at step {step_b_requeue} (its checkpoint at the stop) | time limit {b1}: TIMEOUT, resubmitted as "
          f"{b2}, resumed at step {step_b_timeout} (its checkpoint at the stop) | "
          f"launch: {facts['launch']} | rerun after editing student-b: {len(subs2)} jobs ({rerun}) | "
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
