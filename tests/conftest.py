"""Shared test fixtures: a fresh random seed per run (printed, and reproducible with SNN_TEST_SEED)."""

import os
import random
import zlib

import pytest
import torch

SEED = int(os.environ.get("SNN_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CUDA tests skip)"
    return [
        f"snn_cuda tests: SNN_TEST_SEED={SEED} (set it to replay this run's random cases)",
        f"torch {torch.__version__}, CUDA device: {cuda}",
    ]


@pytest.fixture
def rng(request):
    """A torch.Generator seeded from the run's seed and the test's id: fresh shapes and values on
    every run, the same ones when SNN_TEST_SEED is replayed."""
    seed = (SEED + zlib.crc32(request.node.nodeid.encode())) % (2**63)
    generator = torch.Generator().manual_seed(seed)
    return generator


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device visible: the CUDA kernel cannot run here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped, with the reason, without one)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also at the end (the header is hidden under -q): the seed that replays this run's cases.
    terminalreporter.write_line(f"snn_cuda tests ran with SNN_TEST_SEED={SEED}")
