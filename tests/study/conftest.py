import pytest

from tests.study.helpers import RayCluster, Study


@pytest.fixture
def study(tmp_path):
    s = Study(tmp_path)
    yield s
    s.close()


@pytest.fixture
def cluster(tmp_path):
    c = RayCluster(tmp_path)
    yield c
    c.close()
