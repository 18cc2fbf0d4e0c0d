"""Scale: AttnSeq training step time and peak memory as the catalog, the
sequence length and the number of users grow, and chunked full-sort
evaluation of a 1,000,000-item catalog against its stated memory bound.

    python benchmarks/scale.py                          # CPU defaults (one core: ~5 minutes)
    python benchmarks/scale.py --device cuda            # GPU defaults (bigger batches)
    python benchmarks/scale.py --quick                  # smoke run, tiny sizes
    python benchmarks/scale.py --note "core 0 ran X"    # say what else was running

Synthetic data only (no RecBole dataset): the model is built by
:func:`recbole_attn.data.fixtures.synthetic_model` over a made-up catalog, the
batches are random item ids (``all_positions`` rows: a target at every
position), hidden 64, 2 layers, 2 heads, Adam. What is measured:

* **items** 1e3 .. 1e6, full-softmax ``CE`` (chunked: no (targets x items)
  logits, :mod:`recbole_attn.models.linear_ce`) and sampled softmax ``SSM``
  (256 shared negatives);
* **length** 50 .. 400 at 10,000 items, both losses;
* **users**: one epoch over n users' sequences (epoch time should be linear);
* **eval**: chunked full-sort ranking (:mod:`recbole_attn.evaluation`, what
  ``AttnTrainer`` does per batch, with 50 masked history items per user) of
  1e6 items, time and peak memory against the bound stated there, and
  RecBole's path (one ``(B, n_items)`` matrix + its collector) beside it.

Each point runs in a fresh subprocess so that its peak memory is its own: on
CPU the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``
after warm-up, with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed so that freed
buffers go back to the OS and a reused one is not missed); on CUDA
``torch.cuda.max_memory_allocated``. "step peak" is what one training step
adds on top of the model, its Adam state and the batch (warm-up done).
CUDA steps run under bf16 autocast, as ``AttnTrainer`` does.

Writes ``<output>.json`` and ``<output>.md`` atomically; a run on another
device type is kept beside this one (one section per device).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULTS = {
    "cpu": {"items": [10**3, 10**4, 10**5, 10**6], "lengths": [50, 100, 200, 400],
            "users": [500, 1000, 2000, 4000], "batch": 32, "epoch_batch": 128, "repeats": 3,
            "eval_users": 1024, "eval_batch": 512},
    "cuda": {"items": [10**3, 10**4, 10**5, 10**6], "lengths": [50, 100, 200, 400],
             "users": [10_000, 20_000, 40_000, 80_000], "batch": 64, "epoch_batch": 128, "repeats": 10,
             "eval_users": 16_384, "eval_batch": 4096},
}
QUICK = {"items": [10**3, 10**4], "lengths": [20, 40], "users": [200, 400], "batch": 8, "epoch_batch": 64,
         "repeats": 1, "eval_users": 64, "eval_batch": 32, "eval_items": 20_000}
SIZE_DIM = 64
SIZE = {"hidden_size": SIZE_DIM, "n_layers": 2, "n_heads": 2, "inner_size": 256,
        "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "num_negatives": 256}
EVAL_ITEMS = 10**6
EVAL_HISTORY = 50  # masked items per user (filter_seen-like)
TOPK = 20
MB = 1024 * 1024
SECTIONS = ("items", "length", "users", "eval")


# -- measuring (runs inside the worker subprocess) ------------------------------
class PeakMeter:
    """Peak memory a block adds: CUDA allocator statistics, or the process's
    peak resident set on CPU (``VmHWM``, reset via ``/proc/self/clear_refs``)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch, self.device, self.baseline = torch, device, 0

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def process_peak_mb(self) -> float:
        if self.device.type == "cuda":
            return self.torch.cuda.max_memory_allocated(self.device) / MB
        return self._status("VmHWM") / MB

    def reset(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = self.torch.cuda.memory_allocated(self.device)
            return
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident set
        self.baseline = self._status("VmRSS")

    def extra_mb(self) -> float:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
            return (self.torch.cuda.max_memory_allocated(self.device) - self.baseline) / MB
        return (self._status("VmHWM") - self.baseline) / MB


def _model(spec: dict[str, Any], n_items: int, loss: str, seq_len: int) -> Any:
    import torch

    from recbole_attn.models.attnseq import AttnSeq  # the class itself: works from a plain checkout too
    from recbole_attn.data.fixtures import synthetic_model

    torch.manual_seed(0)
    settings = {**SIZE, "loss_type": loss, "MAX_ITEM_LIST_LENGTH": seq_len, "device": spec["device"]}
    return synthetic_model(AttnSeq, n_items, **settings).to(spec["device"])


def _batch(model: Any, rows: int, seq_len: int, n_items: int, device: Any) -> Any:
    import torch
    from recbole.data.interaction import Interaction

    from recbole_attn.data.fields import TARGET_SEQ_FIELD

    return Interaction({
        model.ITEM_SEQ: torch.randint(1, n_items, (rows, seq_len), device=device),
        model.ITEM_SEQ_LEN: torch.full((rows,), seq_len, device=device),
        TARGET_SEQ_FIELD: torch.randint(1, n_items, (rows, seq_len), device=device),
    })


def _stepper(model: Any, device: Any) -> Any:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    bf16 = device.type == "cuda"

    def step(batch: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()

    return step


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Median seconds and peak extra memory of one training step."""
    import torch

    device = torch.device(spec["device"])
    n_items, seq_len, rows = spec["n_items"], spec["seq_len"], spec["batch"]
    model = _model(spec, n_items, spec["loss"], seq_len).train()
    step, batch = _stepper(model, device), _batch(model, rows, seq_len, n_items, device)
    meter = PeakMeter(device)
    for _ in range(spec["warmup"]):
        step(batch)  # Adam's state exists after the first
    meter.reset()
    seconds = []
    for _ in range(spec["repeats"]):
        _sync(device)
        began = time.perf_counter()
        step(batch)
        _sync(device)
        seconds.append(time.perf_counter() - began)
    median = statistics.median(seconds)
    return {"step_seconds": median, "step_peak_mb": meter.extra_mb(), "process_peak_mb": meter.process_peak_mb(),
            "targets_per_second": rows * seq_len / median}


def measure_epoch(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds of one epoch over ``n_users`` sequences."""
    import torch

    device = torch.device(spec["device"])
    n_items, seq_len, n_users, rows = spec["n_items"], spec["seq_len"], spec["n_users"], spec["batch"]
    model = _model(spec, n_items, spec["loss"], seq_len).train()
    step, data = _stepper(model, device), _batch(model, n_users, seq_len, n_items, device)
    step(data[torch.arange(min(rows, n_users), device=device)])  # warm-up
    _sync(device)
    began = time.perf_counter()
    order = torch.randperm(n_users, device=device)
    steps = 0
    for start in range(0, n_users, rows):
        step(data[order[start:start + rows]])
        steps += 1
    _sync(device)
    return {"epoch_seconds": time.perf_counter() - began, "steps": steps}


def eval_bound_mb(users: int, chunk: int, k: int, masked_pairs: int) -> float:
    """The bound of :mod:`recbole_attn.evaluation`, in MiB."""
    return (4 * users * chunk + 72 * users * k + 32 * masked_pairs) / MB


def measure_eval(spec: dict[str, Any]) -> dict[str, Any]:
    """Full-sort ranking of ``users`` in batches: chunked top-k (ours) or
    RecBole's score matrix + collector; time and the ranking's peak memory."""
    import torch
    from recbole.evaluator.collector import Collector

    from recbole_attn.evaluation import chunked_topk, item_scorer, resolve_chunk_size, topk_hits

    device = torch.device(spec["device"])
    n_items, users, rows = spec["n_items"], spec["users"], spec["batch"]
    model = _model(spec, n_items, "CE", EVAL_HISTORY).eval()
    chunk = min(resolve_chunk_size(spec.get("chunk"), rows) or n_items, n_items)
    collector = Collector({"metrics": ["Recall", "NDCG"], "topk": [TOPK], "device": device,
                           "eval_args": {"mode": "full"}})
    meter, peak = PeakMeter(device), 0.0
    _sync(device)
    began = time.perf_counter()
    with torch.no_grad():
        for start in range(0, users, rows):
            batch = _batch(model, min(rows, users - start), EVAL_HISTORY, n_items, device)
            size = len(batch)
            rows_of_pairs = torch.arange(size, device=device).repeat_interleave(EVAL_HISTORY)
            history = (rows_of_pairs, batch[model.ITEM_SEQ].flatten())
            positives = (torch.arange(size, device=device), torch.randint(1, n_items, (size,), device=device))
            scorer = item_scorer(model, batch, n_items)  # the forward pass: outside the measured ranking
            meter.reset()
            if spec["mode"] == "chunked":
                top = chunked_topk(scorer, n_items, TOPK, chunk, history)
                topk_hits(top.items, *positives, n_items)
            else:  # RecBole's Trainer._full_sort_batch_eval + Collector.eval_batch_collect
                scores = scorer(0, n_items)
                scores[:, 0] = float("-inf")
                scores[history] = float("-inf")
                collector.eval_batch_collect(scores, batch, *positives)
                del scores
            peak = max(peak, meter.extra_mb())
    _sync(device)
    seconds = time.perf_counter() - began
    result = {"seconds": seconds, "users_per_second": users / seconds, "rank_peak_mb": peak,
              "chunk": chunk if spec["mode"] == "chunked" else None,
              "bound_mb": eval_bound_mb(rows, chunk, TOPK, rows * EVAL_HISTORY) if spec["mode"] == "chunked" else None,
              "score_matrix_mb": 4 * rows * n_items / MB}
    return result


WORKERS = {"step": measure_step, "epoch": measure_epoch, "eval": measure_eval}


# -- driving (the parent process) ---------------------------------------------
def run_point(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``spec`` measured in a fresh interpreter; a failure (out of memory,
    timeout) is recorded in the row, never dropped."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONWARNINGS="ignore")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    row = {key: value for key, value in spec.items() if key not in ("device", "kind", "warmup")}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "skipped": f"timed out after {timeout:.0f}s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {**row, "skipped": f"failed (exit {done.returncode}): {last[:200]}"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if "skipped" in row:
            cells = [_fmt(row.get(key)) for _, key in columns[:2]] + [f"skipped: {row['skipped']}"]
            cells += [""] * (len(columns) - len(cells))
        else:
            cells = [_fmt(row.get(key)) for _, key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _slope(rows: list[dict[str, Any]], x: str, y: str) -> tuple[float, float, float, float] | None:
    """log-log slope of ``y`` over ``x`` between the first and last measured rows."""
    done = [row for row in rows if row.get(y)]
    if len(done) < 2:
        return None
    first, last = done[0], done[-1]
    return math.log(last[y] / first[y]) / math.log(last[x] / first[x]), first[x], last[x], last[y] / first[y]


def _growth(slope: float) -> str:
    if slope < 0.2:
        return "about flat"
    if slope < 0.8:
        return "sub-linear"
    if slope < 1.25:
        return "about linear"
    if slope < 1.75:
        return "between linear and quadratic"
    return "about quadratic or worse"


def _per_decade(rows: list[dict[str, Any]], x: str, y: str) -> str:
    """Ratios of ``y`` between consecutive measured rows, e.g. ``x5.5, x9.5``."""
    done = [row for row in rows if row.get(y)]
    return ", ".join(f"x{b[y] / a[y]:.1f}" for a, b in zip(done, done[1:]))


def growth_reading(run: dict[str, Any]) -> list[str]:
    """Sentences from the measured numbers: how each cost grows."""
    lines = []
    for loss in ("CE", "SSM"):
        rows = [row for row in run.get("items", []) if row["loss"] == loss]
        for key, what in (("step_seconds", "step time"), ("step_peak_mb", "step peak memory")):
            found = _slope(rows, "n_items", key)
            if found:
                slope, low, high, ratio = found
                lines.append(f"{loss}: {what} x{ratio:.1f} from {low:,} to {high:,} items, "
                             f"{_per_decade(rows, 'n_items', key)} per step of the sweep "
                             f"(log-log slope {slope:.2f}, {_growth(slope)} in items).")
        biggest = [row for row in rows if row.get("step_peak_mb")][-1:]
        if loss == "SSM" and biggest:
            row = biggest[0]
            table_mb = row["n_items"] * SIZE_DIM * 4 / MB
            lines.append(f"SSM's loss itself does not depend on the catalog; at {row['n_items']:,} items the "
                         f"{table_mb:,.0f} MiB item table's dense gradient and Adam's update of all of it are what "
                         f"grow (the step adds {row['step_peak_mb'] / table_mb:.1f} table-sized buffers).")
    for loss in ("CE", "SSM"):
        rows = [row for row in run.get("length", []) if row["loss"] == loss]
        found = _slope(rows, "seq_len", "step_seconds")
        if found:
            slope, low, high, ratio = found
            done = [row for row in rows if row.get("step_seconds")]
            last = done[-1]["step_seconds"] / done[-2]["step_seconds"]
            step = done[-1]["seq_len"] / done[-2]["seq_len"]
            why = (f"the last x{step:.0f} in length costs x{last:.1f}, nearer quadratic than linear: attention's "
                   f"L^2 term shows at length {high}" if last >= step ** 1.5 else
                   "per-token work (embeddings, feed-forward, loss) dominates; attention's L^2 term does not show yet")
            lines.append(f"{loss}: step time x{ratio:.1f} from length {low} to {high} at the same batch, "
                         f"{_per_decade(rows, 'seq_len', 'step_seconds')} per step of the sweep (slope {slope:.2f}, "
                         f"{_growth(slope)} overall; {why}).")
    found = _slope(run.get("users", []), "n_users", "epoch_seconds")
    if found:
        slope, low, high, ratio = found
        lines.append(f"Epoch time x{ratio:.1f} from {low:,} to {high:,} users (slope {slope:.2f}, {_growth(slope)}).")
    chunked = [row for row in run.get("eval", []) if row.get("mode") == "chunked" and "rank_peak_mb" in row]
    full = [row for row in run.get("eval", []) if row.get("mode") == "full" and "rank_peak_mb" in row]
    if chunked:
        row = chunked[0]
        verdict = "within" if row["rank_peak_mb"] <= row["bound_mb"] * 1.1 + 16 else "ABOVE"
        text = (f"Chunked evaluation of {row['n_items']:,} items: ranking peak {row['rank_peak_mb']:,.0f} MiB for "
                f"{row['batch']:,} users per batch, {verdict} the stated bound of {row['bound_mb']:,.0f} MiB")
        if full:
            text += (f"; RecBole's score-matrix path peaked at {full[0]['rank_peak_mb']:,.0f} MiB "
                     f"({full[0]['score_matrix_mb']:,.0f} MiB of scores alone) and ranked "
                     f"{full[0]['users_per_second']:,.0f} users/s against {row['users_per_second']:,.0f}")
        lines.append(text + ".")
    return lines


def format_tables(run: dict[str, Any]) -> str:
    """The run's Markdown tables and reading."""
    step_columns = [("loss", "loss"), ("items", "n_items"), ("length", "seq_len"), ("batch", "batch"),
                    ("step s", "step_seconds"), ("targets/s", "targets_per_second"),
                    ("step peak MiB", "step_peak_mb"), ("process peak MiB", "process_peak_mb")]
    lines = ["### (a) catalog size", "", *_table(run.get("items", []), step_columns), "",
             "### (b) sequence length", "", *_table(run.get("length", []), step_columns), "",
             "### (c) users per epoch (SSM)", "",
             *_table(run.get("users", []), [("users", "n_users"), ("items", "n_items"), ("length", "seq_len"),
                                            ("batch", "batch"), ("steps", "steps"), ("epoch s", "epoch_seconds")]),
             "", "### (d) full-sort evaluation", "",
             *_table(run.get("eval", []), [("mode", "mode"), ("items", "n_items"), ("users", "users"),
                                           ("users/batch", "batch"), ("chunk", "chunk"), ("seconds", "seconds"),
                                           ("users/s", "users_per_second"), ("ranking peak MiB", "rank_peak_mb"),
                                           ("stated bound MiB", "bound_mb"),
                                           ("(B x n_items) scores MiB", "score_matrix_mb")]),
             "", "### Reading", "", *[f"* {line}" for line in growth_reading(run)]]
    return "\n".join(lines)


def _kept_note(run: dict[str, Any]) -> list[str]:
    kept = run.get("kept_sections")
    if not kept:
        return []
    earlier = kept["from_run"]
    return ["", f"Sections {', '.join(kept['sections'])} are kept from an earlier run: `{earlier['command']}`, "
                f"started {earlier['started']}, load {earlier['load']}; what else was running then: "
                f"{(earlier['note'] or 'not stated').rstrip('.')}."]


def format_report(runs: dict[str, dict[str, Any]]) -> str:
    parts = ["# Scale: AttnSeq training and chunked evaluation", "",
             "Written by `benchmarks/scale.py` (synthetic data; what is measured and how: its docstring)."]
    for device, run in runs.items():
        parts += ["", f"## {device}", "",
                  f"Command: `{run['command']}`  ",
                  f"Environment: {run.get('environment')}, CPU affinity {run.get('cpu_affinity')}.  ",
                  f"Started {run['started']}, {run['seconds']:.0f} s in all.  ",
                  f"Machine: {run['machine']}.  ", f"Versions: {run['versions']}.  ",
                  f"Load average at start: {run['load']}. "
                  f"What else was running: {run['note'].rstrip('.') or 'not stated'}.",
                  *_kept_note(run), "", format_tables(run)]
    return "\n".join(parts) + "\n"


def write_report(runs: dict[str, dict[str, Any]], stem: str | os.PathLike) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.md``, each written atomically."""
    from recbole_attn.results import write_json_atomic, write_text_atomic

    stem = Path(stem)
    json_path = write_json_atomic(stem.with_suffix(".json"), runs)
    return json_path, write_text_atomic(stem.with_suffix(".md"), format_report(runs))


def _specs(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    device, warmup = args.device, 1 if args.device == "cpu" else 3
    common = {"device": device, "repeats": settings["repeats"], "warmup": warmup, "batch": settings["batch"]}
    items = [{**common, "kind": "step", "loss": loss, "n_items": n, "seq_len": 50}
             for loss in ("CE", "SSM") for n in settings["items"]]
    length = [{**common, "kind": "step", "loss": loss, "n_items": 10**4, "seq_len": length}
              for loss in ("CE", "SSM") for length in settings["lengths"]]
    users = [{"device": device, "kind": "epoch", "loss": "SSM", "n_items": 10**4, "seq_len": 50,
              "n_users": n, "batch": settings["epoch_batch"]} for n in settings["users"]]
    eval_items = settings.get("eval_items", EVAL_ITEMS)
    evals = [{"device": device, "kind": "eval", "mode": mode, "n_items": eval_items, "batch": settings["eval_batch"],
              "users": settings["eval_users"] if mode == "chunked" else settings["eval_batch"],
              "chunk": args.chunk} for mode in ("chunked", "full")]
    return {"items": items, "length": length, "users": users, "eval": evals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--chunk", type=int, default=None, help="eval_item_chunk_size (default: auto)")
    parser.add_argument("--output", default="docs/results/scale", help="writes <output>.json and <output>.md")
    parser.add_argument("--note", default="", help="what else was running on the machine")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per point before it is given up")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (a run replaces its device's section)")
    parser.add_argument("--render", action="store_true", help="only rewrite <output>.md from <output>.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["kind"]](spec)))
        return
    if args.render:
        print("wrote", *write_report(json.loads(Path(args.output).with_suffix(".json").read_text()), args.output))
        return

    import torch

    from recbole_attn.results import machine, versions

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but CUDA is not available")
    settings = QUICK if args.quick else DEFAULTS[args.device]
    began, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S")
    run: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
        "environment": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "started": started, "note": args.note, "load": [round(x, 2) for x in os.getloadavg()],
        "machine": {**machine(args.device), "python": platform.python_version()}, "versions": versions(),
        "settings": settings,
    }
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if not sections or set(sections) - set(SECTIONS):
        parser.error(f"--sections must name some of {', '.join(SECTIONS)}, got {args.sections!r}")
    for section, specs in _specs(args, settings).items():
        if section not in sections:
            continue
        rows = []
        for spec in specs:
            row = run_point(spec, args.timeout)
            rows.append(row)
            print(section, json.dumps(row), flush=True)
        run[section] = rows
    run["seconds"] = time.perf_counter() - began
    stem = Path(args.output)
    existing = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").is_file() else {}
    existing = existing if isinstance(existing, dict) and all(isinstance(v, dict) for v in existing.values()) else {}
    earlier = existing.get(args.device, {})
    kept = [name for name in SECTIONS if name not in sections and name in earlier]
    for name in kept:  # a partial re-run keeps the earlier run's other sections, saying so
        run[name] = earlier[name]
    run["kept_sections"] = {"sections": kept, "from_run": {key: earlier.get(key) for key in ("command", "started",
                                                                                              "note", "load")}} \
        if kept else None
    existing[args.device] = run
    paths = write_report(existing, stem)
    print(format_tables(run))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
