"""`minialbert finetune`: flags generated from `minialbert.command_configs.FinetuneConfig` (the
training code in `minialbert.finetune` is imported only to run)."""

from __future__ import annotations

import argparse

from minialbert.command_configs import add_config_arguments, config_from_args
from minialbert.command_configs import FinetuneConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, FinetuneConfig)


def run(args: argparse.Namespace) -> int:
    from minialbert.finetune import finetune

    config = config_from_args(FinetuneConfig, args)
    metrics = finetune(config)
    print(f"{metrics['task']} {metrics['mode']} lr={metrics['lr']} seed={metrics['seed']}: "
          f"{metrics['main_metric']}={metrics['main_value']:.4f} -> {config.output}/metrics.json")
    return 0
