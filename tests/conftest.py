import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_slide() -> Path:
    """The real Aperio slide named by MAGFLOW_TEST_SLIDE (CMU-1-Small-Region.svs); skipped when absent."""
    path = os.environ.get("MAGFLOW_TEST_SLIDE", "")
    if not path:
        pytest.skip("set MAGFLOW_TEST_SLIDE to CMU-1-Small-Region.svs to run the real-slide tests")
    if not Path(path).is_file():
        pytest.fail(f"MAGFLOW_TEST_SLIDE is set but {path} does not exist")
    return Path(path).resolve()


@pytest.fixture
def one_torch_thread():
    """Tiny models on one intra-op thread: several threads only contend (many times slower on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
