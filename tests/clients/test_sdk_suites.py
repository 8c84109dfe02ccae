"""Each SDK's own test suite (its unit tests and the shared vectors), run by its own tool."""

from __future__ import annotations

import pytest

from tests.clients.conftest import Toolchains, run


@pytest.mark.parametrize("name", ["node", "go", "java"])
def test_sdk_suite_passes(name: str, toolchains: Toolchains) -> None:
    sdk = toolchains.sdks[name]
    output = run(sdk.suite, sdk.directory, toolchains.env, 900)
    print(output[-3000:])  # noqa: T201 - the runner's own summary, in the pytest log
