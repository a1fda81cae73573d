"""The counter-based dropout of a compiled CPU step (minialbert.dropout), the fused AdamW a compiled
step gets, and the host-memory setting of training processes (minialbert.host_memory)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from minialbert import MiniAlbertForMaskedLM
from minialbert.dropout import counter_dropout, counter_keep_mask, dropout
from minialbert.optim import build_optimizer
from tiny_models import tiny_config

KEYS = torch.tensor([123456789, -987654321], dtype=torch.int32)


def test_counter_mask_keeps_one_minus_p_of_the_elements_without_pattern():
    keep = counter_keep_mask((1 << 20,), 0.1, KEYS).float()
    assert keep.mean().item() == pytest.approx(0.9, abs=2e-3)  # binomial sd 3e-4
    # neighbours, rows of a (B, nh, T, T) map and another key pair are uncorrelated
    assert abs(torch.corrcoef(torch.stack([keep[:-1], keep[1:]]))[0, 1]) < 0.01
    rows = keep.view(-1, 128)
    assert abs(torch.corrcoef(torch.stack([rows[:-1].flatten(), rows[1:].flatten()]))[0, 1]) < 0.01
    other = counter_keep_mask((1 << 20,), 0.1, torch.tensor([5, 6], dtype=torch.int32)).float()
    assert abs(torch.corrcoef(torch.stack([keep, other]))[0, 1]) < 0.01
    for p in (0.0, 0.5):
        assert counter_keep_mask((1 << 16,), p, KEYS).float().mean().item() == pytest.approx(1 - p, abs=0.01)
    assert not counter_keep_mask((100,), 1.0, KEYS).any()


def test_counter_dropout_scales_kept_elements_and_its_gradient_is_the_mask():
    x = torch.randn(4, 8, 16, requires_grad=True)
    y = counter_dropout(x, 0.25, KEYS)
    keep = counter_keep_mask(x.shape, 0.25, KEYS)
    torch.testing.assert_close(y, torch.where(keep, x * (1 / 0.75), torch.zeros(())), rtol=0, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, keep.float() * (1 / 0.75), rtol=0, atol=0)
    assert torch.equal(counter_dropout(x, 1.0), torch.zeros_like(x))


def test_keys_come_from_torch_generator_so_a_seed_reproduces_the_masks():
    x = torch.ones(1000)
    torch.manual_seed(3)
    a, b = counter_dropout(x, 0.5), counter_dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(counter_dropout(x, 0.5), a) and torch.equal(counter_dropout(x, 0.5), b)
    assert not torch.equal(a, b)  # every call draws fresh keys


def test_inductor_computes_the_same_mask_as_eager():
    """The hash's int32 arithmetic (wrapping multiplies, masked shifts) in inductor's vectorised
    C++ equals eager's, bit for bit (odd size: the vector loop and its scalar tail)."""
    torch._dynamo.reset()
    compiled = torch.compile(lambda k: counter_keep_mask((37, 129), 0.1, k), backend="inductor")
    assert torch.equal(compiled(KEYS), counter_keep_mask((37, 129), 0.1, KEYS))
    torch._dynamo.reset()


def test_only_a_compiled_cpu_step_uses_the_counter_dropout():
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    model = MiniAlbertForMaskedLM(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)).train()
    ids = torch.randint(1, 50, (2, 9))
    torch._dynamo.reset()
    torch.manual_seed(0)
    first = torch.compile(model, backend=record)(input_ids=ids).logits
    torch.manual_seed(0)
    assert torch.equal(torch.compile(model, backend=record)(input_ids=ids).logits, first)  # seeded
    code = "\n".join(graphs)
    assert "dropout_keys" in code and "functional.dropout" not in code and "dropout_p" not in code
    torch._dynamo.reset()
    # eager: torch's dropout, as before (the demo's numbers)
    x = torch.randn(1000)
    torch.manual_seed(1)
    expected = torch.nn.functional.dropout(x, 0.1, True)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.1, True), expected)
    assert dropout(x, 0.1, False) is x


def test_a_compiled_step_gets_fused_adamw():
    model = torch.nn.Linear(4, 4)
    assert build_optimizer(model, 1e-3, 0.01, fused=True).defaults["fused"]
    assert not build_optimizer(model, 1e-3, 0.01).defaults["fused"]  # the eager CPU default: the loop


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_training_processes_keep_freed_memory_instead_of_faulting_it_in_again():
    """The same allocation pattern (1-16 MB buffers, as a step's) takes fewer than half the page
    faults once retain_freed_memory() has run (measured 18,000 against 4,900)."""
    script = textwrap.dedent("""
        import resource, sys, torch
        from minialbert.host_memory import retain_freed_memory
        if sys.argv[1] == "1":
            assert retain_freed_memory()
        w = torch.randn(1024, 1024)
        def work():
            for n in (512, 2048, 1024, 4096, 3000):
                x = torch.randn(n, 1024) @ w
                y = torch.relu(x) * 2
                del x, y
        work()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            work()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    faults = [int(subprocess.run([sys.executable, "-c", script, flag], capture_output=True, text=True,
                                 check=True).stdout) for flag in ("0", "1")]
    assert faults[1] < faults[0] / 2, faults
