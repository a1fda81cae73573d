"""The GPU-grade engine, proven on the CPU (issue 18): attention probabilities recomputed beside
the fused kernel give the losses and gradients of the reference path; activation checkpointing
per recursion gives the gradients of a plain backward."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import minialbert
from minialbert.objective import DistillationModule, distillation_losses

from distill_world import one_thread  # noqa: F401
from test_distill_loss import tiny_batch, tiny_student, tiny_teacher
from test_finetune import minialbert_dir, run_cli, task_dirs  # noqa: F401 - fixtures
from tiny_models import batch as model_batch, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
ALL_TERMS = {"mlm": 1, "attention": 3, "hidden": 3, "output": 5, "embedding": 2}


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("relaxed", [False, True])
def test_recomputed_student_attentions_give_the_reference_losses_and_gradients(relaxed):
    """SDPA in every recursion, probabilities recomputed from q and k: the same ATT (non-zero),
    the same other terms and the same gradients as the eager reference path (losses rel 1e-5;
    gradients, of magnitude ~1 here: rel 1e-4, abs 1e-5)."""
    teacher, student, batch = tiny_teacher(), tiny_student(), tiny_batch()
    if relaxed:
        student = minialbert.MiniAlbertForMaskedLM(minialbert.MiniAlbertConfig(
            **{**student.config.to_diff_dict(), "lora_rank": 2, "relax_norms": True})).eval()
    out = {}
    for mode in ("eager", "recompute"):
        module = DistillationModule(copy.deepcopy(student), teacher, weights=ALL_TERMS)
        module.objective.student_attention = mode
        losses = module(batch)
        losses["total"].backward()
        out[mode] = ({k: float(v.detach()) for k, v in losses.items()}, _grads(module))
    assert out["eager"][0]["attention"] > 1e-3
    for k, v in out["eager"][0].items():
        assert out["recompute"][0][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert out["eager"][1].keys() == out["recompute"][1].keys()
    for name, g in out["eager"][1].items():
        torch.testing.assert_close(out["recompute"][1][name], g, rtol=1e-4, atol=1e-5)


def test_recompute_path_runs_sdpa_and_never_the_reference_attention(monkeypatch):
    """With recompute, every recursion's context comes from the fused kernel (counted), and the
    returned probabilities equal the reference path's."""
    model = minialbert.MiniAlbertModel(tiny_config()).eval()
    inputs = model_batch()
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    with torch.no_grad():
        fast = model(**inputs, output_attentions=True, recompute_attentions=True)
        assert len(calls) == model.config.num_recursions
        reference = model(**inputs, output_attentions=True)
        assert len(calls) == model.config.num_recursions  # the reference path runs no SDPA
    for a, b in zip(fast.attentions, reference.attentions):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.last_hidden_state, reference.last_hidden_state, rtol=1e-5, atol=1e-5)


def test_objective_refuses_an_unknown_student_attention_mode():
    objective = DistillationModule(tiny_student(), tiny_teacher()).objective
    with pytest.raises(ValueError, match="student_attention: expected one of auto, eager, recompute, got 'flash'"):
        dataclasses.replace(objective, student_attention="flash")


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(reentrant):
    """Per-recursion checkpointing (training mode, dropout on: the RNG is replayed) gives the
    losses and gradients of the plain backward, both checkpoint variants (rel 1e-5, abs 1e-6:
    the reentrant variant sums some gradients in another order)."""
    teacher, batch = tiny_teacher(), tiny_batch()
    student = tiny_student().train()
    results = []
    for checkpointing in (False, True):
        module = DistillationModule(copy.deepcopy(student), teacher, weights=ALL_TERMS).train()
        calls = []
        if checkpointing:
            module.student.activation_checkpointing_enable({"use_reentrant": reentrant})
            enc = module.student.minialbert
            func = enc._gradient_checkpointing_func
            enc._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or func(*a, **k)
        torch.manual_seed(7)
        losses = module(batch)
        losses["total"].backward()
        assert len(calls) == (module.student.config.num_recursions if checkpointing else 0)
        results.append(({k: float(v.detach()) for k, v in losses.items()}, _grads(module)))
    (plain, plain_grads), (ckpt, ckpt_grads) = results
    assert plain == pytest.approx(ckpt, rel=1e-6)
    assert plain_grads.keys() == ckpt_grads.keys() and plain_grads
    for name, g in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], g, rtol=1e-5, atol=1e-6)


def test_activation_checkpointing_is_supported_by_every_head():
    for cls in (minialbert.MiniAlbertForMaskedLM, minialbert.MiniAlbertForSequenceClassification,
                minialbert.MiniAlbertForTokenClassification, minialbert.MiniAlbertModel):
        model = cls(tiny_config(num_labels=2))
        model.activation_checkpointing_enable()
        enc = getattr(model, "minialbert", model)
        assert enc.gradient_checkpointing is True, cls.__name__
        model.activation_checkpointing_disable()
        assert enc.gradient_checkpointing is False, cls.__name__


def test_checkpointing_is_off_in_eval_and_under_no_grad():
    model = minialbert.MiniAlbertModel(tiny_config())
    model.activation_checkpointing_enable()
    calls = []
    func = model._gradient_checkpointing_func
    model._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or func(*a, **k)
    inputs = model_batch()
    with torch.no_grad():
        model.train()(**inputs)
    model.eval()(**inputs)
    assert calls == []
    model.train()(**inputs)
    assert len(calls) == model.config.num_recursions


def test_finetuning_with_gradient_checkpointing_gives_the_same_run(minialbert_dir, task_dirs, tmp_path,
                                                                    monkeypatch):
    """`finetune --gradient-checkpointing`: each training recursion runs twice (forward and
    recompute), the same training loss and dev scores (rel 1e-5), the same config hash (it is
    operational: how the run computes, not what)."""
    runs = []
    original = minialbert.MiniAlbertModel._recursion
    monkeypatch.setattr(minialbert.MiniAlbertModel, "_recursion",
                        lambda self, *a: runs.append(self.training) or original(self, *a))
    plain = run_cli(minialbert_dir, task_dirs["sst2"], tmp_path / "plain", "full")
    plain_runs, runs[:] = sum(runs), []
    ckpt = run_cli(minialbert_dir, task_dirs["sst2"], tmp_path / "ckpt", "full", "--gradient-checkpointing")
    assert sum(runs) == 2 * plain_runs > 0
    assert ckpt["final_train_loss"] == pytest.approx(plain["final_train_loss"], rel=1e-5)
    assert ckpt["dev"] == pytest.approx(plain["dev"], rel=1e-5)
    assert ckpt["config_hash"] == plain["config_hash"]
