"""Training throughput under glibc's malloc and under a preloaded allocator, one process each, alternating.

    python benchmarks/allocator_throughput.py --preload /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 --repeats 2

Each process runs ``benchmarks/throughput.py`` (SASRec and AttnSeq interleaved
in one process), so the change of each model's throughput between allocators
says how much of their speed ratio on CPU is the allocator's. Why it matters:
SASRec's batches of 2048 prefix rows allocate large buffers every step; an
allocator that hands them back to the kernel page-faults them in again on the
next step. The preloaded allocator gets ``MALLOC_CONF`` (jemalloc's setting,
by default: keep freed pages). Processes alternate so that a change in the
machine's load hits both allocators alike. Prints a table and writes
``<output>.json`` / ``<output>.md`` atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from recbole_attn.errors import OneLineArgumentParser
from recbole_attn.results import machine, versions, write_json_atomic, write_text_atomic

SCRIPT = Path(__file__).with_name("throughput.py")
DEFAULT_MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true"
SYSTEM_ALLOCATOR = "glibc malloc"


def run_once(args: argparse.Namespace, preload: str | None, output: Path) -> dict[str, Any]:
    """One ``throughput.py`` process; its medians and its resource use."""
    env = dict(os.environ)
    if preload:
        env.update(LD_PRELOAD=preload, MALLOC_CONF=args.malloc_conf)
    command = [sys.executable, str(SCRIPT), "--dataset", args.dataset, "--rounds", str(args.rounds),
               "--batches", str(args.batches), "--output", str(output), "--device", "cpu",
               *(["--data_path", args.data_path] if args.data_path else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    median = json.loads(output.with_suffix(".json").read_text())["median"]
    return {"sasrec_targets_per_s": median["sasrec_targets_per_s"],
            "attnseq_targets_per_s": median["attnseq_targets_per_s"], "ratio": median["ratio"],
            "minor_page_faults": after.ru_minflt - before.ru_minflt,
            "user_seconds": after.ru_utime - before.ru_utime, "system_seconds": after.ru_stime - before.ru_stime}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Median of each measure over an allocator's processes, and each
    model's throughput relative to the system allocator's."""
    summary = {name: {key: statistics.median(run[key] for run in found) for key in found[0]}
               for name, found in runs.items()}
    base = summary[SYSTEM_ALLOCATOR]
    for values in summary.values():
        for model in ("sasrec", "attnseq"):
            values[f"{model}_vs_system"] = values[f"{model}_targets_per_s"] / base[f"{model}_targets_per_s"]
    return summary


def markdown(summary: dict[str, dict[str, float]], command: str, repeats: int, where: str = "") -> str:
    rows = [f"| {name} | {v['sasrec_targets_per_s']:.0f} ({v['sasrec_vs_system']:.2f}x) "
            f"| {v['attnseq_targets_per_s']:.0f} ({v['attnseq_vs_system']:.2f}x) | {v['ratio']:.1f}x "
            f"| {v['minor_page_faults']:,.0f} | {v['system_seconds']:.1f} | {v['user_seconds']:.1f} |"
            for name, v in summary.items()]
    return "\n".join([
        "## Training throughput by memory allocator (CPU)", "", f"Command: `{command}`; medians over "
        f"{repeats} processes per allocator, run alternately{'; ' + where if where else ''}.", "",
        "| allocator | SASRec targets/s | AttnSeq targets/s | AttnSeq / SASRec | minor page faults "
        "| system s | user s |", "|---|---|---|---|---|---|---|", *rows, ""])


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preload", required=True, help="shared library to preload, e.g. libjemalloc.so.2")
    parser.add_argument("--malloc_conf", default=DEFAULT_MALLOC_CONF, help="MALLOC_CONF for the preloaded one")
    parser.add_argument("--repeats", type=int, default=2, help="processes per allocator")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=2, help="SASRec steps per round")
    parser.add_argument("--output", default="docs/results/allocator_throughput_ml-100k")
    args = parser.parse_args()
    if not Path(args.preload).is_file():
        parser.error(f"--preload={args.preload} is not a file; give a shared allocator library such as "
                     "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}; give 1 or more")
    preloaded = Path(args.preload).name
    runs: dict[str, list[dict[str, Any]]] = {SYSTEM_ALLOCATOR: [], preloaded: []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for index, (name, preload) in enumerate(((SYSTEM_ALLOCATOR, None), (preloaded, args.preload))):
                runs[name].append(run_once(args, preload, Path(scratch) / f"process-{repeat}-{index}"))
                print(f"{name}, process {repeat}: " + ", ".join(f"{k}={v:.1f}" for k, v in runs[name][-1].items()),
                      flush=True)
    summary = summarize(runs)
    command = "python benchmarks/allocator_throughput.py " + " ".join(sys.argv[1:])
    host = machine("cpu")
    where = f"{host['processor']}, {host['cpu_count']} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    text = markdown(summary, command, args.repeats, where)
    print(text)
    output = Path(args.output)
    write_json_atomic(output.with_suffix(".json"), {
        "command": command, "malloc_conf": args.malloc_conf, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "runs": runs, "summary": summary, "versions": versions(), "machine": host})
    write_text_atomic(output.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
