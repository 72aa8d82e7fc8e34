import time

import pytest

from tests.study.helpers import ray_processes


@pytest.fixture(autouse=True)
def no_ray_process_outlives_its_test():
    """Every Ray process a test starts is gone after it, whether the test passed or failed."""
    before = ray_processes()
    yield
    deadline = time.time() + 15
    while (left := ray_processes() - before) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left running by this test: {sorted(left)}"
