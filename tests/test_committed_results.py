"""The committed tables, plots and README headlines are in step with the configs that made
them (issue #30): every configured method stage is a row at every configured sparsity, no row
is left from a method the config no longer has, and the README shows the headline the report
wrote. A config edited without regenerating its table fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from structprune.spec.configcheck import row_label, validate_config

REPO = Path(__file__).resolve().parents[1]
COMMITTED = ["config.yaml", "config/benchmark.yaml", "config/gemma3-270m.yaml", "config/disp-llm.yaml",
             "config/frontier.yaml", "config/schedules.yaml"]  # the configs whose results/ tables are committed
HEADLINED = ["config/benchmark.yaml", "config/gemma3-270m.yaml",  # their headlines open the README (the quick run's rows are a subset)
             "config/frontier.yaml", "config/schedules.yaml"]  # the speed frontier's and the schedules', in the methods section


def _config(path: str) -> dict:
    cfg = yaml.safe_load((REPO / path).read_text())
    validate_config(cfg)  # fills the schema's defaults (remedy, recover)
    return cfg


def _stems(cfg: dict) -> list[str]:
    """Each model's report file stem: <model>, or <model>.<name> for a named config (common.smk)."""
    return [f"{model}.{cfg['name']}" if cfg.get("name") else model for model in cfg["models"]]


def _expected_rows(cfg: dict) -> set[tuple[int, str]]:
    rows = {(0, "dense")}
    for sparsity in cfg["sparsities"]:
        for name, method in cfg["methods"].items():
            for stage in ("pruned", "recovered") if method["recover"] else ("pruned",):
                rows.add((sparsity, row_label(cfg, name, stage)))
    return rows


@pytest.mark.parametrize("config_path", COMMITTED)
def test_each_committed_table_has_exactly_the_configured_rows(config_path):
    cfg = _config(config_path)
    for model in _stems(cfg):
        table = pd.read_csv(REPO / "results/tables" / f"{model}.csv")
        rows = set(zip(table["Sparsity (%)"].astype(int), table["Method"]))
        expected = _expected_rows(cfg)
        assert rows == expected, (f"results/tables/{model}.csv is not the table {config_path} makes: "
                                  f"missing {sorted(expected - rows)}, extra {sorted(rows - expected)}; regenerate it")
        markdown = (REPO / "results/tables" / f"{model}.md").read_text()
        assert all(f"| {label} |" in markdown for _, label in expected), f"{model}.md lacks a configured row"
        for plot in ("ppl", "accuracy", "tradeoff"):
            assert (REPO / "results/plots" / f"{model}.{plot}.png").is_file(), plot


@pytest.mark.parametrize("config_path", HEADLINED)
def test_the_readme_shows_the_headline_the_report_wrote(config_path):
    readme = (REPO / "README.md").read_text()
    for model in _stems(_config(config_path)):
        block = re.search(rf"<!-- headline:{re.escape(model)} -->\n(.*?)<!-- /headline -->", readme, re.S)
        assert block, f"README.md has no headline block for {model}"
        headline = (REPO / "results/tables" / f"{model}.headline.md").read_text()
        assert block.group(1).strip() == headline.strip(), f"README's {model} headline is not results/tables/{model}.headline.md"
