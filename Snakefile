# structprune: one-shot structured pruning of LLaMA-style models, benchmarked side by side.
# Thin entry point: the rules live in workflow/rules/, one concern per file.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# A --configfile replaces the embedded default instead of extending it: config.yaml is read only
# when no config file is named on the command line (so `--configfile config/paper.yaml` plans
# LLaMA-7B's jobs alone). --config KEY=VALUE still overrides single keys of either.
if not workflow.overwrite_configfiles:
    import yaml

    try:  # name the file, line and column of a YAML slip (Snakemake's own message names neither)
        if os.path.exists("config.yaml"):
            with open("config.yaml") as handle:
                yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise WorkflowError(f"config.yaml is not valid YAML at{where}: {getattr(error, 'problem', error)}")

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
