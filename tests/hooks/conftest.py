"""Fixtures for tests/hooks; the models and SAEs themselves live in tiny_models.py."""

import pytest
import torch
from tiny_models import FAMILIES


@pytest.fixture(params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture
def model(family):
    torch.manual_seed(0)
    return FAMILIES[family]()
