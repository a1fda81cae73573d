"""The fork server: fine-tuning jobs run through the rule's script (workflow_scripts/finetune.py)
in a fork of it give what they give in-process; exit statuses, errors, stale code, a server that
cannot start, concurrent jobs and killed clients; the server runs the target its client names,
and the workflow's modules import one another without a cycle.

Each test gets its own server dir (MINIALBERT_FORKSERVER_DIR), and its servers are terminated.
"""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fork_servers import alive, private_server_dir, server_pids, wait_until

from minialbert.workflow import forkserver

REPO = Path(__file__).resolve().parent.parent
# the entry point as Snakemake runs it, with a plain object in place of the `snakemake` one
DRIVER = """
import json, runpy, sys
from types import SimpleNamespace
job = json.loads(sys.argv[1])
snakemake = SimpleNamespace(rule="finetune", output=[job["output"]], threads=1, log=[job["log"]],
                            scriptdir=job["scriptdir"], params=SimpleNamespace(job_config=job["job_config"]))
runpy.run_path(job["scriptdir"] + "/finetune.py", init_globals={"snakemake": snakemake}, run_name="__main__")
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server runs on Linux only")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny MiniALBERT model dir and a prepared SST-2 task."""
    from test_finetune import WORDS, make_tokenizer

    from minialbert import MiniAlbertConfig, MiniAlbertForMaskedLM
    from minialbert.tasks import parse_task_spec, prepare_task

    root = tmp_path_factory.mktemp("world")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = MiniAlbertConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                              use_adapter=False, reduction_factor=4)
    MiniAlbertForMaskedLM(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    rng = random.Random(0)
    (root / "SST-2").mkdir()
    for split, n in (("train", 16), ("dev", 8)):
        rows = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + f"\t{i % 2}" for i in range(n)]
        (root / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    spec = {"name": "sst2", "source": "glue_dir", "glue_task": "sst2", "path": str(root / "SST-2")}
    prepare_task(parse_task_spec(spec), root / "task")
    return {"model": root / "model", "task": root / "task"}


@pytest.fixture
def server_dir(monkeypatch):
    """A server dir of this test alone; its servers are terminated at teardown."""
    with private_server_dir() as path:
        monkeypatch.setenv(forkserver.DIR_VARIABLE, str(path))
        monkeypatch.delenv(forkserver.SWITCH, raising=False)
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
        yield path


def job_config(world: dict[str, Path], **overrides) -> str:
    command = {"model": str(world["model"]), "task": str(world["task"]), "mode": "full", "lr": 1e-3, "seed": 3,
               "epochs": 1, "batch_size": 4, "max_length": 32, **overrides}
    return json.dumps({"command": command})


def start_job(workdir: Path, config: str, name: str = "run", **env) -> subprocess.Popen:
    """A fine-tuning job through the rule's script, in `workdir`."""
    job = {"output": str(workdir / name / "metrics.json"), "log": str(workdir / "logs" / f"{name}.log"),
           "scriptdir": str(REPO / "workflow_scripts"), "job_config": config}
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(job)], cwd=workdir,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_job(workdir: Path, config: str, name: str = "run", **env) -> tuple[int, str]:
    """(exit status, the job's log)"""
    proc = start_job(workdir, config, name, **env)
    out, _ = proc.communicate(timeout=300)
    log = (workdir / "logs" / f"{name}.log").read_text()
    return proc.returncode, out + log


FORKED = "forked by the fork server"


def test_a_job_through_the_server_writes_what_it_writes_in_process(world, server_dir, tmp_path):
    status, log = run_job(tmp_path, job_config(world), "forked")
    assert status == 0, log
    assert FORKED in log and len(server_pids(server_dir)) == 1
    status, log = run_job(tmp_path, job_config(world), "in_process", **{forkserver.SWITCH: "0"})
    assert status == 0, log
    assert FORKED not in log
    forked, in_process = (json.loads((tmp_path / name / "metrics.json").read_text())
                          for name in ("forked", "in_process"))
    assert forked["train_steps"] > 0
    for key in ("dev", "final_train_loss", "config_hash", "trainable_params", "train_steps"):
        assert forked[key] == in_process[key], key


def test_the_server_serves_the_next_job_and_reports_failures(world, server_dir, tmp_path):
    assert run_job(tmp_path, job_config(world), "first")[0] == 0
    (server,) = server_pids(server_dir)
    status, log = run_job(tmp_path, job_config(world, model=str(tmp_path / "missing")), "config_error")
    assert status == 2 and FORKED in log
    assert "minialbert finetune: error: --model" in log and "Traceback" not in log
    status, log = run_job(tmp_path, "not json", "exception")
    assert status == 1 and "Traceback" in log and "JSONDecodeError" in log
    assert server_pids(server_dir) == [server]  # one server took them all


def test_a_signal_death_is_reported_as_128_plus_the_signal():
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _, wait_status = os.waitpid(pid, 0)
    assert forkserver.exit_status(wait_status) == 128 + signal.SIGKILL
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert forkserver.exit_status(os.waitpid(pid, 0)[1]) == 3


def test_edited_code_makes_the_server_exit_and_a_new_one_start(world, server_dir, tmp_path):
    assert run_job(tmp_path, job_config(world), "before")[0] == 0
    (old,) = server_pids(server_dir)
    edited = REPO / "minialbert" / "workflow" / "__init__.py"
    st = edited.stat()
    try:
        os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        status, log = run_job(tmp_path, job_config(world), "after")
    finally:
        os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert status == 0 and FORKED in log
    (new,) = server_pids(server_dir)
    assert new != old
    wait_until(lambda: not alive(old))


@pytest.mark.parametrize("failure, message", [
    ("not private", "not a private dir"),
    ("dies at start", "the server exited with status 1"),
])
def test_a_server_that_cannot_start_leaves_the_job_to_run_in_process(world, server_dir, tmp_path, failure, message):
    if failure == "not private":
        server_dir.chmod(0o755)
    else:
        forkserver.Paths.for_workdir(str(tmp_path)).pid.mkdir()  # the server cannot write its pid file
    status, log = run_job(tmp_path, job_config(world))
    server_dir.chmod(0o700)
    assert status == 0, log
    assert "fork server unavailable" in log and message in log and FORKED not in log
    assert (tmp_path / "run" / "metrics.json").exists()


def test_a_socket_path_too_long_is_refused_naming_the_variable(server_dir, monkeypatch):
    monkeypatch.setenv(forkserver.DIR_VARIABLE, str(server_dir / ("x" * 90)))
    with pytest.raises(forkserver.ForkServerError, match=forkserver.DIR_VARIABLE):
        forkserver.Paths.for_workdir(".")


def test_two_jobs_at_once_start_one_server_and_run_side_by_side(world, server_dir, tmp_path):
    jobs = [start_job(tmp_path, job_config(world, seed=seed), f"seed{seed}") for seed in (1, 2)]
    assert [job.wait(timeout=300) for job in jobs] == [0, 0]
    assert len(server_pids(server_dir)) == 1
    server_log = (tmp_path / "logs" / "forkserver.log").read_text()
    assert server_log.count("listening on") == 1 and server_log.count("exit status 0") == 2
    seeds = {json.loads((tmp_path / f"seed{s}" / "metrics.json").read_text())["seed"] for s in (1, 2)}
    assert seeds == {1, 2}


def test_killing_the_client_terminates_its_job(world, server_dir, tmp_path):
    client = start_job(tmp_path, job_config(world, epochs=100000), "long")
    log = tmp_path / "logs" / "long.log"
    wait_until(lambda: log.exists() and FORKED in log.read_text(), timeout=120)
    job = int(log.read_text().split(FORKED)[0].split("running in pid ")[-1].split(",")[0])
    assert alive(job)
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=30)
    wait_until(lambda: not alive(job))
    server_log = (tmp_path / "logs" / "forkserver.log").read_text()
    assert f"job {job}: its client is gone" in server_log


def test_an_idle_server_exits_and_removes_its_files(server_dir, tmp_path):
    paths = forkserver.Paths.for_workdir(str(tmp_path))
    server = subprocess.Popen([sys.executable, "-m", "minialbert.workflow.forkserver", "--socket", str(paths.socket),
                               "--pid-file", str(paths.pid), "--idle", "0.5"], cwd=tmp_path)
    assert server.wait(timeout=120) == 0
    assert not paths.socket.exists() and not paths.pid.exists()


def test_the_job_entry_point_decides_without_importing_torch(server_dir):
    code = ("import sys; import minialbert.workflow.launch, minialbert.workflow.forkserver as f; f.fingerprint(); "
            "f.Paths.for_workdir('.'); assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "assert 'minialbert.workflow.jobs' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_server_runs_the_target_its_client_names(server_dir, tmp_path):
    """The server knows no rule: it imports the "module:function" the client sends and calls it on the job."""
    code = ("import sys; from types import SimpleNamespace as NS; from minialbert.workflow import forkserver; "
            "job = NS(rule='any_rule', output=['out'], threads=1, params=NS(job_config='{}')); "
            "status = forkserver.submit('builtins:print', job); assert status == 0, status")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert FORKED in proc.stdout
    assert "namespace(rule='any_rule', output=['out'], threads=1, params=namespace(job_config='{}'))" in proc.stdout
    assert "rule any_rule -> builtins:print" in (tmp_path / "logs" / "forkserver.log").read_text()


def module_imports(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, at the top or inside functions (relative imports resolved)."""
    root = package.parent
    names = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in package.rglob("*.py")}
    graph = {}
    for name, path in names.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module
                if node.level:  # from .x import y: relative to this module's package
                    module = ".".join(base[:len(base) - node.level + 1] + ([module] if module else []))
                imported = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for imp in imported:
                while imp and imp not in names:
                    imp = imp.rpartition(".")[0]
                if imp and imp != name:
                    found.add(imp)
        graph[name] = found
    return graph


def test_the_workflow_modules_import_one_another_without_a_cycle():
    """jobs, launch and forkserver (function-level imports included): the fork server imports its
    target by name when a job runs, never the runners' module."""
    graph = module_imports(REPO / "minialbert")
    assert "minialbert.workflow.jobs" not in graph["minialbert.workflow.forkserver"]

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    for module in graph:
        if module.startswith("minialbert.workflow"):
            assert module not in reachable(module), f"{module} is on an import cycle"
