"""Throughput of windowing (tokenise + cut into windows + sample k per document) on CPU.

Builds a generated corpus (demo-world documents joined into Wikipedia-length articles, so
most articles give several windows), trains a small WordPiece tokenizer on it (not timed),
then times `make_windows_dataset` with the reference settings (max 256, stride 128, k 10)
and prints one JSON line: tokens/s counts the tokens of the written windows.

    python bench/tokenize_throughput.py [--articles 1000] [--num-proc 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def generated_corpus(num_articles: int, docs_per_article: int = 8):
    import datasets

    from minialbert.demo import DemoSizes, demo_corpus_documents

    sizes = DemoSizes()
    entities = sizes.num_drugs + sizes.num_diseases + sizes.num_people + sizes.num_cities
    per_entity = max(1, -(-num_articles * docs_per_article // entities))  # ceil: enough documents
    docs = demo_corpus_documents(seed=0, sizes=DemoSizes(documents_per_entity=per_entity))
    articles = [" ".join(docs[i:i + docs_per_article]) for i in range(0, len(docs), docs_per_article)]
    return datasets.Dataset.from_dict({"text": articles[:num_articles]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--max-windows-per-document", type=int, default=10)
    args = parser.parse_args()

    import datasets

    from minialbert.data.tokenizers import train_wordpiece
    from minialbert.data.windows import make_windows_dataset

    datasets.disable_progress_bars()
    corpus = generated_corpus(args.articles)
    tokenizer = train_wordpiece(corpus["text"], vocab_size=4000)
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        windows = make_windows_dataset(corpus, tokenizer, args.max_length, args.stride, args.max_windows_per_document,
                                       seed=42, num_proc=args.num_proc, cache_dir=cache_dir)
        seconds = time.perf_counter() - start
        tokens = sum(len(ids) for ids in windows["input_ids"])
    print(json.dumps({
        "bench": "tokenize_throughput", "tokens_per_second": round(tokens / seconds),
        "windows_per_second": round(len(windows) / seconds, 1), "documents": len(corpus), "windows": len(windows),
        "tokens": tokens, "seconds": round(seconds, 3), "num_proc": args.num_proc or 1,
        "max_length": args.max_length, "stride": args.stride, "max_windows_per_document": args.max_windows_per_document,
    }))


if __name__ == "__main__":
    main()
