"""The `minialbert` command line: one subcommand per stage of the workflow.

Each subcommand lives in its own module, which defines `add_arguments(parser)` and
`run(args)`. A command whose settings are a flat config dataclass (`finetune`) gets its flags
generated from it (`minialbert.command_configs.add_config_arguments`), so flag names, defaults and docs
cannot drift from the config keys. Nothing
heavy is imported to parse arguments: `--help` and config errors answer without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "make-demo": ("minialbert.demo", "generate the demo world: a corpus and four tasks in GLUE / BioBERT layouts"),
    "ingest-corpus": ("minialbert.data.corpora", "write a corpus (hub dataset, local files or the demo) as an Arrow dir"),
    "train-tokenizer": ("minialbert.data.tokenizers", "train a WordPiece tokenizer on a corpus dir, saved as a fast BERT tokenizer"),
    "make-windows": ("minialbert.data.windows", "cut a corpus into overlapping token windows (max length, stride, k per doc)"),
    "prepare-task": ("minialbert.tasks", "read a GLUE / BioBERT NER / hub / custom-file task and write a prepared task dir"),
    "pretrain-teacher": ("minialbert.distill", "pre-train a BERT masked-LM teacher from scratch on a windows dataset"),
    "init-scratch": ("minialbert.distill", "save a BERT of a teacher's shape, randomly initialised and untrained (source: scratch)"),
    "init-student": ("minialbert.distill", "save the student `distill` starts from (same config), untrained"),
    "distill": ("minialbert.distill", "distil a MiniALBERT student from a masked-LM teacher (config-driven, resumable, DDP)"),
    "import-authors-checkpoint": (
        "minialbert.convert_cli",
        "convert a checkpoint in the MiniALBERT authors' layout into a minialbert model dir",
    ),
    "finetune": ("minialbert.finetune_cli", "fine-tune an encoder (full or adapter tuning) on a task and write metrics.json"),
    "predict": ("minialbert.predict", "a fine-tuned model's predictions on a split, one JSON line each (adaptive depth: "
                                      "--exit-epsilon)"),
    "efficiency": ("minialbert.report", "measure a model's parameters and CPU latency/throughput at a fixed shape"),
    "aggregate": ("minialbert.report", "collect fine-tuning runs into runs/summary/table/efficiency CSVs and a plot"),
}
RENAMED_COMMANDS = {"init-teacher": "init-scratch"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="minialbert",
        description="Distil BERT-class teachers into recursive MiniALBERT students, fine-tune and evaluate them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    requested = next((a for a in argv if not a.startswith("-")), None)
    if requested in RENAMED_COMMANDS:
        print(f"minialbert: '{requested}' was renamed: use `minialbert {RENAMED_COMMANDS[requested]}`",
              file=sys.stderr)
        return 2
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)  # old flag names must fail
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
