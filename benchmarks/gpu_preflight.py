"""What benchmarks/gpu_check.sh needs, checked before it spends minutes building: one line per check,
``ok`` or what is missing and what to do; exit status 1 if something required is missing.

    python benchmarks/gpu_preflight.py            # on the GPU machine
    python benchmarks/gpu_preflight.py --no-gpu   # dry run: a missing GPU is reported, not fatal
    python benchmarks/gpu_preflight.py --max-elements   # prints only the benchmark size cap
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig

# Bytes of GPU memory per element of the largest benchmark case (float64: input, states, outputs,
# their gradients and the saved/upstream tensors, ~12 tensors of 8 bytes); the cap keeps every case
# inside the free memory, with a quarter spare.
BYTES_PER_ELEMENT = 96


def nvcc_path():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


def checks(no_gpu: bool):
    """Yields (required, ok, what, message)."""
    yield True, sys.version_info >= (3, 9), "python", f"{sys.executable} {sys.version.split()[0]}"
    for module, why in (("setuptools", "pip install --no-build-isolation builds with it"),
                        ("pytest", "the test steps"), ("numpy", "the tests and benchmarks")):
        found = importlib.util.find_spec(module) is not None
        yield True, found, module, "found" if found else f"missing ({why}): pip install {module}"
    # setuptools >= 70.1 builds wheels itself; older ones need the wheel package for that.
    try:
        import setuptools

        major, minor = (int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
        needs_wheel = (major, minor) < (70, 1)
    except Exception:
        needs_wheel = True
    found = importlib.util.find_spec("wheel") is not None
    yield needs_wheel, found or not needs_wheel, "wheel", (
        "found" if found else "not needed (setuptools >= 70.1)" if not needs_wheel
        else "missing (setuptools < 70.1 needs it to build): pip install wheel")
    found = importlib.util.find_spec("ninja") is not None or shutil.which("ninja") is not None
    yield False, found, "ninja", "found" if found else "missing: the build falls back to a slower one"
    marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    managed = os.path.exists(marker) and not in_venv
    yield True, not managed, "installable python", (
        "ok" if not managed else
        f"{sys.executable} is externally managed (PEP 668), pip will refuse to install: make a venv "
        "that sees its torch, `python3 -m venv --system-site-packages .venv-gpu`, and run with "
        "PYTHON=.venv-gpu/bin/python")
    try:
        import torch
    except Exception as error:  # pragma: no cover - depends on the machine
        yield True, False, "torch", f"does not import: {error}"
        return
    yield True, True, "torch", f"{torch.__version__}, built for CUDA {torch.version.cuda}"
    yield True, torch.version.cuda is not None, "torch CUDA build", (
        "ok" if torch.version.cuda else "this torch is a CPU-only build: the CUDA kernels cannot run")
    nvcc = nvcc_path()
    if nvcc is None:
        yield True, False, "nvcc", "not found (CUDA_HOME, PATH, /usr/local/cuda): the CUDA kernels cannot be built"
    else:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release (\d+)\.(\d+)", out)
        version = f"{m.group(1)}.{m.group(2)}" if m else "unknown"
        same = bool(m and torch.version.cuda and m.group(1) == torch.version.cuda.split(".")[0])
        yield True, same, "nvcc version", (
            f"{nvcc}: CUDA {version}, torch's {torch.version.cuda}" + (
                "" if same else ": the major versions must match (torch refuses to build the "
                "extension otherwise); point CUDA_HOME at a matching toolkit"))
    sanitizer = shutil.which("compute-sanitizer") or (
        os.path.join(os.path.dirname(nvcc), "compute-sanitizer") if nvcc else None)
    found = bool(sanitizer and os.path.exists(sanitizer))
    yield False, found, "compute-sanitizer", sanitizer if found else "missing: its step is skipped"
    gpu = torch.cuda.is_available()
    if gpu:
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        cap = torch.cuda.get_device_capability(0)
        yield True, True, "GPU", (f"{name}, sm_{cap[0]}{cap[1]}, {free / 2**30:.0f} of "
                                  f"{total / 2**30:.0f} GiB free, {torch.cuda.device_count()} device(s)")
    else:
        yield not no_gpu, False, "GPU", "no CUDA device visible" + (" (dry run: fine)" if no_gpu else "")


def max_elements() -> int:
    import torch

    if not torch.cuda.is_available():
        return 2**27
    free, _ = torch.cuda.mem_get_info()
    return int(free * 0.75) // BYTES_PER_ELEMENT


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-gpu", action="store_true", help="a missing GPU is not an error (dry run)")
    parser.add_argument("--max-elements", action="store_true",
                        help="print the largest T x lanes the benchmarks may use here, and exit")
    args = parser.parse_args(argv)
    if args.max_elements:
        print(max_elements())
        return 0
    failed = False
    for required, ok, what, message in checks(args.no_gpu):
        status = "ok" if ok else ("MISSING" if required else "missing (optional)")
        print(f"preflight: {what:20s} {status:20s} {message}")
        failed |= required and not ok
    print("preflight: " + ("FAILED: fix the lines marked MISSING" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
