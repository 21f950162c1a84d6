"""What the GPU would execute, read from the built library without a GPU: per CUDA kernel and
architecture, registers, stack frame, local memory, local loads/stores in the SASS (spills or local
arrays), the number of global loads issued before the first global store, and the longest run of
global loads with no store between them (a time loop that is a dependent load -> compute -> store
chain shows ~1 per input stream; the software-pipelined one issues a chunk's 8 steps of every
stream before the chain: 8 per stream).

Uses cuobjdump from the `triton` wheel that torch's CUDA build installs (or CUOBJDUMP=path).

    python benchmarks/cuda_resources.py                      # table for every kernel image
    python benchmarks/cuda_resources.py --json out.json --summary
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional


def find_cuobjdump() -> Optional[str]:
    if os.environ.get("CUOBJDUMP"):
        return os.environ["CUOBJDUMP"]
    try:
        import triton

        candidate = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.path.exists(candidate):
            return candidate
    except ImportError:
        pass
    return shutil.which("cuobjdump")


def find_library() -> str:
    import snn_cuda

    found = glob.glob(os.path.join(os.path.dirname(snn_cuda.__file__), "_C*.so"))
    if not found:
        raise SystemExit("snn_cuda/_C*.so not found: build the extension first")
    return found[0]


def demangle(names: List[str]) -> Dict[str, str]:
    tool = shutil.which("c++filt")
    if tool is None or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def short_name(demangled: str) -> str:
    """`void snn_cuda::(anonymous namespace)::lif_forward_kernel<0, float, float>(...)` ->
    `lif_forward_kernel<0, float, float>`."""
    name = demangled.split("(anonymous namespace)::")[-1]
    depth, end = 0, len(name)
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            end = i
            break
    return name[:end].replace("c10::", "")


def resource_usage(tool: str, lib: str) -> List[dict]:
    text = subprocess.run([tool, "-res-usage", lib], capture_output=True, text=True, check=True).stdout
    rows, arch, function = [], None, None
    for line in text.splitlines():
        m = re.search(r"arch = (sm_\d+)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            function = m.group(1)
            continue
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if m and function is not None:
            rows.append({"arch": arch, "mangled": function, "registers": int(m.group(1)),
                         "stack": int(m.group(2)), "local": int(m.group(4))})
            function = None
    return rows


def sass_counts(tool: str, lib: str, arch: str) -> Dict[str, dict]:
    text = subprocess.run([tool, "-sass", "-arch", arch, lib], capture_output=True, text=True).stdout
    counts: Dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = counts.setdefault(m.group(1), {"local_ops": 0, "loads_before_store": 0,
                                                      "stored": False, "global_loads": 0,
                                                      "run": 0, "longest_load_run": 0})
            continue
        if current is None or "/*" not in line:
            continue
        ops = re.findall(r"\b(LDL|STL|LDG|STG)\b", line)
        for op in ops:
            if op in ("LDL", "STL"):
                current["local_ops"] += 1
            elif op == "LDG":
                current["global_loads"] += 1
                current["run"] += 1
                current["longest_load_run"] = max(current["longest_load_run"], current["run"])
                if not current["stored"]:
                    current["loads_before_store"] += 1
            elif op == "STG":
                current["stored"] = True
                current["run"] = 0
    return counts


def collect(lib: str, tool: str) -> List[dict]:
    rows = resource_usage(tool, lib)
    names = demangle(sorted({r["mangled"] for r in rows}))
    by_arch = {arch: sass_counts(tool, lib, arch) for arch in sorted({r["arch"] for r in rows})}
    for r in rows:
        r["kernel"] = short_name(names[r["mangled"]])
        sass = by_arch[r["arch"]].get(r["mangled"], {})
        r["local_ops"] = sass.get("local_ops")
        r["loads_before_first_store"] = sass.get("loads_before_store")
        r["longest_load_run"] = sass.get("longest_load_run")
    return rows


# ------------------------------------------------------------------------------------------------
# A latency/bandwidth model (Little's law), labelled as such: no GPU has measured these kernels.
# To keep a memory system busy, bytes in flight = bandwidth x latency. A thread (one lane) has as
# many bytes in flight as the loads it issues before it needs the first: one step's loads per
# stream in a step-by-step loop, a chunk's (8 steps') in the pipelined one. So the lanes needed to
# be bandwidth-bound are bandwidth x latency / bytes in flight per lane -- if that many threads can
# be resident at once (registers per thread limit it).

H200 = dict(name="H200", bandwidth=4.8e12, latency=600e-9, sms=132, registers_per_sm=65536,
            max_warps_per_sm=64, max_blocks_per_sm=32, threads_per_block=128)
# Input streams each kernel reads per step (typical training case; see the kernels' arguments).
STREAMS = {
    "lif_forward_kernel": (1, "graded forward: the excitation"),
    "lif_backward_kernel": (4, "graded backward: grad states, grad outputs, outputs, states"),
    "lif_spike_forward_kernel": (1, "LIF forward: the input"),
    "lif_spike_backward_kernel": (3, "LIF backward: grad spikes, grad membrane, membrane"),
    "neuron_forward_kernel": (1, "model forward (Synaptic): the input"),
    "neuron_backward_kernel": (3, "model backward (Synaptic): grad spikes, saved syn and mem rows"),
}
ELEMENT_BYTES = {"double": 8, "float": 4, "Half": 2, "BFloat16": 2}


def resident_lanes(registers: int, gpu=H200) -> int:
    per_warp = -(-registers // 8) * 8 * 32  # allocated per warp, in units of 8 registers a thread
    warps = min(gpu["registers_per_sm"] // per_warp, gpu["max_warps_per_sm"])
    blocks = min(warps // (gpu["threads_per_block"] // 32), gpu["max_blocks_per_sm"])
    return blocks * gpu["threads_per_block"] * gpu["sms"]


def latency_model(rows: List[dict], arch: str = "sm_90", gpu=H200, chunk: int = 8) -> List[dict]:
    needed_bytes = gpu["bandwidth"] * gpu["latency"]
    families = {}
    for r in rows:
        if r["arch"] != arch:
            continue
        name = r["kernel"].split("<")[0]
        dtype = r["kernel"].rstrip(">").split(",")[-2].strip()
        key = (name, dtype)
        families[key] = max(families.get(key, 0), r["registers"])
    out = []
    for (name, dtype), registers in sorted(families.items()):
        streams, what = STREAMS[name]
        per_step = streams * ELEMENT_BYTES[dtype]
        resident = resident_lanes(registers, gpu)
        row = dict(kernel=name, dtype=dtype, streams=what, registers=registers, resident_lanes=resident)
        for label, in_flight in (("before", per_step), ("after", chunk * per_step)):
            lanes = needed_bytes / in_flight
            row[f"{label}_bytes_in_flight_per_lane"] = in_flight
            row[f"{label}_lanes_needed"] = int(round(lanes, -3))
            # Before the change registers were fewer (one step staged); the resident limit shown is
            # the pipelined kernels' (the old ones fit 2048 threads/SM: 270K lanes on an H200).
            cap = resident if label == "after" else gpu["sms"] * 2048
            row[f"{label}_peak_fraction"] = min(1.0, cap * in_flight / needed_bytes)
        out.append(row)
    return out


def print_model(model: List[dict], gpu=H200) -> None:
    print(f"\nModel, not a measurement: {gpu['name']}, {gpu['bandwidth'] / 1e12:.1f} TB/s, "
          f"~{gpu['latency'] * 1e9:.0f} ns DRAM latency (assumed) -> "
          f"{gpu['bandwidth'] * gpu['latency'] / 1e6:.1f} MB must be in flight.")
    print("| kernel | dtype | in flight per lane: step-by-step / pipelined | lanes needed: before / after "
          "| resident lanes (registers) | share of bandwidth at most: before / after |")
    print("|---|---|---|---|---|---|")
    for m in model:
        print(f"| {m['kernel']} | {m['dtype']} | {m['before_bytes_in_flight_per_lane']} B / "
              f"{m['after_bytes_in_flight_per_lane']} B | {m['before_lanes_needed']:,} / "
              f"{m['after_lanes_needed']:,} | {m['resident_lanes']:,} ({m['registers']}) | "
              f"{m['before_peak_fraction']:.0%} / {m['after_peak_fraction']:.0%} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", default=None, help="the extension library (default: the installed one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--summary", action="store_true", help="one line per architecture only")
    parser.add_argument("--model", action="store_true",
                        help="also print the latency/bandwidth model (Little's law) for an H200")
    args = parser.parse_args(argv)
    tool = find_cuobjdump()
    if tool is None:
        raise SystemExit("cuobjdump not found (it ships in the triton wheel; or set CUOBJDUMP)")
    lib = args.lib or find_library()
    rows = collect(lib, tool)
    if not rows:
        raise SystemExit(f"{lib} holds no CUDA kernels (built without them?)")
    if not args.summary:
        print("| arch | kernel | registers | stack B | local B | LDL/STL | LDG before 1st STG | "
              "longest LDG run |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sorted(rows, key=lambda r: (r["arch"], r["kernel"])):
            print(f"| {r['arch']} | {r['kernel']} | {r['registers']} | {r['stack']} | {r['local']} | "
                  f"{r['local_ops']} | {r['loads_before_first_store']} | {r['longest_load_run']} |")
    for arch in sorted({r["arch"] for r in rows}):
        mine = [r for r in rows if r["arch"] == arch]
        print(f"{arch}: {len(mine)} kernels, registers {min(r['registers'] for r in mine)}-"
              f"{max(r['registers'] for r in mine)}, with a stack frame: "
              f"{sum(r['stack'] > 0 for r in mine)}, with local memory: {sum(r['local'] > 0 for r in mine)}, "
              f"with local loads/stores: {sum((r['local_ops'] or 0) > 0 for r in mine)}, "
              f"longest run of global loads without a store: {min(r['longest_load_run'] or 0 for r in mine)}-"
              f"{max(r['longest_load_run'] or 0 for r in mine)}")
    model = latency_model(rows) if any(r["arch"] == "sm_90" for r in rows) else []
    if args.model and model:
        print_model(model)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"library": os.path.basename(lib), "rows": rows, "model_h200": model,
                       "model_assumptions": H200}, f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
