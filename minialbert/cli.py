"""The `minialbert` command line: one subcommand per stage of the workflow.

Each subcommand lives in its own module, which defines `add_arguments(parser)` and
`run(args)`; modules are imported only when their subcommand runs, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ingest-corpus": ("minialbert.data.corpora", "write a corpus (hub dataset, local files or the demo) as an Arrow dir"),
    "train-tokenizer": ("minialbert.data.tokenizers", "train a WordPiece tokenizer on a corpus dir, saved as a fast BERT tokenizer"),
    "make-windows": ("minialbert.data.windows", "cut a corpus into overlapping token windows (max length, stride, k per doc)"),
    "make-demo": ("minialbert.demo", "generate the demo world: a corpus and four tasks in GLUE / BioBERT layouts"),
    "import-authors-checkpoint": (
        "minialbert.convert",
        "convert a checkpoint in the MiniALBERT authors' layout into a minialbert model dir",
    ),
    "prepare-task": ("minialbert.tasks", "read a GLUE / BioBERT NER / hub / custom-file task and write a prepared task dir"),
    "finetune": ("minialbert.finetune", "fine-tune an encoder (full or adapter tuning) on a task and write metrics.json"),
    "distill": ("minialbert.distill", "distil a MiniALBERT student from a masked-LM teacher (config-driven, resumable, DDP)"),
    "pretrain-teacher": ("minialbert.distill", "pre-train a BERT masked-LM teacher from scratch on a windows dataset"),
    "init-teacher": ("minialbert.distill", "save a BERT masked LM of a teacher's shape, randomly initialised and untrained"),
    "aggregate": ("minialbert.report", "collect fine-tuning runs into runs/summary/table/efficiency CSVs and a plot"),
    "efficiency": ("minialbert.report", "measure a model's parameters and CPU latency/throughput at a fixed shape"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="minialbert",
        description="Distil BERT-class teachers into recursive MiniALBERT students, fine-tune and evaluate them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    requested = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == requested:  # only the chosen subcommand's module is imported
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    from minialbert.utils import ConfigError

    try:
        result = importlib.import_module(args._module).run(args)
    except ConfigError as e:
        print(f"minialbert {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
