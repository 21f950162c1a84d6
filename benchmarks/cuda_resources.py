"""What the GPU would execute, read from the built library without a GPU: per CUDA kernel and
architecture, registers, stack frame, local memory, local loads/stores in the SASS (spills or local
arrays), and the number of global loads issued before the first global store (a kernel whose time
loop is a dependent load -> compute -> store chain shows ~1 per input stream; a software-pipelined
one would show several per stream).

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
                                                      "stored": False, "global_loads": 0})
            continue
        if current is None or "/*" not in line:
            continue
        ops = re.findall(r"\b(LDL|STL|LDG|STG)\b", line)
        for op in ops:
            if op in ("LDL", "STL"):
                current["local_ops"] += 1
            elif op == "LDG":
                current["global_loads"] += 1
                if not current["stored"]:
                    current["loads_before_store"] += 1
            elif op == "STG":
                current["stored"] = True
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
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", default=None, help="the extension library (default: the installed one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--summary", action="store_true", help="one line per architecture only")
    args = parser.parse_args(argv)
    tool = find_cuobjdump()
    if tool is None:
        raise SystemExit("cuobjdump not found (it ships in the triton wheel; or set CUOBJDUMP)")
    lib = args.lib or find_library()
    rows = collect(lib, tool)
    if not rows:
        raise SystemExit(f"{lib} holds no CUDA kernels (built without them?)")
    if not args.summary:
        print("| arch | kernel | registers | stack B | local B | LDL/STL | LDG before 1st STG |")
        print("|---|---|---|---|---|---|---|")
        for r in sorted(rows, key=lambda r: (r["arch"], r["kernel"])):
            print(f"| {r['arch']} | {r['kernel']} | {r['registers']} | {r['stack']} | {r['local']} | "
                  f"{r['local_ops']} | {r['loads_before_first_store']} |")
    for arch in sorted({r["arch"] for r in rows}):
        mine = [r for r in rows if r["arch"] == arch]
        print(f"{arch}: {len(mine)} kernels, registers {min(r['registers'] for r in mine)}-"
              f"{max(r['registers'] for r in mine)}, with a stack frame: "
              f"{sum(r['stack'] > 0 for r in mine)}, with local memory: {sum(r['local'] > 0 for r in mine)}, "
              f"with local loads/stores: {sum((r['local_ops'] or 0) > 0 for r in mine)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"library": os.path.basename(lib), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
