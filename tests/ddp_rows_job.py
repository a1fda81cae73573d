"""A tiny training job for the tests of the global batch on 1 and 2 processes: run in process by
`run_job`, or under `torchrun ... tests/ddp_rows_job.py ARGS_JSON`. Every micro-batch's rows
(recovered from the masked batch: the label where a position is masked, else the input id,
padding dropped) are appended to `<rows>.rank<R>`, one JSON list per micro-batch, so a test can
compare the rows a run saw; rank 0 can SIGTERM itself during a given call (the step in flight
is then checkpointed on every rank and the run stops). `dropout` draws from each rank's RNG.

(No tests here.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def run_job(tokenizer: str, windows: str, output: str, training: dict, rows: str,
            stop_at_call: int | None = None, dropout: float = 0.0) -> dict:
    import torch
    from datasets import load_from_disk
    from torch import nn
    from transformers import AutoTokenizer

    from minialbert.command_configs import TrainingConfig
    from minialbert.training import TrainingJob, run_training, setup_runtime, shutdown_runtime

    cfg = TrainingConfig.from_dict(training, key="training")
    tok = AutoTokenizer.from_pretrained(tokenizer)
    ds = load_from_disk(windows)
    runtime = setup_runtime(cfg)
    torch.manual_seed(0)  # the same initial weights on every rank
    module = nn.Sequential(nn.Embedding(len(tok), 8), nn.LayerNorm(8), nn.Dropout(dropout), nn.Linear(8, len(tok)))
    calls = {"n": 0}

    def compute_losses(m, batch):
        calls["n"] += 1
        if calls["n"] == stop_at_call and runtime.rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        original = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
        seen = [row[mask.bool()].tolist() for row, mask in zip(original, batch["attention_mask"])]
        with open(f"{rows}.rank{runtime.rank}", "a") as f:
            f.write(json.dumps(seen) + "\n")
        logits = m(batch["input_ids"])
        loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1))
        return {"mlm": loss, "total": loss}

    job = TrainingJob(module=module, compute_losses=compute_losses, save_model=lambda dst: None, dataset=ds,
                      tokenizer=tok)
    try:
        return run_training(job, cfg, output_dir=output, run_config={"training": cfg.to_dict()}, runtime=runtime)
    finally:
        if runtime.distributed:
            shutdown_runtime()


def rows_seen(rows: str | os.PathLike) -> list[tuple[int, ...]]:
    """Every row every rank saw (a sorted multiset), from the files `run_job` appended to."""
    path = Path(rows)
    seen = []
    for f in sorted(path.parent.glob(path.name + ".rank*")):
        for line in f.read_text().splitlines():
            seen.extend(tuple(r) for r in json.loads(line))
    return sorted(seen)


if __name__ == "__main__":
    from minialbert.training import TrainingInterrupted

    try:
        run_job(**json.loads(sys.argv[1]))
    except TrainingInterrupted as e:
        print(f"ddp_rows_job: {e}", file=sys.stderr)
        sys.exit(143)
