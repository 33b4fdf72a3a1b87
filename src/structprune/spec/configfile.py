"""Reading a config file strictly, and typing `--config` overrides.

YAML as Snakemake reads it forgives three slips a benchmark must not: a key written twice keeps
the last value silently, an empty file or a list is "not a config" without the file's name, and
a syntax error names neither file nor line. `read_config_file` names the file and the line of
each. Snakemake parses `--config KEY=VALUE` with YAML's base loader, so every number inside a
list or mapping arrives as a string (`sparsities=[35]` gives ['35']); `typed_overrides` reads
those scalars as YAML would in a file. Standard library and yaml only (the Snakefile imports it).
"""

from __future__ import annotations

from pathlib import Path

import yaml


class ConfigFileError(ValueError):
    """A config file that cannot be read as a config; the message names the file and line."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a mapping with a key written twice is an error."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first at line {seen[key] + 1}; YAML would keep the last silently)",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_config_file(path: str | Path) -> dict:
    """The mapping a config file holds, or ConfigFileError naming the file, the line and the fix."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigFileError(f"config file {path}: cannot be read ({error.strerror or error})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigFileError(f"config file {path}{where}: {getattr(error, 'problem', None) or error}") from None
    if data is None:
        raise ConfigFileError(f"config file {path} is empty: it needs at least models, methods and sparsities "
                              "(see config.yaml)")
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path} holds a {type(data).__name__}, not a mapping of keys (models, "
                              "methods, sparsities, ...): see config.yaml")
    return data


def _typed(value):
    """A scalar string read as YAML reads it in a file (35 -> 35, 0.5 -> 0.5, true -> True, null
    -> None); other strings, and the containers' other items, unchanged."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, (int, float, bool)) or parsed is None and value.strip() in ("null", "~") else value
    return value


def typed_overrides(overrides: dict) -> dict:
    """`--config` overrides with the scalars inside lists and mappings typed (top-level values
    Snakemake types itself); raises ConfigFileError for an empty mapping, which the merge would
    silently ignore (`--config methods={}` does not remove the methods)."""
    empty = [key for key, value in overrides.items() if value == {}]
    if empty:
        raise ConfigFileError(f"--config {empty[0]}={overrides[empty[0]]!r}: an override merges into the config, so an "
                              "empty value changes nothing; to run fewer entries write your own config file "
                              "(--configfile, which replaces config.yaml)")
    return {key: _typed(value) if isinstance(value, (dict, list)) else value for key, value in overrides.items()}
