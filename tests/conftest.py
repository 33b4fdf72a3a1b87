import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import save_tiny_checkpoint, tiny_llama, tiny_mirror, tiny_tokenizer  # noqa: E402
from workflow_helpers import ONE_THREAD, snakemake, tiny_config, write_config  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_llama(len(tokenizer))


@pytest.fixture
def input_ids(tokenizer):
    torch.manual_seed(1)
    return torch.randint(3, len(tokenizer), (6, 16))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The whole tiny DAG, run once per session locally; tests compare against it or dry-run on it."""
    tmp = tmp_path_factory.mktemp("workflow")
    save_tiny_checkpoint(tmp / "tiny-src")
    tiny_mirror(tmp / "mirror")
    workdir = tmp / "run"
    workdir.mkdir()
    config = tiny_config(tmp)
    write_config(workdir, config)
    snakemake(workdir, *ONE_THREAD)
    return workdir, config
