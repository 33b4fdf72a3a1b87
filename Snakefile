# structprune: one-shot structured pruning of LLaMA-style models, benchmarked side by side.
# Thin entry point: the rules live in workflow/rules/, one concern per file.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# A --configfile replaces the embedded default instead of extending it: config.yaml is read only
# when no config file is named on the command line (so `--configfile config/paper.yaml` plans
# LLaMA-7B's jobs alone). --config KEY=VALUE still overrides single keys of either.
# Each config file is first read strictly (configfile.py): a key written twice, an empty file or
# a YAML slip is an error naming the file and line (Snakemake's own messages name neither).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from structprune.spec.configfile import ConfigFileError, read_config_file

try:
    for path in workflow.overwrite_configfiles or (["config.yaml"] if os.path.exists("config.yaml") else []):
        read_config_file(path)
except ConfigFileError as error:
    raise WorkflowError(str(error)) from None

if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# Helpers first (validation, input functions, resources, target lists), then one file per
# stage; integrity.smk last, as its scan lists the files the rules write.
include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/recipes.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/integrity.smk"


rule all:
    input:
        all_targets(),
    default_target: True
