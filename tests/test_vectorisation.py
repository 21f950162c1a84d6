"""The CPU lane loops stay vectorised.

The CPU kernels are fast because gcc vectorises each time step's loop over a block's lanes, and
that is fragile: in snn_cuda 0.3.0 a select on a third loop-invariant flag in the SpikingJelly
backward kept gcc from vectorising it, silently (same results, 2.8x slower), and it took a
benchmark a session later to notice. So this compiles the math header with setup.py's flags, once
per kernel the CPU launches (blocks of kCpuBlock lanes; float32 and float64; every reset,
convention and surrogate), asks gcc what it vectorised (``-fopt-info-vec``), and requires every
loop marked ``[lane loop]`` in the header to be reported vectorised and never "couldn't
vectorize". float16/bfloat16 convert through c10's scalar routines and are not expected to
vectorise; they are not checked.

A loop marked ``[lane loop, kShifts]`` exists only in the models that shift their rows (the graded
neuron's delayed layer) and is checked in those.

Known exception, asserted as such (so that fixing it shows up here): the graded neuron's forward in
float64 runs scalar (its gate bits come from a 64-bit compare, and SSE2 has no 64-bit integer
select); it did before it moved onto the generic loops too.
"""

from __future__ import annotations

import ast
import concurrent.futures
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "snn_cuda" / "csrc"
HEADER = CSRC / "spiking_recurrence.h"
MARKER = "[lane loop]"
SHIFTS_MARKER = "[lane loop, kShifts]"
SHIFTING_MODELS = ("GradedNeuron<",)

# (function, dtype, model) known to run scalar (see the module docstring).
KNOWN_SCALAR = {("neuron_forward_lanes", "double", "GradedNeuron<")}


def compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return None
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    if "clang" in version.lower() or ("g++" not in version and "GCC" not in version):
        return None  # -fopt-info is gcc's
    return cxx


def setup_cxx_flags():
    """setup.py's ``cxx_flags = [...]``, so that the check compiles what the build compiles."""
    match = re.search(r"^cxx_flags = (\[.*?\])$", (ROOT / "setup.py").read_text(), re.M)
    assert match, "setup.py no longer defines cxx_flags on one line; update this test"
    return [f for f in ast.literal_eval(match.group(1)) if f != "-fopenmp"]


def cpu_block():
    match = re.search(r"constexpr int kCpuBlock = (\d+);", (CSRC / "spiking_recurrence.cpp").read_text())
    assert match, "kCpuBlock not found in spiking_recurrence.cpp; update this test"
    return int(match.group(1))


def marked_loops():
    """{function name: [(line number, only in shifting models)]} of its marked loops (the loop is
    the line after the marker)."""
    loops, function = {}, None
    for number, line in enumerate(HEADER.read_text().splitlines(), start=1):
        definition = re.search(r"inline void (\w+_lanes)\(", line)
        if definition:
            function = definition.group(1)
        if MARKER in line or SHIFTS_MARKER in line:
            assert function is not None, f"marker at line {number} outside a lanes function"
            loops.setdefault(function, []).append((number + 1, SHIFTS_MARKER in line))
    return loops


def instantiations(block):
    """(function, dtype, explicit instantiation) for every CPU block kernel."""
    out = []
    for dt in ("float", "double"):
        all_resets = ("kSpikeResetSubtract", "kSpikeResetHard", "kSpikeResetNone")
        models = [f"LifModel<{conv}, {reset}>"
                  for conv, resets in (("kConvSnntorch", all_resets), ("kConvSnntorchNow", all_resets),
                                       ("kConvSpikingjelly", all_resets[:2]),
                                       ("kConvSpikingjellyIf", all_resets[:2]),
                                       ("kConvSpikingjellyPlif", all_resets[:2]))
                  for reset in resets]
        models += [f"{name}<{reset}>" for name in ("SnntorchSynaptic", "SnntorchRleaky", "SnntorchRsynaptic")
                   for reset in all_resets] + ["NorseLif", "NorseLi", "NorseLsnn", "Alif"]
        models += ["GradedNeuron<0>", "GradedNeuron<1>"]  # proportional, subtract
        for model in models:
            out.append(("neuron_forward_lanes", dt,
                        f"neuron_forward_lanes<{block}, {model}, {dt}, {dt}>"
                        f"(const NeuronForwardArgs<{dt}, {dt}>&, int64_t, int)"))
            # The graded neuron has no surrogate: its op launches one (kSurrogateSigmoid).
            for surrogate in (3,) if model.startswith("GradedNeuron") else range(4):
                out.append(("neuron_backward_lanes", dt,
                            f"neuron_backward_lanes<{block}, {model}, {surrogate}, {dt}, {dt}>"
                            f"(const NeuronBackwardArgs<{dt}, {dt}>&, int64_t, int)"))
    return out


def vectoriser_report(cxx, flags, includes, instantiation, workdir, index):
    source = workdir / f"instance_{index}.cpp"
    source.write_text('#include "spiking_recurrence.h"\n'
                      f"namespace snn_cuda {{ template void {instantiation}; }}\n")
    result = subprocess.run(
        [cxx, *flags, "-std=c++17", "-fPIC", *includes, f"-I{CSRC}", "-c", str(source),
         "-o", os.devnull, "-fopt-info-vec-optimized", "-fopt-info-vec-missed"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, f"compiling {instantiation} failed:\n{result.stderr[-3000:]}"
    return result.stderr


def loop_status(report, line):
    """'vectorised', 'scalar' or 'absent' for the loop at ``line`` of the header."""
    tag = f"spiking_recurrence.h:{line}:"
    messages = [m for m in report.splitlines() if tag in m]
    vectorised = any("optimized: loop vectorized" in m for m in messages)
    missed = any("couldn't vectorize loop" in m for m in messages)
    if vectorised and not missed:
        return "vectorised"
    return "scalar" if messages else "absent"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="checks gcc's x86-64 vectoriser")
def test_every_marked_lane_loop_is_vectorised(tmp_path):
    cxx = compiler()
    if cxx is None:
        pytest.skip("needs gcc (the check reads gcc's -fopt-info report)")
    from torch.utils.cpp_extension import include_paths

    includes = [f"-I{p}" for p in include_paths()]
    flags = setup_cxx_flags()
    loops = marked_loops()
    assert set(loops) == {"neuron_forward_lanes", "neuron_backward_lanes"}, loops
    cases = instantiations(cpu_block())
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        reports = list(pool.map(
            lambda item: vectoriser_report(cxx, flags, includes, item[1][2], tmp_path, item[0]),
            enumerate(cases),
        ))
    failures = []
    for (function, dtype, instantiation), report in zip(cases, reports):
        known = any(f == function and d == dtype and m in instantiation for f, d, m in KNOWN_SCALAR)
        expected = "scalar" if known else "vectorised"
        shifting = any(m in instantiation for m in SHIFTING_MODELS)
        for line, only_shifting in loops[function]:
            if only_shifting and not shifting:
                continue
            status = loop_status(report, line)
            if status != expected:
                failures.append(f"{instantiation.split('(')[0]}: loop at line {line} is {status}, "
                                f"expected {expected}")
    assert not failures, "\n".join(failures)
    print(f"{len(cases)} kernels, {sum(len(v) for v in loops.values())} marked loops checked",
          file=sys.stderr)
