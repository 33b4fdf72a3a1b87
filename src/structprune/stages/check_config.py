"""Validate workflow config files without Snakemake: the file and line of each problem."""

from __future__ import annotations

import logging

log = logging.getLogger("structprune")

HELP = "validate workflow config files (file and line of each problem), without Snakemake"


def arguments(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE")


def run(args) -> None:
    """Read config files as the workflow would (later files update earlier ones) and validate
    them: every problem named with its file, line or key, without Snakemake."""
    from structprune.spec.configcheck import ConfigError, validate_config
    from structprune.spec.configfile import read_config_file

    merged: dict = {}
    for path in args.files:
        _deep_update(merged, read_config_file(path))
    try:
        validate_config(merged)
    except ConfigError as error:
        raise ValueError(f"{', '.join(args.files)}: {error}") from None
    log.info("%s: valid (%d models, %d methods, sparsities %s)", ", ".join(args.files), len(merged["models"]),
             len(merged["methods"]), merged["sparsities"])


def _deep_update(base: dict, update: dict) -> None:
    """Snakemake's merge of config files: mappings merge key by key, anything else replaces."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
