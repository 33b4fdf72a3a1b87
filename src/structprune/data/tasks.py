"""Zero-shot tasks for lm-eval, run offline from local jsonl files.

The `data` stage exports every task split to ``<dir>/<task>.jsonl`` (from the
mirror or the Hub); evaluation takes the *builtin* lm-eval task config and only
repoints its dataset at that file, so prompts, choices and metrics stay those of
the builtin task.

HellaSwag adaptation: the mirror holds the preprocessed HellaSwag text (no
``ctx_a``/``ctx_b``). We export ``ctx_a = ctx_preprocessed`` and ``ctx_b = ""``;
the builtin ``process_docs`` then builds
``preprocess(activity_label + ": " + ctx + " ")``, which strips the trailing space.
The only difference from lm-eval's own query is that the first letter of
``ctx_b`` is not capitalised (it is not separable any more). A Hub export keeps
the real ``ctx_a``/``ctx_b``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from structprune.data.text import DataSourceError


@dataclass(frozen=True)
class TaskSource:
    mirror_file: str  # relative to the mirror folder
    split: str  # the split the builtin task evaluates on
    hub_path: str
    hub_name: str | None
    lm_eval_folder: str  # the builtin task's folder under lm_eval/tasks


TASKS: dict[str, TaskSource] = {
    "boolq": TaskSource("tasks/boolq/validation.jsonl", "validation", "aps/super_glue", "boolq", "super_glue/boolq"),
    "piqa": TaskSource("tasks/piqa/validation.jsonl", "validation", "baber/piqa", None, "piqa"),
    "hellaswag": TaskSource(
        "tasks/hellaswag/validation.preprocessed.jsonl", "validation", "Rowan/hellaswag", None, "hellaswag"
    ),
    "winogrande": TaskSource(
        "tasks/winogrande/validation.jsonl", "validation", "allenai/winogrande", "winogrande_xl", "winogrande"
    ),
    "arc_easy": TaskSource("tasks/arc_easy/test.jsonl", "test", "allenai/ai2_arc", "ARC-Easy", "arc"),
    "arc_challenge": TaskSource("tasks/arc_challenge/test.jsonl", "test", "allenai/ai2_arc", "ARC-Challenge", "arc"),
    "openbookqa": TaskSource("tasks/openbookqa/test.jsonl", "test", "allenai/openbookqa", "main", "openbookqa"),
}


def task_source(name: str) -> TaskSource:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown zero-shot task {name!r}; known: {sorted(TASKS)}") from None


def _adapt_hellaswag(record: dict) -> dict:
    if "ctx_a" in record:
        return record
    return {**record, "ctx_a": record["ctx_preprocessed"], "ctx_b": "", "label": str(record["label"])}


def read_task_records(name: str, mirror: str | Path | None) -> list[dict]:
    """All records of the task's evaluation split, in file order."""
    source = task_source(name)
    if mirror:
        path = Path(mirror) / source.mirror_file
        if not path.is_file():
            raise DataSourceError(
                f"zero-shot task {name!r} is not in the mirror (expected {path}). Add it, drop "
                "the task from evaluation.tasks in config.yaml, or use the Hub (data.source: hub)."
            )
        with open(path, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    else:
        import datasets

        try:
            rows = datasets.load_dataset(source.hub_path, source.hub_name, split=source.split)
        except Exception as error:
            raise DataSourceError(
                f"zero-shot task {name!r} could not be read from the Hugging Face Hub "
                f"({type(error).__name__}: {error}). Offline, set data.mirror in config.yaml."
            ) from error
        records = [dict(row) for row in rows]
    if name == "hellaswag":
        records = [_adapt_hellaswag(r) for r in records]
    return records


def write_jsonl(records: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def task_manager(names: list[str]):
    """An lm-eval TaskManager that indexes only the folders of `names` (the full index of
    every builtin task takes ~20 s; the configs found are the same files)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.tasks.__file__).parent
    folders = sorted({str(root / task_source(name).lm_eval_folder) for name in names})
    return TaskManager(include_defaults=False, include_path=folders)


def local_task_config(name: str, jsonl: str | Path, task_manager) -> dict:
    """The builtin lm-eval config of `name`, with its dataset pointed at a local jsonl file."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_manager.task_index.get(name)
    if entry is None or entry.yaml_path is None:
        raise ValueError(f"lm-eval has no builtin task {name!r}")
    config = load_yaml(entry.yaml_path, resolve_func=True)
    split = task_source(name).split
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {split: str(Path(jsonl).resolve())}},
        training_split=None,
        validation_split=split if split == "validation" else None,
        test_split=split if split == "test" else None,
        fewshot_split=None,
    )
    return config
