"""The distillation objective: parity with the authors' numbers, with eager attention, and its edges."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

import minialbert
from minialbert.objective import (
    DistillationModule,
    distillation_losses,
    masked_positions_from_labels,
)
from minialbert.loss_terms import default_weights
from minialbert.recursions import check_layer_map, uniform_layer_map

from distill_world import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


def _naive():
    spec = importlib.util.spec_from_file_location("distill_throughput", ROOT / "bench" / "distill_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.naive_losses


def tiny_teacher(hidden=32, layers=4, heads=2, vocab=50, seed=0):
    torch.manual_seed(seed)
    # a wide init gives peaked, non-uniform attention, so ATT is far from zero
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=32, initializer_range=0.3)
    return BertForMaskedLM(cfg).eval()


def tiny_student(hidden=32, recursions=2, heads=2, vocab=50, seed=1):
    torch.manual_seed(seed)
    cfg = minialbert.MiniAlbertConfig(vocab_size=vocab, embedding_size=16, hidden_size=hidden,
                                      num_hidden_layers=recursions, num_attention_heads=heads,
                                      intermediate_size=2 * hidden, max_position_embeddings=32, reduction_factor=4,
                                      initializer_range=0.3)
    return minialbert.MiniAlbertForMaskedLM(cfg).eval()


def tiny_batch(vocab=50, B=3, T=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids * mask
    labels = torch.full_like(ids, -100)
    for b, positions in enumerate(([1, 3, 8], [2, 5], [1])):
        labels[b, positions] = ids[b, positions]
        ids[b, positions] = 4
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "token_type_ids": torch.zeros_like(ids)}


def assert_close_rel(actual: dict, expected: dict, rel=1e-5):
    for k, v in expected.items():
        a, e = float(torch.as_tensor(actual[k]).detach()), float(torch.as_tensor(expected[k]).detach())
        assert a == pytest.approx(e, rel=rel, abs=1e-7), f"{k}: {a} != {e}"


def test_matches_the_authors_numbers_on_their_fixture(tmp_path):
    from safetensors.torch import load_file

    minialbert.import_authors_checkpoint(FIXTURES / "authors_checkpoint", tmp_path / "student")
    student = AutoModelForMaskedLM.from_pretrained(tmp_path / "student").eval()
    teacher = AutoModelForMaskedLM.from_pretrained(FIXTURES / "authors_distill_loss" / "teacher").eval()
    batch = load_file(FIXTURES / "authors_distill_loss" / "batch.safetensors")
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    expected = json.loads((FIXTURES / "authors_distill_loss" / "expected_losses.json").read_text())
    assert expected["layer_map"] == uniform_layer_map(3, 6)  # their map is our default
    with torch.no_grad():
        losses = distillation_losses(student, teacher, batch, layer_map=expected["layer_map"],
                                     weights=expected["weights"], temperature=expected["temperature"])
        defaults = distillation_losses(student, teacher, batch)  # paper defaults give the same numbers
    assert_close_rel(losses, {k: expected[k] for k in ("mlm", "attention", "hidden", "output", "embedding", "total")})
    assert_close_rel(defaults, {k: expected[k] for k in ("mlm", "attention", "hidden", "output", "embedding", "total")})


def test_attention_term_is_nonzero_and_equals_eager_attention_reference():
    teacher, student, batch = tiny_teacher(), tiny_student(), tiny_batch()
    assert teacher.config._attn_implementation != "eager"  # the engine runs the default (SDPA) teacher
    eager = copy.deepcopy(teacher)
    eager.set_attn_implementation("eager")
    layer_map = uniform_layer_map(2, 4)
    weights = {"mlm": 1, "attention": 3, "hidden": 3, "output": 5, "embedding": 2}
    with torch.no_grad():
        engine = distillation_losses(student, teacher, batch, weights=weights, temperature=2.0)
        reference = _naive()(student, eager, batch, layer_map, weights, temperature=2.0)
    assert engine["attention"] > 1e-3
    assert_close_rel(engine, reference)


@pytest.mark.filterwarnings("ignore:reduction")
def test_gradients_match_the_naive_formulation():
    teacher, student, batch = tiny_teacher(), tiny_student(), tiny_batch()
    eager = copy.deepcopy(teacher)
    eager.set_attn_implementation("eager")
    twin = copy.deepcopy(student)
    distillation_losses(student, teacher, batch)["total"].backward()
    _naive()(twin, eager, batch, uniform_layer_map(2, 4), default_weights())["total"].backward()
    for (name, p), q in zip(student.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_collator_positions_give_the_same_losses_as_labels(tmp_path):
    """The training collator's `masked_positions` (padded with -1 to a multiple of 8) give the
    losses that positions derived from the labels give."""
    from distill_world import make_tokenizer

    from minialbert.data.mlm import SeededMLMCollator

    tok = make_tokenizer(tmp_path / "tok")
    teacher, student = tiny_teacher(vocab=len(tok)), tiny_student(vocab=len(tok))
    texts = ["the cat sat on the mat", "a big red house", "the quick fox jumped over the lazy dog far away"]
    rows = [{"input_ids": ids, "_seed": 3} if i == 0 else {"input_ids": ids}
            for i, ids in enumerate(tok(texts)["input_ids"])]
    batch = SeededMLMCollator(tok, 0.3)(rows)
    positions = batch["masked_positions"]
    assert (positions == -1).any(), "the padding entries of the positions must be exercised"
    with torch.no_grad():
        a = distillation_losses(student, teacher, batch)
        b = distillation_losses(student, teacher, {k: v for k, v in batch.items() if k != "masked_positions"})
    assert_close_rel(a, b)


@pytest.mark.filterwarnings("ignore:reduction")
def test_other_hidden_size_and_head_count_use_projections_and_head_averaged_maps(tmp_path):
    teacher, batch = tiny_teacher(), tiny_batch()
    student = tiny_student(hidden=24, heads=3)
    with pytest.raises(ValueError, match="hidden_projection"):
        distillation_losses(student, teacher, batch)
    module = DistillationModule(student, teacher, weights={"embedding": 1.0})
    assert module.hidden_projection is not None and module.embedding_projection is not None
    losses = module(batch)
    assert set(losses) == {"mlm", "attention", "hidden", "output", "embedding", "total"}
    losses["total"].backward()
    assert module.hidden_projection.weight.grad is not None
    eager = copy.deepcopy(teacher)
    eager.set_attn_implementation("eager")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():  # 2 teacher heads vs 3 student heads: compared on head-averaged maps
        t_att = eager(**inputs, output_attentions=True).attentions
        s_att = student(**inputs, output_attentions=True).attentions
    ref = 0.0
    for i, j in enumerate([1, 3]):
        sa, ta = s_att[i].mean(1, keepdim=True), t_att[j].mean(1, keepdim=True)
        rows = batch["attention_mask"][:, None, :, None].expand_as(sa).bool()
        ref += torch.nn.functional.kl_div(torch.log(torch.masked_select(sa, rows) + 1e-12),
                                          torch.masked_select(ta, rows) + 1e-12, reduction="mean")
    assert losses["attention"].item() == pytest.approx(ref.item(), rel=1e-5)
    student.save_pretrained(tmp_path / "s")  # the projections are not part of the student
    from safetensors.torch import load_file

    assert not any("projection" in k for k in load_file(tmp_path / "s" / "model.safetensors"))


def test_layer_map_is_checked():
    assert uniform_layer_map(6, 12) == [1, 3, 5, 7, 9, 11]
    assert check_layer_map([0, 3], 2, 4) == [0, 3]
    with pytest.raises(ValueError, match="has 3 entries but the student has 2 recursions"):
        check_layer_map([0, 1, 2], 2, 4)
    with pytest.raises(ValueError, match="not a teacher layer index in 0..3"):
        check_layer_map([0, 4], 2, 4)
    with pytest.raises(ValueError, match="more recursions"):
        uniform_layer_map(5, 4)
    with pytest.raises(ValueError, match="layer map"):
        distillation_losses(tiny_student(), tiny_teacher(), tiny_batch(), layer_map=[1])


def test_weights_are_checked():
    with pytest.raises(ValueError, match="unknown component"):
        distillation_losses(tiny_student(), tiny_teacher(), tiny_batch(), weights={"attn": 1})
    with pytest.raises(ValueError, match=">= 0"):
        distillation_losses(tiny_student(), tiny_teacher(), tiny_batch(), weights={"mlm": -1})


def test_baseline_never_runs_the_teacher():
    teacher, student, batch = tiny_teacher(), tiny_student(), tiny_batch()

    def boom(*args, **kwargs):
        raise AssertionError("the teacher ran")

    teacher.register_forward_pre_hook(boom)
    weights = {"mlm": 1, "attention": 0, "hidden": 0, "output": 0, "embedding": 0}
    losses = distillation_losses(student, teacher, batch, weights=weights)
    assert set(losses) == {"mlm", "total"}
    logits = student(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    expected = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1))
    assert losses["mlm"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert DistillationModule(student, teacher, weights=weights).teacher is None


def test_teacher_is_frozen_and_in_eval_mode():
    teacher, student, batch = tiny_teacher(), tiny_student(), tiny_batch()
    teacher.train()
    module = DistillationModule(student, teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not any(p is q for p in module.parameters() for q in teacher.parameters())
    module.train()
    module(batch)["total"].backward()
    assert not teacher.training
