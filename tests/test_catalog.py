"""One vocabulary: the registry, the schema, the command line and the task list agree with
spec/catalog.py, so that a new score or choice is written in one place."""

from __future__ import annotations

import yaml

from structprune.spec import catalog
from structprune.spec.configcheck import SCHEMA, with_catalog_enums

# schema property (or list-item parent) -> the catalog list its enum must be
EXPECTED = {
    "device": catalog.DEVICES, "dtype": catalog.DTYPES, "dataset": catalog.CALIBRATION_SOURCES,
    "score": catalog.ALL_SCORES, "unit": catalog.UNITS, "heads": catalog.HEAD_MODES, "allocation": catalog.ALLOCATIONS,
    "budget": catalog.BUDGETS, "sparsity_of": catalog.SPARSITY_OF, "flow": catalog.FLOWS,
    "reconstruct": catalog.RECONSTRUCTIONS, "target": catalog.TARGETS, "type": catalog.GGUF_TYPES,
    "datasets": catalog.PERPLEXITY_DATASETS, "tasks": catalog.TASKS,
    "windows": catalog.PERPLEXITY_WINDOWS, "items": catalog.TASK_ITEMS,
}
NARROWER = {("properties", "recover", "properties", "reconstruct")}  # the recovery is a refit: a subset on purpose
NOT_CATALOG = {"source", "layers"}  # data.source (where text comes from), layers' words: one place each


def schema_enums(node, path=()):
    """(path, property name, enum) of every enum in the schema: the name of the nearest property
    (a key under `properties`; a list's enum is its items', under the list's name)."""
    if isinstance(node, dict):
        if "enum" in node:
            named = [p for i, p in enumerate(path) if i and path[i - 1] == "properties"]
            yield path, named[-1], node["enum"]
        for key, value in node.items():
            yield from schema_enums(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from schema_enums(value, path + (index,))


def test_every_schema_enum_is_a_catalog_list():
    schema = with_catalog_enums(yaml.safe_load(SCHEMA.read_text()))
    seen = set()
    for path, name, enum in schema_enums(schema):
        if name in NOT_CATALOG:
            continue
        assert name in EXPECTED, f"schema enum at {path} has no catalog list: add it to spec/catalog.py"
        expected = list(EXPECTED[name])
        if any(path[:len(n)] == n for n in NARROWER):
            assert set(enum) < set(expected), path
        else:
            assert enum == expected, f"schema enum at {path}: {enum} != catalog {expected}"
        seen.add(name)
    assert seen == set(EXPECTED)  # every catalog list is used by the schema


def test_the_registry_is_the_catalog():
    from structprune.pruning.scores import REGISTRY
    from structprune.spec.scoreoptions import score_option_specs

    assert sorted(REGISTRY) == sorted(catalog.SCORES)
    for name, (module, statistics) in catalog.SCORES.items():
        assert REGISTRY[name].make.__module__ == f"structprune.pruning.scores.{module}", name
        assert REGISTRY[name].statistics == statistics
    assert sorted(score_option_specs()) == sorted(catalog.SCORES)  # the torch-free reading finds the same makers


def test_a_score_missing_from_the_catalog_is_refused_at_registration():
    import pytest

    from structprune.pruning.scores import register

    with pytest.raises(ValueError, match="not in spec/catalog.py SCORES"):
        register("nope", citation="none")


def test_command_line_choices_and_tasks_come_from_the_catalog():
    from structprune.cli import build_parser
    from structprune.data.tasks import TASKS

    parser = build_parser()
    prune = parser._subparsers._group_actions[0].choices["prune"]
    choices = {action.dest: tuple(action.choices) for action in prune._actions if action.choices}
    assert {key: choices[key] for key in catalog.CHOICES} == catalog.CHOICES
    stages = parser._subparsers._group_actions[0].choices
    evaluate, gguf = ({action.dest: tuple(action.choices) for action in stages[name]._actions if action.choices}
                      for name in ("evaluate", "evaluate-gguf"))
    assert evaluate["windows"] == gguf["windows"] == catalog.PERPLEXITY_WINDOWS
    assert evaluate["items"] == catalog.TASK_ITEMS
    assert sorted(TASKS) == sorted(catalog.TASKS)


def test_every_perplexity_dataset_has_a_reader():
    from structprune.data.text import TEXT_DATASETS

    assert sorted(TEXT_DATASETS) == sorted(catalog.PERPLEXITY_DATASETS)
