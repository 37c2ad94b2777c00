import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine has 2 cores shared with other jobs; one thread is far faster here.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
