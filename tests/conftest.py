import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def in_ci() -> bool:
    return os.environ.get("CI") == "true"
