"""The MiniALBERT model family: config checks, outputs, fast vs reference attention, heads,
Auto-class round trips, borrowed embeddings. (Adapter tuning and parameter counts:
tests/test_adapters.py.)"""

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertModel,
)

import minialbert  # noqa: F401
from minialbert import (
    MiniAlbertForMaskedLM,
    MiniAlbertForSequenceClassification,
    MiniAlbertForTokenClassification,
    MiniAlbertModel,
    init_embeddings_from,
)
from tiny_models import batch, tiny_config


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("hidden_size", 15, "hidden_size .* divisible by num_attention_heads"),
        ("reduction_factor", 3, "reduction_factor .* must divide hidden_size"),
        ("num_hidden_layers", 0, "num_hidden_layers must be a positive integer"),
        ("embedding_size", -4, "embedding_size must be a positive integer"),
        ("vocab_size", 0, "vocab_size must be a positive integer"),
        ("hidden_act", "swoosh", "hidden_act 'swoosh' is not a known activation"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**{field: value})


def test_reduction_factor_unchecked_without_adapters():
    assert tiny_config(use_adapter=False, reduction_factor=3).reduction_factor == 3


@pytest.mark.parametrize("use_adapter", [True, False])
@pytest.mark.parametrize("E", [12, 16])
def test_outputs_have_one_state_per_recursion_plus_embeddings(use_adapter, E):
    model = MiniAlbertModel(tiny_config(use_adapter=use_adapter, embedding_size=E)).eval()
    assert (model.projector is None) == (E == 16)
    out = model(**batch(), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 4 and len(out.attentions) == 3
    for probs in out.attentions:
        assert probs.shape == (3, 2, 9, 9)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 9))
        assert probs[2, :, :, 2:].abs().max() < 1e-6  # padding keys get no weight
    assert out.hidden_states[-1] is out.last_hidden_state
    plain = model(**batch())
    assert plain.hidden_states is None and plain.attentions is None


@pytest.mark.parametrize("use_adapter", [True, False])
def test_sdpa_and_explicit_attention_agree(use_adapter):
    model = MiniAlbertForMaskedLM(tiny_config(use_adapter=use_adapter)).eval()
    with torch.no_grad():
        fast = model(**batch())
        slow = model(**batch(), output_attentions=True)
    assert fast.attentions is None and len(slow.attentions) == 3
    torch.testing.assert_close(fast.logits, slow.logits, atol=1e-5, rtol=0)


def test_shared_layer_is_one_module_applied_n_times():
    model = MiniAlbertModel(tiny_config())
    calls = []
    model.layer.feed_forward.register_forward_hook(lambda *a: calls.append(1))
    model(**batch())
    assert len(calls) == 3
    assert len(model.att_adapters) == len(model.ffn_adapters) == 3


@pytest.mark.parametrize(
    "auto_cls,cls,kwargs",
    [
        (AutoModelForMaskedLM, MiniAlbertForMaskedLM, {}),
        (AutoModelForSequenceClassification, MiniAlbertForSequenceClassification, {"num_labels": 3}),
        (AutoModelForTokenClassification, MiniAlbertForTokenClassification, {"num_labels": 5}),
        (AutoModel, MiniAlbertModel, {}),
    ],
)
def test_save_load_round_trip_through_auto_classes(tmp_path, auto_cls, cls, kwargs):
    model = cls(tiny_config(**kwargs)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "minialbert"
    loaded = auto_cls.from_pretrained(tmp_path).eval()
    assert type(loaded) is cls
    with torch.no_grad():
        a, b = model(**batch()), loaded(**batch())
    key = "last_hidden_state" if cls is MiniAlbertModel else "logits"
    torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_sequence_classification_from_encoder_dir_with_num_labels(tmp_path):
    MiniAlbertForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert isinstance(model, MiniAlbertForSequenceClassification)
    assert model.classifier.out_features == 4
    # The encoder weights came from the MLM checkpoint.
    mlm = MiniAlbertForMaskedLM.from_pretrained(tmp_path)
    torch.testing.assert_close(model.minialbert.layer.attention.query.weight, mlm.minialbert.layer.attention.query.weight)


@pytest.mark.parametrize(
    "problem_type,num_labels,labels",
    [
        ("regression", 1, torch.tensor([0.5, 1.0, 2.0])),
        ("single_label_classification", 3, torch.tensor([0, 2, 1])),
        ("multi_label_classification", 3, torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]])),
    ],
)
def test_sequence_classification_losses_by_problem_type(problem_type, num_labels, labels):
    model = MiniAlbertForSequenceClassification(tiny_config(num_labels=num_labels, problem_type=problem_type)).eval()
    out = model(**batch(), labels=labels)
    logits = out.logits
    expected = {
        "regression": lambda: torch.nn.functional.mse_loss(logits.squeeze(-1), labels),
        "single_label_classification": lambda: torch.nn.functional.cross_entropy(logits, labels),
        "multi_label_classification": lambda: torch.nn.functional.binary_cross_entropy_with_logits(logits, labels),
    }[problem_type]()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()


def test_sequence_classification_uses_first_token_without_pooler():
    model = MiniAlbertForSequenceClassification(tiny_config(num_labels=2)).eval()
    assert not any("pooler" in n for n, _ in model.named_parameters())
    b = batch()
    with torch.no_grad():
        h = model.minialbert(**b).last_hidden_state
        torch.testing.assert_close(model(**b).logits, model.classifier(h[:, 0]))


def test_token_classification_ignores_minus_100():
    model = MiniAlbertForTokenClassification(tiny_config(num_labels=4)).eval()
    labels = torch.full((3, 9), -100)
    labels[0, :4] = torch.tensor([0, 1, 2, 3])
    out = model(**batch(), labels=labels)
    assert out.logits.shape == (3, 9, 4)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[0, :4], labels[0, :4]))


def test_init_embeddings_from_a_bert_model(tmp_path):
    teacher = BertModel(
        BertConfig(vocab_size=50, hidden_size=20, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=24, max_position_embeddings=32)
    )
    teacher.save_pretrained(tmp_path / "teacher")
    student = MiniAlbertForMaskedLM(tiny_config())  # E=12, H=16
    init_embeddings_from(student, tmp_path / "teacher")
    assert student.config.embedding_size == 20
    emb = student.minialbert.embeddings
    torch.testing.assert_close(emb.word_embeddings.weight, teacher.embeddings.word_embeddings.weight)
    torch.testing.assert_close(emb.LayerNorm.weight, teacher.embeddings.LayerNorm.weight)
    assert student.minialbert.projector.in_features == 20
    student(**batch())  # runs with the new width
    student.save_pretrained(tmp_path / "student")
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "student")
    torch.testing.assert_close(again.minialbert.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight)


def test_init_embeddings_from_equal_width_drops_projector_and_checks_vocab():
    src = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24))
    student = MiniAlbertForMaskedLM(tiny_config())
    init_embeddings_from(student, src)
    assert student.minialbert.projector is None and student.config.embedding_size == 16
    other = BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24))
    with pytest.raises(ValueError, match="vocabulary has 60 tokens"):
        init_embeddings_from(student, other)


@pytest.mark.parametrize("first", [
    "import minialbert",
    "import transformers, minialbert",
    "from transformers import AutoModel; import minialbert",
    "from transformers import PreTrainedModel; import minialbert",
    "import minialbert; import minialbert.modeling",
])
def test_import_is_cheap_and_auto_classes_work_in_any_import_order(first, tmp_path):
    """`import minialbert` loads no torch; the Auto classes know model_type minialbert whatever was imported first."""
    import subprocess
    import sys

    code = f"""
import sys
{first}
if "{first}" == "import minialbert":
    assert "torch" not in sys.modules and "transformers" not in sys.modules
from transformers import AutoConfig, AutoModelForSequenceClassification
from minialbert import MiniAlbertConfig
config = MiniAlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=32)
AutoModelForSequenceClassification.from_config(config).save_pretrained(r"{tmp_path}")
assert type(AutoConfig.from_pretrained(r"{tmp_path}")).__name__ == "MiniAlbertConfig"
print(type(AutoModelForSequenceClassification.from_pretrained(r"{tmp_path}")).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("MiniAlbertForSequenceClassification")


@pytest.mark.parametrize("name", ["gelu", "relu", "silu", "swish", "tanh", "gelu_pytorch_tanh", "gelu_new", "quick_gelu"])
def test_activation_matches_transformers(name):
    from transformers.activations import ACT2FN

    from minialbert.modeling import activation

    x = torch.linspace(-6, 6, 1001)
    assert torch.equal(activation(name)(x), ACT2FN[name](x))
