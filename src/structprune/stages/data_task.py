"""The data-task stage: a zero-shot task split exported to jsonl, with its hash."""

from __future__ import annotations

import logging
from pathlib import Path

from structprune.stages.common import (
    data_mirror,
)

log = logging.getLogger("structprune")

HELP = "export a zero-shot task split to jsonl"


def arguments(parser) -> None:
    parser.add_argument("--task", required=True)
    parser.add_argument("--mirror", default=None)
    parser.add_argument("--out", required=True)


def run(args) -> None:
    from structprune.data.tasks import read_task_records, write_jsonl
    from structprune.io.artifacts import atomic_file, sha256_path, write_json

    records = read_task_records(args.task, data_mirror(args))
    with atomic_file(args.out) as tmp:
        write_jsonl(records, tmp)
        digest = sha256_path(tmp)
    write_json(Path(args.out).with_suffix(".json"), {"task": args.task, "records": len(records), "sha256": digest})
    log.info("task %s: %d records -> %s", args.task, len(records), args.out)
