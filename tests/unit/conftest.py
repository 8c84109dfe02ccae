"""Unit-test fixtures: the shipped meter registry and a validator, independent of the environment.

These override `registry` and `validator` from tests/conftest.py, which build on
`load_settings()` and so on `METERSTREAM_*` variables; unit tests read only the defaults.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from meterstream.config import Settings
from meterstream.meters.registry import MeterRegistry, load_registry
from meterstream.rules.validate import Validator

# Unit tests leave nothing behind in the checkout: the property tests run without an example
# database, and Hypothesis' constants cache goes to a temporary directory removed at exit.
if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
    _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="meterstream-hypothesis-")
    atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
    set_hypothesis_home_dir(_HYPOTHESIS_HOME)


@pytest.fixture(scope="session")
def registry() -> MeterRegistry:
    """The meters shipped in `schemas/`."""
    return load_registry(Settings().schemas_dir)


@pytest.fixture(scope="session")
def validator(registry: MeterRegistry) -> Validator:
    """A validator for the shipped meters; it holds no state, so one serves every test."""
    return Validator(registry)
