import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath) and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="integration tests need root"))
