"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks gain nothing from threads, and on a small shared CPU spin-waiting threads cost
    seconds: modules of many small evaluations opt in with `pytestmark = usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
