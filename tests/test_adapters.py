"""minialbert.adapters: one adapter module, adapters added to MiniALBERT (per recursion) and to
other encoders (Houlsby), freezing by structure, parameter counts."""

import pytest
import torch
import transformers
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

import minialbert
from minialbert import (
    MiniAlbertConfig,
    MiniAlbertForMaskedLM,
    MiniAlbertForSequenceClassification,
    MiniAlbertForTokenClassification,
    MiniAlbertModel,
)
from minialbert.adapters import (
    AdaptedLinear,
    BottleneckAdapter,
    add_adapters,
    count_parameters,
    freeze_for_adapter_tuning,
    prepare_for_adapter_tuning,
)
from minialbert.utils import ConfigError
from tiny_models import TINY, batch, tiny_config  # noqa: F401

ADAPTER_PARAMS = [f"{m}.{w}" for m in ("down", "up") for w in ("weight", "bias")]


def tiny_bert(num_labels=2):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_distilbert(num_labels=3):
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                                           max_position_embeddings=32, num_labels=num_labels)
    return transformers.DistilBertForSequenceClassification(config).eval()


def _trainable(model):
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def test_public_names_are_the_adapters_module():
    assert minialbert.count_parameters is count_parameters
    assert minialbert.prepare_for_adapter_tuning is prepare_for_adapter_tuning
    assert minialbert.modeling.BottleneckAdapter is minialbert.blocks.BottleneckAdapter is BottleneckAdapter


# ---------------------------------------------------------------------------- the module


def test_one_adapter_module_with_and_without_layer_norm():
    x = torch.randn(2, 5, 16)
    plain = BottleneckAdapter(16, 4).init_near_identity()
    assert sorted(plain.state_dict()) == sorted(ADAPTER_PARAMS)  # Houlsby: no norm of its own
    torch.testing.assert_close(plain(x), x, atol=0, rtol=0)
    normed = BottleneckAdapter(16, 4, layer_norm_eps=1e-12).init_near_identity()
    assert sorted(normed.state_dict()) == sorted(ADAPTER_PARAMS + ["norm.weight", "norm.bias"])
    torch.testing.assert_close(normed(x), nn.functional.layer_norm(x, (16,), eps=1e-12))
    with torch.no_grad():
        normed.up.weight.normal_()
    assert (normed(x) - nn.functional.layer_norm(x, (16,), eps=1e-12)).abs().max() > 1e-3


# ---------------------------------------------------------------------------- MiniALBERT


def test_minialbert_adapter_keys_are_unchanged():
    """The authors' checkpoints and our students load by these names (tests/test_convert.py)."""
    model = MiniAlbertForMaskedLM(tiny_config(num_hidden_layers=2))
    keys = {k for k in model.state_dict() if "adapters" in k}
    assert keys == {f"minialbert.{kind}.{i}.{m}.{w}" for kind in ("att_adapters", "ffn_adapters") for i in range(2)
                    for m in ("down", "up", "norm") for w in ("weight", "bias")}


def test_adapter_tuning_trains_exactly_adapters_and_head():
    model = MiniAlbertForSequenceClassification(tiny_config(num_labels=2, num_hidden_layers=2))
    prepare_for_adapter_tuning(model)
    expected = sorted(
        [f"minialbert.{kind}.{i}.{m}.{w}" for kind in ("att_adapters", "ffn_adapters") for i in range(2)
         for m in ("down", "up", "norm") for w in ("weight", "bias")]
        + ["classifier.weight", "classifier.bias"]
    )
    assert _trainable(model) == expected


def test_adapter_tuning_of_a_masked_lm_trains_its_head():
    model = MiniAlbertForMaskedLM(tiny_config(num_hidden_layers=2))
    prepare_for_adapter_tuning(model)
    head = {n for n in _trainable(model) if not n.startswith("minialbert.")}
    assert head == {f"{m}.{w}" for m in ("vocab_transform", "vocab_layer_norm", "vocab_projector")
                    for w in ("weight", "bias")}


def _hidden_states(model):
    with torch.no_grad():
        return model.minialbert(**batch(), output_hidden_states=True).hidden_states


def test_adapter_tuning_adds_identity_adapters_when_missing_and_E_equals_H():
    """A new adapter is B(x) = LayerNorm(x) (its up-projection is zero). With E = H every
    adapter's input is the output of a LayerNorm at its initial unit scale and zero shift (the
    embeddings' for the first recursion, the previous block's after), so B is the identity up
    to the LayerNorm's epsilon: every recursion's hidden states are unchanged to 1e-5."""
    model = MiniAlbertForTokenClassification(tiny_config(num_labels=3, use_adapter=False, embedding_size=16)).eval()
    assert model.minialbert.projector is None
    before = _hidden_states(model)
    prepare_for_adapter_tuning(model)
    after = _hidden_states(model)
    assert len(after) == len(before) == 4
    for a, b in zip(after, before):
        assert (a - b).abs().max() <= 1e-5


def test_adapter_tuning_adds_near_identity_adapters_when_missing():
    """With E != H the first recursion's input is the projector's output, which no LayerNorm
    has scaled, so the first adapter (B(x) = LayerNorm(x)) is not the identity: it centres and
    rescales that input (how much the outputs then move depends on the weights, not on any
    bound: post-LN blocks are nearly, not exactly, scale-invariant). Every other adapter is the
    identity, as with E = H: the model with adapters equals the model without them whose
    projector output is layer-normed, to 1e-5."""
    model = MiniAlbertForTokenClassification(tiny_config(num_labels=3, use_adapter=False)).eval()
    H, eps = model.config.hidden_size, model.config.layer_norm_eps
    assert model.config.embedding_size != H
    before = _hidden_states(model)
    handle = model.minialbert.projector.register_forward_hook(
        lambda module, args, out: torch.nn.functional.layer_norm(out, (H,), eps=eps))
    normed_input = _hidden_states(model)
    handle.remove()
    prepare_for_adapter_tuning(model)
    assert model.config.use_adapter and len(model.minialbert.att_adapters) == 3
    assert all(n.startswith(("minialbert.att_adapters", "minialbert.ffn_adapters", "classifier")) for n in _trainable(model))
    for adapter in (*model.minialbert.att_adapters, *model.minialbert.ffn_adapters):
        assert adapter.up.weight.abs().max() == 0 and adapter.down.weight.abs().max() > 0
    after = _hidden_states(model)
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)  # the projector's output (adapters act later)
    assert (normed_input[0] - before[0]).abs().max() > 0.5  # its LayerNorm is far from the identity
    for a, reference in zip(after[1:], normed_input[1:]):
        assert (a - reference).abs().max() <= 1e-5
    # Gradients reach the adapters only.
    model.train()
    model(**batch(), labels=torch.zeros(3, 9, dtype=torch.long)).loss.backward()
    assert model.minialbert.layer.attention.query.weight.grad is None
    assert model.minialbert.att_adapters[0].up.weight.grad.abs().sum() > 0


def test_distilled_adapters_are_kept_and_the_reduction_factor_is_the_models():
    model = MiniAlbertForSequenceClassification(tiny_config(num_labels=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapters = add_adapters(model, reduction_factor=16)  # r comes from the config (4): H/4 = 4
    assert adapters == [*model.minialbert.att_adapters, *model.minialbert.ffn_adapters]
    assert all(a.down.out_features == 4 for a in adapters)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


def test_adapter_model_saved_after_tuning_reloads(tmp_path):
    model = MiniAlbertForSequenceClassification(tiny_config(num_labels=2, use_adapter=False))
    prepare_for_adapter_tuning(model)
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert again.config.use_adapter and again.minialbert.att_adapters is not None
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


# ---------------------------------------------------------------------------- other encoders


def test_bert_adapters_are_near_identity_to_1e6():
    model = tiny_bert()
    with torch.no_grad():
        before = model(**batch(), output_hidden_states=True)
    prepare_for_adapter_tuning(model, reduction_factor=4)
    with torch.no_grad():
        after = model(**batch(), output_hidden_states=True)
    assert (after.logits - before.logits).abs().max() <= 1e-6
    for a, b in zip(after.hidden_states, before.hidden_states):
        assert (a - b).abs().max() <= 1e-6
    assert isinstance(model.bert.encoder.layer[0].attention.output.dense, AdaptedLinear)
    assert isinstance(model.bert.encoder.layer[0].output.dense, AdaptedLinear)


def test_bert_freeze_by_structure_trains_exactly_adapters_and_head():
    model = tiny_bert()
    # A frozen encoder module whose name says "adapter": only its type could tell it apart.
    model.bert.encoder.adapter_like = nn.Linear(2, 2)
    prepare_for_adapter_tuning(model, reduction_factor=4)
    adapters = [f"bert.encoder.layer.{i}.{where}.dense.adapter.{p}" for i in range(2)
                for where in ("attention.output", "output") for p in ADAPTER_PARAMS]
    assert _trainable(model) == sorted(adapters + ["classifier.bias", "classifier.weight"])
    assert all(a.down.out_features == 4 for a in model.modules() if isinstance(a, BottleneckAdapter))
    # Gradients reach the adapters and the head only.
    model.train()
    model(**batch(), labels=torch.tensor([0, 1, 1])).loss.backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is None
    assert model.bert.encoder.layer[0].output.dense.adapter.up.weight.grad.abs().sum() > 0


def test_distilbert_freeze_by_structure_trains_exactly_adapters_and_head():
    model = tiny_distilbert()
    ids = batch()["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    prepare_for_adapter_tuning(model, reduction_factor=4)
    with torch.no_grad():
        assert (model(input_ids=ids).logits - before).abs().max() <= 1e-6
    adapters = [f"distilbert.transformer.layer.{i}.{where}.adapter.{p}" for i in range(2)
                for where in ("attention.out_lin", "ffn.lin2") for p in ADAPTER_PARAMS]
    head = [f"{m}.{w}" for m in ("pre_classifier", "classifier") for w in ("weight", "bias")]
    assert _trainable(model) == sorted(adapters + head)


def test_hub_albert_gets_adapters_on_its_shared_layer():
    config = transformers.AlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=3,
                                       num_attention_heads=2, intermediate_size=32, num_labels=3)
    model = transformers.AlbertForSequenceClassification(config).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    before = model(input_ids=ids).logits
    prepare_for_adapter_tuning(model, reduction_factor=4)
    torch.testing.assert_close(model(input_ids=ids).logits, before)
    prefix = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    wrapped = {name for name, m in model.named_modules() if isinstance(m, AdaptedLinear)}
    assert wrapped == {prefix + "attention.dense", prefix + "ffn_output"}
    frozen_base = all(not p.requires_grad for n, p in model.base_model.named_parameters() if ".adapter." not in n)
    assert frozen_base and any(p.requires_grad for p in model.classifier.parameters())


def test_adding_generic_adapters_twice_is_refused():
    model = tiny_bert()
    add_adapters(model, 4)
    with pytest.raises(ConfigError, match="already has bottleneck adapters"):
        add_adapters(model, 4)


def test_freezing_without_adapters_is_refused():
    with pytest.raises(ConfigError, match="no BottleneckAdapter, RecursionRelaxation modules"):
        freeze_for_adapter_tuning(tiny_bert())
    with pytest.raises(ConfigError, match="no BottleneckAdapter, RecursionRelaxation modules"):
        freeze_for_adapter_tuning(MiniAlbertForSequenceClassification(tiny_config(use_adapter=False)))


# ---------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    "E,use_adapter,expected",
    [(128, True, 12_072_768), (128, False, 11_159_808), (312, True, 17_925_072), (312, False, 17_012_112)],
)
def test_paper_parameter_counts(E, use_adapter, expected):
    config = MiniAlbertConfig(
        vocab_size=30522, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
        num_hidden_layers=6, reduction_factor=16, embedding_size=E, use_adapter=use_adapter,
    )
    model = MiniAlbertForMaskedLM(config)
    encoder = count_parameters(model.base_model)
    assert encoder["unique"] == expected
    shared = sum(p.numel() for p in model.minialbert.layer.parameters())
    assert shared == 7_087_872
    assert encoder["total"] == expected + 5 * shared  # the shared layer counted per recursion
    assert count_parameters(model)["unique"] > expected  # + MLM head


def test_unique_versus_total_for_a_shared_layer_model():
    model = MiniAlbertModel(tiny_config(use_adapter=False))  # 3 recursions of one layer
    H, I, E, V = 16, 24, 12, 50
    attention = 4 * (H * H + H) + 2 * H
    ffn = (H * I + I) + (I * H + H) + 2 * H
    embeddings = (V + 32 + 2) * E + 2 * E
    projector = E * H + H
    counts = count_parameters(model)
    assert counts["unique"] == embeddings + projector + attention + ffn
    assert counts["total"] == embeddings + projector + 3 * (attention + ffn)
    assert counts["trainable"] == counts["unique"]
    adapters = add_adapters(model)
    per_adapter = (H * 4 + 4) + (4 * H + H) + 2 * H
    counts = count_parameters(model)
    assert len(adapters) == 6
    # The per-recursion adapters are not shared: counted once in both.
    assert counts["total"] - counts["unique"] == 2 * (attention + ffn)
    assert counts["unique"] == embeddings + projector + attention + ffn + 6 * per_adapter


def test_count_parameters_trainable_and_plain_modules():
    model = MiniAlbertForSequenceClassification(tiny_config(num_labels=2))
    prepare_for_adapter_tuning(model)
    counts = count_parameters(model)
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["trainable"] < counts["unique"] < counts["total"]
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20))
    b = count_parameters(bert)
    assert b["total"] == b["unique"] == b["trainable"] == sum(p.numel() for p in bert.parameters())
    tied = transformers.BertForMaskedLM(bert.config)  # decoder weight tied to the word embeddings
    t = count_parameters(tied)
    assert t["unique"] == t["total"] == sum(p.numel() for p in tied.parameters())
    assert t["unique"] < sum(p.numel() for _, p in tied.named_parameters(remove_duplicate=False))
