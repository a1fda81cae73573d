"""`minialbert finetune`: flags generated from `minialbert.command_configs.FinetuneConfig`, and
the `--exit-*` flags of adaptive depth from `ExitsConfig` (the training code in
`minialbert.finetune` is imported only to run)."""

from __future__ import annotations

import argparse

from minialbert.command_configs import ExitsConfig, FinetuneConfig, add_config_arguments, config_from_args
from minialbert.utils import ConfigError

EXIT_PREFIX = "exit-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, FinetuneConfig, skip=("exits",))
    group = parser.add_argument_group("adaptive depth", "exits after every recursion of a MiniALBERT "
                                                        "student (off unless --exits)")
    group.add_argument("--exits", action="store_true", default=argparse.SUPPRESS,
                       help="train an exit after every recursion and calibrate early-exit thresholds")
    add_config_arguments(group, ExitsConfig, prefix=EXIT_PREFIX)
    group.add_argument("--exit-epsilons", dest="exit_epsilons", type=float, nargs="+", metavar="E",
                       default=argparse.SUPPRESS, help="target disagreement rates to calibrate "
                                                       "(default: 0.01 0.05 0.1)")


def exits_from_args(args: argparse.Namespace) -> dict | None:
    """The `exits` section of the flags: None without --exits; --exit-* alone is an error."""
    flags = sorted(k for k in vars(args) if k.startswith("exit_"))
    if not getattr(args, "exits", False):
        if flags:
            raise ConfigError(f"--{flags[0].replace('_', '-')} needs --exits (adaptive depth is off)")
        return None
    return config_from_args(ExitsConfig, args, prefix=EXIT_PREFIX, extra=None).to_dict()


def run(args: argparse.Namespace) -> int:
    from minialbert.finetune import finetune

    config = config_from_args(FinetuneConfig, args, extra={"exits": exits_from_args(args)})
    metrics = finetune(config)
    print(f"{metrics['task']} {metrics['mode']} lr={metrics['lr']} seed={metrics['seed']}: "
          f"{metrics['main_metric']}={metrics['main_value']:.4f} -> {config.output}/metrics.json")
    return 0
