"""Builds snn_cuda._C: the CPU kernels always, the CUDA kernels when they can be built.

Environment:
  SNN_CUDA_BUILD_CUDA=1   force the CUDA build (fails loudly if it cannot be done)
  SNN_CUDA_BUILD_CUDA=0   skip it
  (unset)                 build CUDA when torch is a CUDA build and a CUDA toolkit is found
  CUDA_HOME               the toolkit; found automatically when unset (see _find_cuda_home)
  TORCH_CUDA_ARCH_LIST    GPU architectures; defaults to the visible GPU, or "8.0;9.0" without one
  MAX_JOBS                parallel compile jobs (ninja)

Install with `pip install --no-build-isolation .` so the extension is built against the torch that
is already installed (an isolated build would fetch and build against a second torch).
"""

import glob
import os
import shutil

from setuptools import setup


def _find_cuda_home():
    """A CUDA toolkit directory that has nvcc and libcudart, or None.

    torch guesses CUDA_HOME from `which nvcc`; where nvcc is a wrapper script (as in
    /usr/local/bin here) that guess has no libraries and the link fails. So look for a real
    toolkit first.
    """
    candidates = []
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        has_nvcc = os.path.exists(os.path.join(home, "bin", "nvcc"))
        has_cudart = glob.glob(os.path.join(home, "lib64", "libcudart.so*")) or glob.glob(
            os.path.join(home, "targets", "*", "lib", "libcudart.so*")
        )
        if has_nvcc and has_cudart:
            return home
    return None


_cuda_home = _find_cuda_home()
if _cuda_home:
    # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME at import.
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda():
    flag = os.environ.get("SNN_CUDA_BUILD_CUDA", "").strip()
    if flag == "0":
        return False
    possible = torch.version.cuda is not None and _cuda_home is not None
    if flag == "1":
        if not possible:
            raise RuntimeError(
                "SNN_CUDA_BUILD_CUDA=1 but the CUDA build is not possible: "
                f"torch.version.cuda={torch.version.cuda!r}, CUDA toolkit={_cuda_home!r}"
            )
        return True
    return possible


def _default_arch_list():
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return
    if torch.cuda.is_available():
        return  # torch derives it from the visible GPUs
    # Without a GPU torch cannot guess and crashes; cover A100 and H100/H200.
    os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"


here = os.path.dirname(os.path.abspath(__file__))
csrc = os.path.join("snn_cuda", "csrc")
sources = [os.path.join(csrc, "spiking_recurrence.cpp")]
# -g0: python's flags add -g, which doubles compile time and bloats the library.
# -fopenmp: at::parallel_for is inline and runs on one thread without it.
# -fno-trapping-math: lets gcc evaluate both sides of a select (a spike's `z > 0 ? 1 : 0` feeding
# arithmetic) so the binary-spike lane loops vectorise (without it they ran 2.5x slower). It changes
# no result: no reassociation, no contraction, NaN/inf semantics kept; only FP exception flags,
# which nothing here reads, may differ.
# -ffp-contract=off: g++ would otherwise fuse a*b + c into one FMA wherever the target has it
# (always on aarch64, e.g. a GH200's host; x86 with -march=native), and the CPU kernel would stop
# matching the reference loop and the GPU (built with --fmad=false) bit for bit.
cxx_flags = ["-O3", "-g0", "-fopenmp", "-fno-trapping-math", "-ffp-contract=off"]
extra_link = ["-fopenmp"]
use_cuda = _want_cuda()
if use_cuda:
    _default_arch_list()
    sources.append(os.path.join(csrc, "cuda", "spiking_recurrence.cu"))
    # --fmad=false keeps a*b+c as two rounded operations, as in the reference loop, so that
    # CUDA results match CPU and reference to rounding of the same expression.
    nvcc_flags = ["-O3", "--fmad=false", "-lineinfo"]
    extension = CUDAExtension(
        "snn_cuda._C",
        sources,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=extra_link,
    )
else:
    extension = CppExtension(
        "snn_cuda._C",
        sources,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=extra_link,
    )

if "MAX_JOBS" not in os.environ:
    os.environ["MAX_JOBS"] = str(max(1, os.cpu_count() or 1))

setup(
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
)
