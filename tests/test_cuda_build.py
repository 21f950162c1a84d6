"""What can be checked of the CUDA kernels without a GPU: the compiled code itself (read with
cuobjdump from the library CI builds with its CUDA kernels)."""

import os
import sys

import pytest
import torch

import snn_cuda  # noqa: F401  (loads the library)


def test_cuda_kernels_have_no_stack_frame_or_local_memory():
    """Read from the compiled library (no GPU needed): no kernel image, for any architecture built,
    has a stack frame, local memory or local loads/stores (spills, or a local array whose address
    was taken: the backward's absent streams once were)."""
    if not torch._C._dispatch_has_kernel_for_dispatch_key("snn_cuda::lif_fwd", "CUDA"):
        if os.environ.get("SNN_CUDA_EXPECT_CUDA_KERNEL") == "1":
            pytest.fail("SNN_CUDA_EXPECT_CUDA_KERNEL=1 but snn_cuda was built without CUDA kernels")
        pytest.skip("snn_cuda was built without CUDA kernels")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import cuda_resources

    tool = cuda_resources.find_cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it ships in the triton wheel that torch's CUDA build installs)")
    rows = cuda_resources.collect(cuda_resources.find_library(), tool)
    assert len({r["arch"] for r in rows}) >= 1 and len(rows) >= 100
    bad = [(r["arch"], r["kernel"], r["stack"], r["local"], r["local_ops"]) for r in rows
           if r["stack"] or r["local"] or r["local_ops"]]
    assert not bad, f"kernels with a stack frame / local memory / local loads or stores: {bad[:8]}"
    # The time loops are software-pipelined: each chunk of 8 steps issues its loads (8 per input
    # stream) before its dependent chain and its stores. A plain step-by-step loop shows 1-4.
    short = [(r["arch"], r["kernel"], r["longest_load_run"]) for r in rows
             if (r["longest_load_run"] or 0) < 8]
    assert not short, f"kernels without a run of >= 8 global loads (not pipelined?): {short[:8]}"
