from __future__ import annotations

import pytest
from config_fixtures import valid_yaml

import config


@pytest.fixture
def text() -> str:
    return valid_yaml()


@pytest.fixture
def cfg() -> config.MachineConfig:
    return config.load(valid_yaml())
