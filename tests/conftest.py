import pytest

import minidl


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so a failure can be rerun exactly."""
    minidl.manual_seed(0)
