"""MAML tests run single-threaded.

Why: these tests are dominated by float64 second-order backward passes through small
convolutions. On the 2-core CI machines, torch's intra-op pool with 2 threads made them 5-15x
slower than 1 thread whenever another process shared the cores (threads spin at barriers while
a peer is descheduled), turning a ~2-minute suite into 15 minutes. One thread is also
deterministic. The setting is restored after each test so other test packages are unaffected.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
