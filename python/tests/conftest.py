import pytest


@pytest.fixture
def data_dir(tmp_path):
    """A fresh directory for one store."""
    return str(tmp_path / "store")
