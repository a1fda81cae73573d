"""The shared training loop: data order and masking, schedule, checkpoints, resume, NaN stop, SIGTERM."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest

from minialbert.command_configs import TrainingConfig
import torch
from torch import nn

from minialbert.checkpoints import latest_checkpoint
from minialbert.data.mlm import ResumableBatches, SeededMLMCollator
from minialbert.training import (
    NonFiniteLossError,
    TrainingInterrupted,
    TrainingJob,
    run_training,
)
from minialbert.optim import build_optimizer, linear_schedule
from minialbert.utils import ConfigError
from distill_world import make_tokenizer, make_windows, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from datasets import load_from_disk

    root = tmp_path_factory.mktemp("training_data")
    tok = make_tokenizer(root / "tok")
    make_windows(root / "windows", tok, n=20)
    return tok, load_from_disk(str(root / "windows"))


class TinyMLM(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, vocab)

    def forward(self, batch):
        logits = self.out(self.norm(self.emb(batch["input_ids"])))
        return nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1))


def make_job(tok, ds, hook=None):
    torch.manual_seed(0)
    module = TinyMLM(len(tok))
    calls = {"n": 0}

    def compute_losses(m, batch):
        calls["n"] += 1
        loss = m(batch)
        extra = torch.zeros(())
        if hook is not None:
            extra = hook(calls["n"])
        return {"mlm": loss, "aux": extra, "total": loss + extra}

    saved = {}

    def save_model(dst):
        torch.save(module.state_dict(), dst / "weights.pt")
        saved["state"] = {k: v.clone() for k, v in module.state_dict().items()}

    return TrainingJob(module=module, compute_losses=compute_losses, save_model=save_model, dataset=ds,
                       tokenizer=tok), saved


def resolve_training_config(raw):
    return TrainingConfig.from_dict(raw, key="training")


def cfg(**kw):
    base = {"lr": 1e-2, "batch_size": 4, "max_steps": 6, "log_interval": 1, "checkpoint_interval": 2, "seed": 3,
            "device": "cpu"}
    return resolve_training_config({**base, **kw})


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="training.lr"):
        resolve_training_config({"lr": "fast", "max_steps": 1})
    with pytest.raises(ConfigError, match="training.max_steps / training.epochs"):
        resolve_training_config({"max_steps": 1, "epochs": 1})
    with pytest.raises(ConfigError, match="training.bogus"):
        resolve_training_config({"bogus": 1, "max_steps": 1})
    assert resolve_training_config({"epochs": 2}).mlm_probability == 0.15


def test_global_batches_are_split_alike_on_any_number_of_processes_and_resumable():
    """10 rows, global batch 4 in 2 micro-batches of 2: one process accumulating both sees the
    rows and masking seeds that two processes see, step by step; the short last batch (2 rows)
    is split alike; a resume skips whole steps."""
    one = ResumableBatches(10, 4, 2, seed=1).epoch_steps(0)
    two = [ResumableBatches(10, 4, 2, seed=1, rank=r, world_size=2).epoch_steps(0) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 3  # ceil(10 / 4) steps whatever the world size
    for step in range(3):
        assert one[step] == two[0][step] + two[1][step]  # rank r takes micro-batch r: same rows, same seeds
    assert [len(m) for step in one for m in step] == [2, 2, 2, 2, 1, 1]
    assert sorted(i for step in one for m in step for i, _ in m) == list(range(10))
    assert len({s for step in one for m in step for _, s in m}) == 6  # a masking seed per micro-batch
    assert ResumableBatches(10, 4, 2, seed=1).epoch_steps(0, start=1) == one[1:]
    assert ResumableBatches(10, 4, 2, seed=1).epoch_steps(1) != one  # a new permutation each epoch
    # a short last batch that does not split evenly is topped up from the epoch's start
    last = ResumableBatches(9, 4, 2, seed=1).epoch_steps(0)[-1]
    first_row = ResumableBatches(9, 4, 2, seed=1).epoch_steps(0)[0][0][0][0]
    assert [len(m) for m in last] == [1, 1] and last[1][0][0] == first_row


def test_batch_layout_keeps_the_global_batch_and_refuses_what_cannot_be_split():
    from minialbert.training import batch_layout

    # at most 48 a device: 4 micro-batches of 48 on 1, 2 or 4 processes (the paper's 192)
    assert [(x.micro_batch_size, x.accumulation) for x in (batch_layout(192, w, 48) for w in (1, 2, 4))] == \
        [(48, 4), (48, 2), (48, 1)]
    assert (batch_layout(192, 3, 48).micro_batch_size, batch_layout(192, 3, 48).accumulation) == (32, 2)
    assert (batch_layout(32, 1, None).micro_batch_size, batch_layout(32, 1, None).accumulation) == (32, 1)
    assert (batch_layout(32, 2, None).micro_batch_size, batch_layout(32, 2, None).accumulation) == (16, 1)
    assert (batch_layout(10, 1, 4).micro_batch_size, batch_layout(10, 1, 4).accumulation) == (2, 5)
    with pytest.raises(ConfigError, match=r"training.batch_size: the global batch \(6\) cannot be split evenly "
                                          r"over 4 processes.* or 1, 2, 3, 6 processes"):
        batch_layout(6, 4, None)


def test_collator_masks_reproducibly_and_lists_masked_positions(data):
    tok, ds = data
    rows = [dict(ds[i]) for i in range(6)]
    col = SeededMLMCollator(tok, 0.3)
    a = col([{**r, "_seed": 7} for r in rows])
    b = col([{**r, "_seed": 7} for r in rows])
    c = col([{**r, "_seed": 8} for r in rows])
    assert torch.equal(a["labels"], b["labels"]) and not torch.equal(a["labels"], c["labels"])
    flat = (a["labels"].view(-1) != -100).nonzero().squeeze(1)
    pos = a["masked_positions"]
    assert pos.numel() % 8 == 0 and torch.equal(pos[pos >= 0], flat) and (pos[flat.numel():] == -1).all()
    specials = a["input_ids"].new_tensor([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
    assert not torch.isin(a["input_ids"].view(-1)[flat], specials[2:]).any()


def test_optimizer_skips_decay_on_bias_and_layernorm_and_schedule_is_linear():
    m = TinyMLM(10)
    opt = build_optimizer(m, 1.0, 0.1)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert decayed == {id(m.emb.weight), id(m.out.weight)}
    assert opt.param_groups[1]["weight_decay"] == 0.0
    sched = linear_schedule(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])


def test_nonfinite_loss_stops_naming_step_and_component_and_keeps_checkpoint(data, tmp_path):
    tok, ds = data
    job, _ = make_job(tok, ds, hook=lambda n: torch.tensor(float("nan")) if n == 5 else torch.zeros(()))
    with pytest.raises(NonFiniteLossError, match=r"step 5: non-finite loss component\(s\) aux, total") as e:
        run_training(job, cfg(), output_dir=tmp_path, run_config={"x": 1})
    assert "step-00000004" in str(e.value)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-00000004"
    assert not (tmp_path / "model").exists()


def test_sigterm_checkpoints_stops_and_resume_matches_uninterrupted_run(data, tmp_path):
    tok, ds = data
    job, ref = make_job(tok, ds)
    run_training(job, cfg(), output_dir=tmp_path / "straight", run_config={"x": 1})

    def term(n):
        if n == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.zeros(())

    job, _ = make_job(tok, ds, hook=term)
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 3"):
        run_training(job, cfg(), output_dir=tmp_path / "cut", run_config={"x": 1})
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "step-00000003"
    job, resumed = make_job(tok, ds)
    metrics = run_training(job, cfg(), output_dir=tmp_path / "cut", run_config={"x": 1})
    assert metrics["steps"] == 6
    for k in ref["state"]:
        torch.testing.assert_close(resumed["state"][k], ref["state"][k])
    log = [json.loads(x) for x in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "event" not in r] == [1, 2, 3, 4, 5, 6]
    assert any(r.get("event") == "resume" for r in log)
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["tokens_seen"] == straight["tokens_seen"]
    assert math.isclose(metrics["total"], straight["total"], rel_tol=1e-5)


def sigterm_at(n_stop):
    """A compute_losses hook that sends SIGTERM during call `n_stop` (the step in flight is checkpointed)."""

    def hook(n):
        if n == n_stop:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.zeros(())

    return hook


def test_checkpoint_of_another_config_is_refused_but_operational_changes_resume(data, tmp_path):
    tok, ds = data
    job, _ = make_job(tok, ds, hook=sigterm_at(3))
    run_config = {"x": 1, "training": cfg(max_steps=4).to_dict()}
    with pytest.raises(TrainingInterrupted):
        run_training(job, cfg(max_steps=4), output_dir=tmp_path, run_config=run_config)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-00000003"
    job, _ = make_job(tok, ds)
    with pytest.raises(ConfigError, match="different config"):
        run_training(job, cfg(max_steps=4), output_dir=tmp_path, run_config={**run_config, "x": 2})
    # logging / checkpointing cadence does not change what is computed: resumed, not refused
    job, _ = make_job(tok, ds)
    changed = {"x": 1, "training": cfg(max_steps=4, log_interval=3).to_dict()}
    assert run_training(job, cfg(max_steps=4, log_interval=3), output_dir=tmp_path, run_config=changed)["steps"] == 4


def test_checkpoint_meta_names_resume_identity_and_legacy_config_hash_still_resumes(data, tmp_path):
    tok, ds = data
    job, _ = make_job(tok, ds, hook=sigterm_at(2))
    run_config = {"x": 1, "training": cfg(max_steps=4).to_dict()}
    with pytest.raises(TrainingInterrupted):
        run_training(job, cfg(max_steps=4), output_dir=tmp_path, run_config=run_config)
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    meta = json.loads((ckpt / "meta.json").read_text())
    from minialbert.utils import config_hash

    # the checkpoint hashes the config without operational keys: not metrics.json's config_hash
    assert "config_hash" not in meta and meta["resume_identity"] != config_hash(run_config)
    assert meta["layout"] == {"batch_size": 4, "world_size": 1, "micro_batch_size": 4, "accumulation": 1}
    # a checkpoint written before the rename carries its identity under `config_hash`
    meta["config_hash"] = meta.pop("resume_identity")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    job, _ = make_job(tok, ds)
    with pytest.raises(ConfigError, match="different config"):
        run_training(job, cfg(max_steps=4), output_dir=tmp_path, run_config={**run_config, "x": 2})
    job, _ = make_job(tok, ds)
    assert run_training(job, cfg(max_steps=4), output_dir=tmp_path, run_config=run_config)["steps"] == 4
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 2, "checkpoint": str(ckpt)} in log
    assert [r["step"] for r in log if "event" not in r] == [1, 2, 3, 4]


def test_epochs_and_gradient_accumulation(data, tmp_path):
    tok, ds = data  # 20 rows, global batch 8: 3 steps per epoch (8, 8, 4 rows), 2 micro-batches each
    job, _ = make_job(tok, ds)
    metrics = run_training(job, cfg(max_steps=None, epochs=2, batch_size=8, max_batch_per_device=4),
                           output_dir=tmp_path, run_config={"x": 1})
    assert metrics["steps"] == 6  # 2 epochs x ceil(20 / 8)
    assert metrics["batch_layout"] == {"batch_size": 8, "world_size": 1, "micro_batch_size": 4, "accumulation": 2}
    assert metrics["tokens_seen"] == sum(sum(r) for r in ds["attention_mask"]) * 2


def test_the_old_accumulation_key_is_refused_naming_its_successor():
    with pytest.raises(ConfigError, match="training.gradient_accumulation_steps: this key was renamed: use "
                                          "max_batch_per_device"):
        resolve_training_config({"max_steps": 1, "gradient_accumulation_steps": 2})


class DropoutMLM(TinyMLM):
    """TinyMLM with dropout: its masks come from the global RNG, which a resume must continue
    exactly where the checkpoint left it."""

    def __init__(self, vocab: int):
        super().__init__(vocab)
        self.dropout = nn.Dropout(0.3)

    def forward(self, batch):
        logits = self.out(self.dropout(self.norm(self.emb(batch["input_ids"]))))
        return nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1))


def test_a_resumed_run_logs_the_same_losses_as_an_uninterrupted_one_bit_for_bit(data, tmp_path):
    """Stopped (SIGTERM) in step 4 of 8 and resumed mid-epoch (20 rows, batch 4: 5 batches an
    epoch), with dropout, logging every 3 steps: every logged loss (the line at step 6 averages
    steps 4-6, across the stop) and the final weights equal the uninterrupted run's."""
    tok, ds = data

    def job_with_dropout(stop_at=None):
        torch.manual_seed(0)
        module = DropoutMLM(len(tok))
        saved, calls = {}, {"n": 0}

        def compute_losses(m, batch):
            calls["n"] += 1
            if calls["n"] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            loss = m(batch)
            return {"mlm": loss, "total": loss}

        def save_model(dst):
            saved["state"] = {k: v.clone() for k, v in module.state_dict().items()}

        return TrainingJob(module=module, compute_losses=compute_losses, save_model=save_model, dataset=ds,
                           tokenizer=tok), saved

    settings = cfg(max_steps=8, checkpoint_interval=100, log_interval=3)
    job, straight = job_with_dropout()
    run_training(job, settings, output_dir=tmp_path / "straight", run_config={"x": 1})
    job, _ = job_with_dropout(stop_at=4)
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 4"):
        run_training(job, settings, output_dir=tmp_path / "cut", run_config={"x": 1})
    job, resumed = job_with_dropout()
    run_training(job, settings, output_dir=tmp_path / "cut", run_config={"x": 1})

    def losses(out):
        return [(r["step"], r["mlm"]) for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
                if "event" not in r]

    assert losses(tmp_path / "cut") == losses(tmp_path / "straight")  # floats compared exactly
    assert [s for s, _ in losses(tmp_path / "cut")] == [3, 6, 8]
    for name, tensor in straight["state"].items():
        assert torch.equal(resumed["state"][name], tensor), name


def test_a_completed_run_removes_its_checkpoints_so_a_rerun_starts_at_step_0(data, tmp_path):
    """Checkpoints every 2 steps of 6: gone once the run completes (and the default checkpoint dir
    with them), so running the same config again (snakemake --forcerun) trains from step 0 and
    ends with the same weights; kept on request, they are marked finished and still not resumed."""
    tok, ds = data
    job, first = make_job(tok, ds)
    run_training(job, cfg(), output_dir=tmp_path / "out", run_config={"x": 1})
    assert not (tmp_path / "out" / "checkpoints").exists()
    job, again = make_job(tok, ds)
    assert run_training(job, cfg(), output_dir=tmp_path / "out", run_config={"x": 1})["steps"] == 6
    log = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # from step 0, no resume event
    assert all(torch.equal(again["state"][k], v) for k, v in first["state"].items())

    kept = cfg(keep_checkpoints_when_done=True, keep_checkpoints=5)
    job, _ = make_job(tok, ds)
    run_training(job, kept, output_dir=tmp_path / "kept", run_config={"x": 1})
    ckpts = tmp_path / "kept" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["finished.json", "step-00000002", "step-00000004"]
    job, _ = make_job(tok, ds)
    run_training(job, kept, output_dir=tmp_path / "kept", run_config={"x": 1})
    log = [json.loads(x) for x in (tmp_path / "kept" / "train_log.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in log] == [1, 2, 3, 4, 5, 6] and not any("event" in r for r in log)
    assert sorted(p.name for p in ckpts.iterdir()) == ["finished.json", "step-00000002", "step-00000004"]


def test_a_checkpoint_without_a_batch_layout_is_refused_naming_why(data, tmp_path):
    """A checkpoint from before batch_size became the global batch cannot be placed in the data."""
    tok, ds = data
    job, _ = make_job(tok, ds, hook=sigterm_at(2))
    with pytest.raises(TrainingInterrupted):
        run_training(job, cfg(), output_dir=tmp_path, run_config={"x": 1})
    meta_path = latest_checkpoint(tmp_path / "checkpoints") / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["layout"]
    meta_path.write_text(json.dumps(meta))
    job, _ = make_job(tok, ds)
    with pytest.raises(ConfigError, match="step-00000002: checkpoint was written before training.batch_size became "
                                          "the global batch"):
        run_training(job, cfg(), output_dir=tmp_path, run_config={"x": 1})


def test_fp16_loss_scaling_is_checkpointed_and_a_resume_stays_bit_for_bit(data, tmp_path):
    """The fp16 path (autocast + GradScaler; on a GPU without native bf16) run on the CPU: the
    scaler's state goes into the checkpoint and comes back, so a run stopped in step 3 and resumed
    logs the uninterrupted run's losses exactly."""
    from minialbert.precision import Precision
    from minialbert.training import Runtime

    tok, ds = data
    fp16 = Runtime(precision=Precision("cpu", torch.float16))
    job, straight = make_job(tok, ds)
    run_training(job, cfg(), output_dir=tmp_path / "straight", run_config={"x": 1}, runtime=fp16)
    job, _ = make_job(tok, ds, hook=sigterm_at(3))
    with pytest.raises(TrainingInterrupted):
        run_training(job, cfg(), output_dir=tmp_path / "cut", run_config={"x": 1}, runtime=fp16)
    ckpt = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    blob = torch.load(ckpt / "state.pt", weights_only=True)
    assert blob["scaler"]["scale"] > 1 and blob["scaler"]["_growth_tracker"] == 3  # 3 steps without overflow
    from minialbert.checkpoints import load_checkpoint

    scaler, module = torch.amp.GradScaler("cpu"), TinyMLM(len(tok))
    optimizer = build_optimizer(module, 1e-2, 0.01)
    load_checkpoint(ckpt, module=module, optimizer=optimizer, scheduler=linear_schedule(optimizer, 0, 6),
                    identity=json.loads((ckpt / "meta.json").read_text())["resume_identity"], restore_rng=False,
                    scaler=scaler)
    assert scaler.state_dict() == blob["scaler"]
    job, resumed = make_job(tok, ds)
    metrics = run_training(job, cfg(), output_dir=tmp_path / "cut", run_config={"x": 1}, runtime=fp16)
    assert metrics["precision"] == "fp16" and metrics["steps"] == 6

    def losses(out):
        return [(r["step"], r["mlm"]) for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
                if "event" not in r]

    assert losses(tmp_path / "cut") == losses(tmp_path / "straight")
    for name, tensor in straight["state"].items():
        assert torch.equal(resumed["state"][name], tensor), name
