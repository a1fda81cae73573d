"""Fine-tuning's input pipeline: the DataLoader batches are the batches `collate` makes, built
without touching the global RNG (so CPU results stay those of the same seed), and a step hands
back its loss on the device instead of waiting for it."""

from __future__ import annotations

import types

import torch

from minialbert import finetune as ft
from minialbert.precision import Precision


def tiny_run():
    from transformers import DataCollatorWithPadding

    from test_finetune import make_tokenizer

    tokenizer = make_tokenizer()
    texts = ["the dog", "aspirin and naloxone for the dog", "a", "the dog the dog the dog", "naloxone"]
    features = [dict(tokenizer(t), labels=i % 2) for i, t in enumerate(texts)]
    run = types.SimpleNamespace(collator=DataCollatorWithPadding(tokenizer), device=torch.device("cpu"),
                                model_keys=("input_ids", "attention_mask", "token_type_ids", "labels"))
    return run, features


def test_training_batches_equal_collated_batches_and_leave_the_global_rng_alone():
    run, features = tiny_run()
    batches = [[3, 0], [1, 4, 2]]
    torch.manual_seed(5)
    before = torch.get_rng_state()
    loaded = list(ft.training_batches(run, batches, features))
    assert torch.equal(torch.get_rng_state(), before)  # no seed drawn for the loader's iterator
    expected = [ft.collate(run, indices, features) for indices in batches]
    assert [sorted(b) for b in loaded] == [sorted(b) for b in expected]
    for got, want in zip(loaded, expected):
        for key, value in want.items():
            assert torch.equal(got[key], value), key


def test_a_training_step_returns_the_loss_on_the_device_without_reading_it():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    run = types.SimpleNamespace(model=types.SimpleNamespace(), precision=Precision("cpu"),
                                config=types.SimpleNamespace(exits=None, max_grad_norm=1.0))
    run.model = lambda x, y: types.SimpleNamespace(loss=torch.nn.functional.mse_loss(model(x), y))
    run.model.parameters = model.parameters
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    x, y = torch.ones(2, 3), torch.zeros(2, 1)
    with torch.no_grad():
        first = float(torch.nn.functional.mse_loss(model(x), y))
    loss = ft.train_step(run, {"x": x, "y": y}, optimizer, scheduler)
    assert isinstance(loss, torch.Tensor) and loss.shape == () and not loss.requires_grad
    with torch.no_grad():
        after = float(torch.nn.functional.mse_loss(model(x), y))
    assert float(loss) == first and after < first  # the loss before the step, and a step was taken
