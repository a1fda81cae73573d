"""CPU forward throughput: the paper-sized MiniALBERT student against a BERT-base-sized
encoder (random weights), at batch 8 x 128 tokens. Prints one JSON line.

    python bench/model_forward.py [--batch-size 8 --max-length 128 --repeats 7 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import BertConfig, BertModel

import minialbert  # noqa: F401
from minialbert import MiniAlbertConfig, MiniAlbertModel
from minialbert.adapters import count_parameters


def tokens_per_second(model, batch_size, max_length, repeats, device) -> float:
    ids = torch.randint(1, 30522, (batch_size, max_length), device=device)
    mask = torch.ones_like(ids)
    model.eval().to(device)
    times = []
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(repeats):
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if device != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return batch_size * max_length / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    student = MiniAlbertModel(MiniAlbertConfig(embedding_size=128, num_hidden_layers=6, use_adapter=True))
    bert = BertModel(BertConfig(), add_pooling_layer=False)
    s = tokens_per_second(student, args.batch_size, args.max_length, args.repeats, args.device)
    b = tokens_per_second(bert, args.batch_size, args.max_length, args.repeats, args.device)
    print(json.dumps({
        "device": args.device,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "threads": torch.get_num_threads(),
        "minialbert_params_unique": count_parameters(student)["unique"],
        "bert_base_params": count_parameters(bert)["unique"],
        "minialbert_tokens_per_s": round(s, 1),
        "bert_base_tokens_per_s": round(b, 1),
        "ratio": round(s / b, 3),
    }))


if __name__ == "__main__":
    main()
