import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_llama, tiny_tokenizer  # noqa: E402

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
