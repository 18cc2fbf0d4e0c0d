"""What the chunked cross-entropy and the last-position forward buy AttnSeq,
measured A/B, interleaved, in one process.

    python benchmarks/attnseq_speedups.py --dataset ml-100k --rounds 4

* **training epoch**: the shipped trainer's ``_train_epoch`` over the
  all-positions windows, with the loss computed by
  :func:`recbole_attn.models.linear_ce.linear_cross_entropy` (A) and by
  ``F.cross_entropy(hidden @ table.T, targets)`` on the whole logits matrix
  (B), the same model (its weights keep training; both see the same mix);
* **validation pass**: the trainer's ``_valid_epoch`` (full ranking of every
  user) with ``AttnSeq.forward`` computing only the last position in the last
  block (A) and with the whole causal ``encode`` then gathered (B).

A and B alternate in every round, so load from anything else on the machine
hits both alike; the medians are reported. Writes ``<output>.json`` and
``<output>.md`` atomically.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

import recbole_attn.models.base as base
from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.models.attnseq import AttnSeq
from recbole_attn.results import machine, versions, write_json_atomic, write_text_atomic
from recbole_attn.trainer import AttnTrainer


def full_logits_cross_entropy(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                              ignore_index: int | None = None) -> torch.Tensor:
    """The textbook loss: the whole (rows x items) logits matrix."""
    return F.cross_entropy(hidden @ table.T, targets, ignore_index=-100 if ignore_index is None else ignore_index)


def encode_then_gather(model: AttnSeq, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """The textbook forward: every position of every block, then the last one."""
    return model.gather_indexes(model.encode(item_seq, item_seq_len), item_seq_len - 1)


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--note", default="", help="what else was running on the machine")
    parser.add_argument("--output", default="docs/results/attnseq_speedups")
    args = parser.parse_args()

    settings = {"state": "WARNING", **({"data_path": args.data_path} if args.data_path else {})}
    config = AttnConfig("AttnSeq", args.dataset, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    model = AttnSeq(config, train.dataset).to(config["device"])
    trainer = AttnTrainer(config, model)
    loader = AllPositionsLoader(config, train)
    shipped_loss, shipped_forward = base.linear_cross_entropy, AttnSeq.forward

    def train_epoch(loss: Callable[..., torch.Tensor]) -> float:
        base.linear_cross_entropy = loss
        try:
            return timed(lambda: trainer._train_epoch(loader, 0))
        finally:
            base.linear_cross_entropy = shipped_loss

    def valid_epoch(forward: Callable[..., torch.Tensor]) -> float:
        AttnSeq.forward = forward
        try:
            return timed(lambda: trainer._valid_epoch(valid))
        finally:
            AttnSeq.forward = shipped_forward

    cases = {
        "train epoch": {"A: chunked linear CE": lambda: train_epoch(shipped_loss),
                        "B: F.cross_entropy on full logits": lambda: train_epoch(full_logits_cross_entropy)},
        "validation pass": {"A: last position only in the last block": lambda: valid_epoch(shipped_forward),
                            "B: full encode, then gather": lambda: valid_epoch(encode_then_gather)},
    }
    for variants in cases.values():  # warm-up, not timed
        for run in variants.values():
            run()
    began = time.strftime("%Y-%m-%d %H:%M:%S")
    seconds: dict[str, dict[str, list[float]]] = {case: {name: [] for name in v} for case, v in cases.items()}
    for round_index in range(args.rounds):
        for case, variants in cases.items():
            for name, run in variants.items():
                seconds[case][name].append(run())
        print(f"round {round_index + 1}: " + "; ".join(
            f"{name} {times[-1]:.3f}s" for per_case in seconds.values() for name, times in per_case.items()),
            flush=True)

    lines = [f"## AttnSeq speed-ups, A/B interleaved, {args.dataset}", "",
             f"Command: `python benchmarks/attnseq_speedups.py --dataset {args.dataset} --rounds {args.rounds}`. "
             f"Started {began}. Machine: {machine(config['device'])}; torch threads {torch.get_num_threads()}. "
             f"{args.note}", "",
             f"{loader.num_rows} windows, {loader.num_targets} training targets, {train.dataset.item_num} items; "
             f"AttnSeq defaults (hidden {config['hidden_size']}, {config['n_layers']} layers, "
             f"{config['n_heads']} heads, batch {config['train_batch_size']} windows, "
             f"window_overlap {config['window_overlap']}).", "",
             "| measured | variant | median s | min s | all rounds (s) |", "|---|---|---|---|---|"]
    ratios = {}
    for case, per_variant in seconds.items():
        medians = {name: statistics.median(times) for name, times in per_variant.items()}
        for name, times in per_variant.items():
            lines.append(f"| {case} | {name} | {medians[name]:.3f} | {min(times):.3f} | "
                         + ", ".join(f"{t:.2f}" for t in times) + " |")
        a, b = medians.values()
        ratios[case] = b / a
    lines += ["", *(f"- {case}: B / A = **{ratio:.2f}x** (medians)" for case, ratio in ratios.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    output = Path(args.output)
    write_json_atomic(output.with_suffix(".json"), {
        "command": f"python benchmarks/attnseq_speedups.py --dataset {args.dataset} --rounds {args.rounds}",
        "started": began, "note": args.note, "seconds": seconds, "ratios": ratios,
        "machine": machine(config["device"]), "versions": versions()})
    write_text_atomic(output.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
