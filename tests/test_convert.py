"""Importing the authors' checkpoints: bit-level parity, every layout variant, refusals."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from authors_reference import authors_forward, random_authors_checkpoint
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM

import minialbert  # noqa: F401  (registers the Auto classes)
from minialbert import import_authors_checkpoint
from minialbert.utils import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "authors_checkpoint"


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True, output_attentions=True)


def test_fixture_reproduced_within_1e5(tmp_path):
    import_authors_checkpoint(FIXTURE, tmp_path / "m")
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    expected = load_file(FIXTURE / "expected_outputs.safetensors")
    inputs = {k: expected[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    out = _run(model, inputs)
    assert len(out.hidden_states) == 4 and len(out.attentions) == 3
    torch.testing.assert_close(out.logits, expected["logits"], atol=1e-5, rtol=0)
    for i, h in enumerate(out.hidden_states):
        torch.testing.assert_close(h, expected[f"hidden_states.{i}"], atol=1e-5, rtol=0)
    for i, a in enumerate(out.attentions):
        torch.testing.assert_close(a, expected[f"attentions.{i}"], atol=1e-5, rtol=0)
    # The default (SDPA) path gives the same logits.
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, expected["logits"], atol=1e-5, rtol=0)


def test_reference_forward_matches_the_fixture():
    """The test-side reference implementation is itself checked against the authors' outputs."""
    state = load_file(FIXTURE / "model.safetensors")
    config = json.loads((FIXTURE / "config.json").read_text())
    expected = load_file(FIXTURE / "expected_outputs.safetensors")
    logits, hidden, att = authors_forward(
        state, config, expected["input_ids"], expected["attention_mask"], expected["token_type_ids"]
    )
    torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(att[-1], expected["attentions.2"], atol=1e-5, rtol=0)


VARIANTS = {
    "adapters-E<H-gelu_new-safetensors": dict(adapters=True, E=16, H=32, act="gelu_new"),
    "no-adapters-E<H-gelu-bin": dict(adapters=False, E=16, H=32, act="gelu", fmt="bin"),
    "adapters-E=H-bert-type-bin": dict(adapters=True, E=32, H=32, model_type="bert", fmt="bin"),
    "no-adapters-E=H-3-recursions": dict(adapters=False, E=24, H=24, heads=3, recursions=3, r=8),
    "wide-E>H-relu": dict(adapters=True, E=40, H=32, act="relu", heads=2, r=2),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_any_authors_checkpoint_is_reproduced(tmp_path, variant):
    kwargs = VARIANTS[variant]
    # a seed fixed per variant: str hash() changes with every process (PYTHONHASHSEED)
    state = random_authors_checkpoint(tmp_path / "src", seed=list(VARIANTS).index(variant), **kwargs)
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    import_authors_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "model.safetensors").exists()
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "dst").eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, config["vocab_size"], (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    tt = torch.zeros_like(ids)
    tt[:, 5:] = 1
    logits, hidden, att = authors_forward(state, config, ids, mask, tt)
    out = _run(model, dict(input_ids=ids, attention_mask=mask, token_type_ids=tt))
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    assert len(out.hidden_states) == len(hidden) and len(out.attentions) == len(att)
    for a, b in zip(out.hidden_states, hidden):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for a, b in zip(out.attentions, att):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _mutate(tmp_path, edit):
    from safetensors.torch import save_file

    src = tmp_path / "src"
    state = random_authors_checkpoint(src)
    edit(state)
    save_file(state, str(src / "model.safetensors"))
    return src


def test_missing_key_refused_and_dst_untouched(tmp_path):
    src = _mutate(tmp_path, lambda s: s.pop("albert.att_adapters.1.norm.bias"))
    dst = tmp_path / "dst"
    with pytest.raises(ConfigError, match="att_adapters.1.norm.bias"):
        import_authors_checkpoint(src, dst)
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")]


def test_unexpected_key_refused(tmp_path):
    src = _mutate(tmp_path, lambda s: s.__setitem__("albert.extra_head.weight", torch.zeros(2)))
    with pytest.raises(ConfigError, match="unexpected key 'albert.extra_head.weight'"):
        import_authors_checkpoint(src, tmp_path / "dst")


def test_shape_mismatch_refused_with_shapes(tmp_path):
    src = _mutate(tmp_path, lambda s: s.__setitem__(LAYER_FFN, torch.zeros(50, 32)))
    with pytest.raises(ConfigError, match=r"\(50, 32\).*\(48, 32\)"):
        import_authors_checkpoint(src, tmp_path / "dst")


LAYER_FFN = "albert.albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"


def test_existing_dst_survives_a_failed_import(tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("previous")
    src = _mutate(tmp_path, lambda s: s.pop("vocab_projector.bias"))
    with pytest.raises(ConfigError):
        import_authors_checkpoint(src, dst)
    assert (dst / "keep.txt").read_text() == "previous"


def test_bad_model_type_names_the_field(tmp_path):
    src = tmp_path / "src"
    random_authors_checkpoint(src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="model_type"):
        import_authors_checkpoint(src, tmp_path / "dst")


def test_cli_imports_and_reports_errors(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "minialbert.cli", "import-authors-checkpoint", str(FIXTURE), str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "m" / "config.json").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "minialbert.cli", "import-authors-checkpoint", str(tmp_path / "nope"), str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "nope" in bad.stderr and "not found" in bad.stderr
