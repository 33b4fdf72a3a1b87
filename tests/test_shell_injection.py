"""No config string can run a command (issue #26): labels, a source folder, a mirror path and a
config file path full of `$(...)`, backticks, quotes, `$HOME` and spaces go through every rule's
shell command, each of which is then run by bash with `python` standing in as a recorder. Nothing
may run, and each string must reach the stage as one literal argument."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import yaml
from tiny import save_tiny_checkpoint, tiny_mirror
from workflow_helpers import snakemake, tiny_config

LABEL = """Ours's $(touch PWNED_label) `touch PWNED_tick` "dq" $HOME"""
REMEDY = "A 'b' \"c\" ; touch PWNED_semicolon && echo"
RECORDER = """#!{python}
import json, os, sys
with open(os.environ["STRUCTPRUNE_ARGV_RECORD"], "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def planned_commands(workdir: Path, configfile: Path) -> list[str]:
    out = snakemake(workdir, "--dry-run", "--printshellcmds", "--forceall", configfile=configfile).stdout
    return [line.removeprefix("Shell command: ") for line in out.splitlines()
            if line.startswith("Shell command: ") and line != "Shell command: None"]  # rule all runs nothing


def test_hostile_strings_reach_every_stage_as_literal_arguments_and_run_nothing(tmp_path):
    source = save_tiny_checkpoint(tmp_path / "my model $(touch PWNED_source) 'q\"")  # planning checks it exists
    mirror = tiny_mirror(tmp_path / "mirror `touch PWNED_mirror` $HOME")
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    cfg = tiny_config(tmp_path)
    cfg["models"]["tiny"].update(source=str(source), gguf_tokenizer_pre="llama-bpe")
    cfg["data"]["mirror"] = str(mirror)
    cfg["methods"]["ours"]["label"] = LABEL
    cfg["methods"]["ours"]["remedy"]["label"] = REMEDY
    cfg["export"] = {"enabled": True}
    configfile = workdir / "my config $(touch PWNED_configfile).yaml"
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))

    commands = planned_commands(workdir, configfile)
    stages = {"model", "data-eval", "data-calib", "data-heldout", "data-task", "calibrate", "gradients", "score",
              "dense-stream", "prune", "select", "evaluate", "export", "evaluate-gguf", "speed", "report"}
    assert stages == {w for c in commands for w in c.split() if w in stages}, "some rule's command was not tried"

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "python"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "argv.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STRUCTPRUNE_ARGV_RECORD": str(record)}
    for command in commands:
        if m := re.search(r"> (\S+) 2>&1$", command):
            (workdir / m.group(1)).parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr)

    assert not [p for p in tmp_path.rglob("PWNED*")], "a config string ran a command"
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == len(commands)

    def values_of(flag):
        return [call[i + 1] for call in calls for i, word in enumerate(call) if word == flag]

    assert set(values_of("--source")) == {str(source)}  # the model job and every export
    assert set(values_of("--mirror")) == {str(mirror)}
    labels = values_of("--label")
    assert f"ours:pruned={LABEL}" in labels and f"ours:recovered={REMEDY}" in labels
    report = next(call for call in calls if "report" in call)
    files = report[report.index("--config-files") + 1:]
    assert files[0] == str(configfile) and (len(files) == 1 or files[1].startswith("--"))
    assert LABEL in json.loads(report[report.index("--note-json") + 1])
