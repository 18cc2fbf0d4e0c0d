"""benchmarks/allocator_throughput.py: its summary arithmetic and its refusal of bad input."""
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, benchmark_script


def run(sasrec: float, attnseq: float, faults: int) -> dict:
    return {"sasrec_targets_per_s": sasrec, "attnseq_targets_per_s": attnseq, "ratio": attnseq / sasrec,
            "minor_page_faults": faults, "user_seconds": 20.0, "system_seconds": 5.0}


def test_the_summary_takes_medians_and_compares_each_model_with_the_system_allocator():
    bench = benchmark_script("allocator_throughput.py")
    summary = bench.summarize({
        bench.SYSTEM_ALLOCATOR: [run(600, 30000, 5_000_000), run(400, 32000, 5_400_000), run(500, 31000, 1)],
        "libjemalloc.so.2": [run(900, 33000, 700_000), run(1000, 34000, 800_000)],
    })
    system, preloaded = summary[bench.SYSTEM_ALLOCATOR], summary["libjemalloc.so.2"]
    assert system["sasrec_targets_per_s"] == 500 and system["minor_page_faults"] == 5_000_000
    assert preloaded["sasrec_targets_per_s"] == 950 and preloaded["attnseq_targets_per_s"] == 33500
    assert preloaded["sasrec_vs_system"] == pytest.approx(1.9) and system["sasrec_vs_system"] == 1
    assert preloaded["attnseq_vs_system"] == pytest.approx(33500 / 31000)
    text = bench.markdown(summary, "python benchmarks/allocator_throughput.py", 2)
    assert "| libjemalloc.so.2 | 950 (1.90x) | 33500 (1.08x) |" in text


def test_a_missing_library_is_refused_with_exit_2_and_one_line(tmp_path):
    missing = tmp_path / "libnothing.so"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "allocator_throughput.py"),
                           f"--preload={missing}", f"--output={tmp_path / 'out'}"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"--preload={missing} is not a file" in done.stderr
    assert not list(tmp_path.glob("out*"))
