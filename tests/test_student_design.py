"""The student design space: sharing patterns, teacher-initialised layers, relaxed recursion,
relation distillation, adapter tuning of what recursions own, and `init-student`."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from distill_world import make_tokenizer, make_windows, one_thread  # noqa: F401 (fixture)
from test_distill_loss import tiny_batch
from tiny_models import batch, tiny_config
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForMaskedLM,
)

from minialbert.adapters import RecursionRelaxation, count_parameters, prepare_for_adapter_tuning
from minialbert.command_configs import DistillConfig, InitStudentConfig, LossConfig, StudentConfig
from minialbert.recursions import sharing_pattern
from minialbert.distill import distillation_setup, load_tokenizer, resolve_student, run_command
from minialbert.loss_terms import relation_loss
from minialbert.objective import distillation_losses
from minialbert.modeling import MiniAlbertForMaskedLM, MiniAlbertForSequenceClassification
from minialbert.blocks import TARGET_PATHS
from minialbert.student import BERT_LAYER_PATHS, build_student, layer_state
from minialbert.utils import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_TERMS = {"mlm": 1.0, "attention": 1.0, "hidden": 1.0, "output": 1.0, "embedding": 1.0, "relation": 1.0}


def bert_teacher(hidden=16, layers=3, heads=2, intermediate=None, vocab=50, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=intermediate or 2 * hidden, max_position_embeddings=32, initializer_range=0.2)
    return BertForMaskedLM(cfg).eval()


def student(teacher, layer_map=None, seed=0, **spec):
    spec.setdefault("use_adapter", False)
    cfg = InitStudentConfig.from_dict({"teacher": "unused", "student": spec, "loss": {"layer_map": layer_map}})
    config, objective = resolve_student(cfg, teacher)  # the layer map is checked here, as distill does
    return build_student(cfg.student, teacher, objective.layer_map, seed=seed, config=config).eval()


def max_difference(student_model, teacher, inputs) -> float:
    """Largest |student - teacher| over the MLM logits and every hidden state (eval mode)."""
    with torch.no_grad():
        s = student_model(**inputs, output_hidden_states=True)
        t = teacher(**inputs, output_hidden_states=True)
    pairs = [(s.logits, t.logits), *zip(s.hidden_states, t.hidden_states)]
    assert len(s.hidden_states) == len(t.hidden_states)
    return max(float((a - b).abs().max()) for a, b in pairs)


# ------------------------------------------------------------------------------------------
# sharing patterns


def test_sharing_patterns_of_takase_and_kiyono():
    letters = {name: "".join("ABC"[j] for j in sharing_pattern(6, 3, name)) for name in ("cycle", "sequence",
                                                                                          "cycle_rev")}
    assert letters == {"cycle": "ABCABC", "sequence": "AABBCC", "cycle_rev": "ABCCBA"}
    assert sharing_pattern(5, 2, "cycle_rev") == [0, 1, 0, 1, 1]
    assert sharing_pattern(5, 2, "sequence") == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("sharing", ["cycle", "sequence", "cycle_rev"])
def test_every_pattern_uses_every_layer_and_degenerates_correctly(sharing):
    for N in range(1, 9):
        assert sharing_pattern(N, 1, sharing) == [0] * N
        assert sharing_pattern(N, N, sharing) == list(range(N))
        for M in range(1, N + 1):
            pattern = sharing_pattern(N, M, sharing)
            assert len(pattern) == N and sorted(set(pattern)) == list(range(M))
    with pytest.raises(ValueError, match="between 1 and num_recursions"):
        sharing_pattern(3, 4, sharing)


def test_unique_layers_are_applied_by_the_pattern_and_counted_once():
    model = MiniAlbertForMaskedLM(tiny_config(num_hidden_layers=4, unique_layers=2, sharing="sequence")).eval()
    base = model.minialbert
    assert len(base.shared_layers) == 2 and not hasattr(base, "layer")
    calls = []
    hooks = [layer.attention.register_forward_hook(lambda m, a, o, j=j: calls.append(j))
             for j, layer in enumerate(base.shared_layers)]
    model(**batch())
    for h in hooks:
        h.remove()
    assert calls == [0, 0, 1, 1]
    per_layer = sum(p.numel() for p in base.layers[0].parameters())
    counts = count_parameters(base)
    assert counts["unique"] == sum(p.numel() for p in base.parameters())
    assert counts["total"] == counts["unique"] + 2 * per_layer  # each of the 2 layers runs twice


def test_one_unrelaxed_layer_keeps_the_paper_key_layout():
    keys = set(MiniAlbertForMaskedLM(tiny_config()).state_dict())
    assert any(k.startswith("minialbert.layer.attention.query") for k in keys)
    assert not any(".layers." in k or "relaxations" in k for k in keys)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"student.unique_layers: expected at most num_recursions \(2\), got 3"):
        StudentConfig.from_dict({"num_recursions": 2, "unique_layers": 3}, key="student")
    with pytest.raises(ConfigError, match=r"student.sharing: expected one of 'cycle', 'sequence', 'cycle_rev'"):
        StudentConfig.from_dict({"sharing": "zigzag"}, key="student")
    with pytest.raises(ConfigError, match=r"student.relaxation.lora_targets\[0\]: expected one of 'query'"):
        StudentConfig.from_dict({"relaxation": {"lora_targets": ["attention"]}}, key="student")
    with pytest.raises(ConfigError, match="student.init_from_teacher: expected one of 'stepwise'"):
        StudentConfig.from_dict({"init_from_teacher": "copy"}, key="student")


# ------------------------------------------------------------------------------------------
# initialisation from the teacher


@pytest.mark.parametrize("method, sharing, expected", [
    ("stepwise", "cycle", [[0], [1]]),
    ("stepwise", "sequence", [[0], [2]]),
    ("average", "cycle", [[0, 2], [1, 3]]),
    ("average", "sequence", [[0, 1], [2, 3]]),
    ("lower", "sequence", [[0], [1]]),
])
def test_shared_layers_get_the_teacher_layers_of_their_recursions(method, sharing, expected):
    teacher = bert_teacher(layers=4)
    model = student(teacher, num_recursions=4, unique_layers=2, sharing=sharing, init_from_teacher=method)
    states = [layer_state(layer) for layer in teacher.bert.encoder.layer]
    for shared, sources in zip(model.minialbert.shared_layers, expected):
        for name, param in shared.named_parameters():
            want = torch.stack([states[t][name] for t in sources]).mean(0)
            torch.testing.assert_close(param.detach(), want, rtol=0, atol=1e-7, msg=f"{method} {name}")
    # embeddings and MLM head are the teacher's: E = H, no projector
    assert model.minialbert.projector is None and model.config.embedding_size == 16
    torch.testing.assert_close(model.minialbert.embeddings.word_embeddings.weight,
                               teacher.bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(model.vocab_projector.weight, teacher.cls.predictions.decoder.weight)


@pytest.mark.parametrize("hidden, layers, heads, intermediate", [(16, 2, 2, 32), (24, 3, 4, 40), (32, 4, 4, 64)])
def test_a_fully_relaxed_student_is_its_teacher(hidden, layers, heads, intermediate):
    teacher = bert_teacher(hidden, layers, heads, intermediate)
    model = student(teacher, num_recursions=layers, init_from_teacher="average",
                    relaxation={"lora_rank": hidden, "lora_init": "svd", "norms": True, "biases": True})
    inputs = {k: v for k, v in tiny_batch().items() if k != "labels"}
    assert max_difference(model, teacher, inputs) < 1e-4
    data = tiny_batch()
    losses = distillation_losses(model, teacher, data, weights=ALL_TERMS)
    for term in ("attention", "hidden", "output", "embedding", "relation"):
        assert abs(float(losses[term].detach())) < 1e-5, (term, float(losses[term].detach()))
    with torch.no_grad():
        teacher_mlm = float(teacher(**data).loss)
    assert float(losses["mlm"].detach()) == pytest.approx(teacher_mlm, abs=1e-5)


@pytest.mark.parametrize("hidden, layers, heads", [(16, 2, 2), (24, 3, 4)])
def test_stepwise_with_a_layer_per_recursion_is_the_teacher(hidden, layers, heads):
    teacher = bert_teacher(hidden, layers, heads)
    model = student(teacher, num_recursions=layers, unique_layers=layers, init_from_teacher="stepwise")
    inputs = {k: v for k, v in tiny_batch().items() if k != "labels"}
    assert max_difference(model, teacher, inputs) < 1e-4


def layered_teacher(seed, hidden=32, layers=3, heads=4):
    """A BERT whose layers differ from a common base by residuals with a decaying spectrum (as a
    trained model's do; random layers' residuals have flat spectra, where a rank-4 delta is no
    better than a rank-1 one at the output, only in the weights)."""
    teacher = bert_teacher(hidden, layers, heads, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for path in (p for p in BERT_LAYER_PATHS.values() if "LayerNorm" not in p):
            base = teacher.bert.encoder.layer[0].get_submodule(path).weight.clone() / 4
            for layer in teacher.bert.encoder.layer:
                w = layer.get_submodule(path).weight
                U, S, Vh = torch.linalg.svd(torch.randn(w.shape, generator=g), full_matrices=False)
                w.copy_(base + U @ torch.diag(0.3 * 0.7 ** torch.arange(S.numel())) @ Vh)
    return teacher


def rms_error(student_model, teacher, inputs) -> float:
    """Root-mean-square |student - teacher| over non-padding tokens, worst of logits and hidden states."""
    with torch.no_grad():
        s = student_model(**inputs, output_hidden_states=True)
        t = teacher(**inputs, output_hidden_states=True)
    keep = inputs["attention_mask"].bool()
    pairs = [(s.logits, t.logits), *zip(s.hidden_states, t.hidden_states)]
    return max(float((a - b)[keep].pow(2).mean().sqrt()) for a, b in pairs)


@torch.no_grad()
def weight_error(student_model, teacher) -> float:
    """Sum over recursions and target linears of ||W_effective - W_teacher||_F."""
    base, states = student_model.minialbert, [layer_state(t) for t in teacher.bert.encoder.layer]
    total = 0.0
    for i, (j, relaxation) in enumerate(zip(base.config.recursion_layers, base.relaxations)):
        for path, (weight, _) in relaxation.overrides(base.shared_layers[j]).items():
            if path in TARGET_PATHS.values():
                total += float((weight - states[i][f"{path}.weight"]).norm())
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_falls_monotonically_with_the_lora_rank(seed):
    inputs = {k: v for k, v in tiny_batch().items() if k != "labels"}
    for teacher, check_outputs in ((layered_teacher(seed), True), (bert_teacher(32, 3, 4, seed=seed), False)):
        models = [student(teacher, num_recursions=3, init_from_teacher="average",
                          relaxation={"lora_rank": r, "norms": True, "biases": True}) for r in (1, 4, 16, 32)]
        weights = [weight_error(m, teacher) for m in models]
        assert all(a > b for a, b in zip(weights, weights[1:])) and weights[-1] < 1e-4, weights
        if check_outputs:
            errors = [rms_error(m, teacher, inputs) for m in models]
            assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-5, errors


def test_zero_init_lora_adds_nothing_and_needs_no_teacher_shape():
    teacher = bert_teacher(hidden=16)
    relaxed = student(teacher, num_recursions=2, hidden_size=8, intermediate_size=16,
                      relaxation={"lora_rank": 2, "lora_init": "zeros"})
    assert all(float(r.linears["ffn"].lora_A.abs().sum()) > 0 for r in relaxed.minialbert.relaxations)
    inputs = {k: v for k, v in tiny_batch().items() if k != "labels"}
    with torch.no_grad():
        out = relaxed(**inputs).logits
        relaxed.minialbert.relaxations = None  # the shared layer alone
        torch.testing.assert_close(relaxed(**inputs).logits, out, rtol=0, atol=0)


def test_teacher_initialisation_needs_the_teacher_shape():
    teacher = bert_teacher(hidden=16)
    with pytest.raises(ConfigError, match=r"differs in hidden_size \(student 8, teacher 16\); intermediate_size "
                                          r"\(student 24, teacher 32\)"):
        student(teacher, num_recursions=2, hidden_size=8, intermediate_size=24, init_from_teacher="average")
    with pytest.raises(ConfigError, match="lora_init: svd.*differs in hidden_act"):
        student(teacher, num_recursions=2, hidden_act="relu", relaxation={"lora_rank": 2})
    with pytest.raises(ConfigError, match="embedding_size: init_from_teacher copies the teacher's embeddings"):
        student(teacher, num_recursions=2, embedding_size=8, init_from_teacher="stepwise")
    with pytest.raises(ConfigError, match="lower: 3 unique layers but the teacher has 2"):
        student(bert_teacher(layers=2), num_recursions=3, unique_layers=3, init_from_teacher="lower",
                layer_map=[0, 1, 1])


# ------------------------------------------------------------------------------------------
# relation distillation


def naive_relation(teacher_qkv, student_qkv, mask, heads):
    """MiniLMv2's relation KL, one (example, relation head, query) row at a time, padding cut off."""
    relations = []
    for t_x, s_x in zip(teacher_qkv, student_qkv):
        rows, total = 0, 0.0
        for b in range(mask.shape[0]):
            n = int(mask[b].sum())
            for x_t, x_s in ((t_x[b, :n].double(), s_x[b, :n].double()),):
                for r in range(heads):
                    def rel(x):
                        d = x.shape[1] // heads
                        xr = x[:, r * d:(r + 1) * d]
                        return torch.softmax(xr @ xr.T / math.sqrt(d), dim=-1)
                    p, q = rel(x_t), rel(x_s)
                    for i in range(n):
                        total += float((p[i] * (p[i].log() - q[i].log())).sum())
                        rows += 1
        relations.append(total / rows)
    return sum(relations) / 3


@pytest.mark.parametrize("heads", [2, 4])
def test_relation_loss_equals_a_straightforward_implementation(heads):
    g = torch.Generator().manual_seed(0)
    mask = tiny_batch()["attention_mask"]
    teacher_qkv = [torch.randn(3, 11, 16, generator=g) for _ in range(3)]
    student_qkv = [torch.randn(3, 11, 24, generator=g) for _ in range(3)]  # another width
    got = float(relation_loss(teacher_qkv, student_qkv, mask, heads))
    assert got == pytest.approx(naive_relation(teacher_qkv, student_qkv, mask, heads), rel=1e-5)
    assert got > 0.01


def test_relation_term_across_widths_and_head_counts_trains_the_student():
    teacher = bert_teacher(hidden=16, layers=2, heads=2)
    model = student(teacher, num_recursions=2, hidden_size=24, num_attention_heads=3, intermediate_size=48)
    model.train()
    weights = {"mlm": 0.0, "attention": 0.0, "hidden": 0.0, "output": 0.0, "relation": 1.0}
    losses = distillation_losses(model, teacher, tiny_batch(), weights=weights,
                                 relation={"teacher_layer": 0, "student_recursion": -1, "heads": 4})
    assert losses["relation"] > 0 and losses["total"] == losses["relation"]
    losses["total"].backward()
    assert model.minialbert.layer.attention.query.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"relation.heads: 5 relation heads must divide both the teacher's width "
                                         r"\(16\) and the student's \(24\)"):
        distillation_losses(model, teacher, tiny_batch(), weights=weights, relation={"heads": 5})


def test_relation_compares_the_configured_layers():
    teacher = bert_teacher(hidden=16, layers=2, heads=2)
    model = student(teacher, num_recursions=2, unique_layers=2, init_from_teacher="stepwise")
    weights = {"mlm": 0.0, "attention": 0.0, "hidden": 0.0, "output": 0.0, "relation": 1.0}
    same = distillation_losses(model, teacher, tiny_batch(), weights=weights,
                               relation={"teacher_layer": 1, "student_recursion": 1})
    crossed = distillation_losses(model, teacher, tiny_batch(), weights=weights,
                                  relation={"teacher_layer": 0, "student_recursion": 1})
    assert float(same["relation"]) < 1e-6 < float(crossed["relation"])


# ------------------------------------------------------------------------------------------
# adapter tuning, save/load


def test_adapter_mode_trains_what_each_recursion_owns_and_the_head():
    config = tiny_config(unique_layers=3, lora_rank=2, relax_norms=True, relax_biases=True, num_labels=2)
    model = prepare_for_adapter_tuning(MiniAlbertForSequenceClassification(config))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    for name in trainable:
        assert name.startswith(("classifier", "minialbert.att_adapters", "minialbert.ffn_adapters",
                                "minialbert.relaxations")), name
    assert any(".linears.query.lora_A" in n for n in trainable) and any(".norms.ffn." in n for n in trainable)
    assert any(".linears.ffn.bias" in n for n in trainable)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("minialbert.layers.") for n in frozen)
    assert any(n.startswith("minialbert.embeddings.") for n in frozen) and any("projector" in n for n in frozen)
    assert all(isinstance(m, RecursionRelaxation) for m in model.minialbert.relaxations)


COMBINATIONS = [
    dict(unique_layers=3, sharing="cycle_rev"),
    dict(lora_rank=3),
    dict(relax_norms=True),
    dict(relax_biases=True, lora_targets=["key", "ffn_output"]),
    dict(unique_layers=2, lora_rank=2, lora_alpha=4, relax_norms=True, relax_biases=True, use_adapter=True),
    dict(unique_layers=3, lora_rank=1, use_adapter=False),
]


@pytest.mark.parametrize("overrides", COMBINATIONS)
@pytest.mark.parametrize("auto_cls, extra", [(AutoModelForMaskedLM, {}), (AutoModel, {}),
                                              (AutoModelForSequenceClassification, {"num_labels": 3}),
                                              (AutoModelForTokenClassification, {"num_labels": 4})])
def test_save_load_round_trips_through_the_auto_classes(tmp_path, overrides, auto_cls, extra):
    torch.manual_seed(0)
    model = auto_cls.from_config(tiny_config(**overrides, **extra)).eval()
    with torch.no_grad():  # make every per-recursion part matter
        for name, p in model.named_parameters():
            if "relaxations" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    loaded = auto_cls.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert {k: v for k, v in loaded.config.to_dict().items() if k != "_name_or_path"} == \
        {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        out_a, out_b = model(**batch()), loaded(**batch())
    a = out_a.last_hidden_state if auto_cls is AutoModel else out_a.logits
    b = out_b.last_hidden_state if auto_cls is AutoModel else out_b.logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------
# init-student


def test_init_student_writes_the_student_distillation_starts_from(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    teacher = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=32))
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    windows = make_windows(tmp_path / "windows", tok)
    config = {"teacher": str(tmp_path / "teacher"), "windows": str(windows),
              "student": {"num_recursions": 2, "init_from_teacher": "average", "reduction_factor": 4,
                          "relaxation": {"lora_rank": 4, "norms": True}},
              "training": {"max_steps": 3, "seed": 7}}
    (tmp_path / "distill.yaml").write_text(yaml.safe_dump(config))
    assert run_command("init-student", tmp_path / "distill.yaml", tmp_path / "out") == 0

    saved = AutoModelForMaskedLM.from_pretrained(tmp_path / "out" / "model")
    assert isinstance(saved, MiniAlbertForMaskedLM) and saved.config.lora_rank == 4
    assert (tmp_path / "out" / "model" / "tokenizer.json").exists()
    cfg = DistillConfig.from_dict(config)
    start, _, _ = distillation_setup(cfg, load_tokenizer(str(tmp_path / "teacher"), "teacher"))
    a, b = saved.state_dict(), start.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a distill config without windows and training is enough; the seed then is distill's default
    del config["windows"], config["training"]
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(config))
    assert run_command("init-student", tmp_path / "bare.yaml", tmp_path / "bare") == 0


def test_layer_map_is_checked_when_initialising():
    teacher = bert_teacher(layers=2)
    with pytest.raises(ConfigError, match="loss.layer_map"):
        student(teacher, num_recursions=2, init_from_teacher="stepwise", layer_map=[0, 5])
    assert LossConfig.from_dict({"relation": {"heads": 4}}).relation.heads == 4
