"""Command line: one subcommand per pipeline stage, every input and parameter explicit.

Snakemake rules call ``python -m structprune <stage> ...``; the same commands
can be rerun by hand on a compute node. Each stage is a module of `stages/`
(its arguments beside its body, named after the command); this file only
assembles them. The library never reads config.yaml.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

from structprune.spec.catalog import DTYPES
from structprune.stages import STAGES
from structprune.stages.argtypes import positive_int

log = logging.getLogger("structprune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structprune", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="auto", help="auto (a GPU if torch sees one), cpu or cuda[:N]")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="weight precision (auto: float32 on CPU, bfloat16 on GPU); statistics stay float64")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in STAGES:  # each stage module imports torch only inside its run()
        stage = importlib.import_module(f"structprune.stages.{command.replace('-', '_')}")
        stage.arguments(sub.add_parser(command, help=stage.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.time()
    stage = importlib.import_module(f"structprune.stages.{args.command.replace('-', '_')}")
    try:
        stage.run(args)
    except (ValueError, FileNotFoundError, NotImplementedError, ImportError) as error:
        log.error("%s failed: %s", args.command, error)
        return 2
    log.info("%s done in %.1f s", args.command, time.time() - started)
    return 0
