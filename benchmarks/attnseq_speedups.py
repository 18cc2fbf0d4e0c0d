"""What the chunked cross-entropy, the last-position forward, packed
windows and the fused optimizer buy AttnSeq, measured A/B, interleaved, in
one process.

    python benchmarks/attnseq_speedups.py --dataset ml-100k --rounds 4
    python benchmarks/attnseq_speedups.py --dataset amazon-beauty --data_path ../shared/data \
        --config_files properties/sparse.yaml --cases packing --rounds 3

* **training epoch**: the shipped trainer's ``_train_epoch`` over the
  all-positions windows, with the loss computed by
  :func:`recbole_attn.models.linear_ce.linear_cross_entropy` (A) and by
  ``F.cross_entropy(hidden @ table.T, targets)`` on the whole logits matrix
  (B): two models sharing one set of weights, which keeps training;
* **validation pass**: the trainer's ``_valid_epoch`` (full ranking of every
  user) with ``AttnSeq.forward`` computing only the last position in the last
  block (A) and with the whole causal ``encode`` then gathered (B);
* **packing**: the shipped model's training epoch on the same windows,
  padded to each batch's longest window (A) and packed end to end
  (``pack_windows``, B); B / A < 1 there means packing is faster;
* **fused Adam**: the shipped model's training epoch with the trainer's
  fused Adam (A) and with a plain, per-tensor ``torch.optim.Adam`` (B).

B is :class:`TextbookAttnSeq`, a subclass; nothing shipped is replaced.

A and B alternate in every round, so load from anything else on the machine
hits both alike; the medians are reported. Writes ``<output>.json`` and
``<output>.md`` atomically.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.models.attnseq import AttnSeq
from recbole_attn.results import machine, versions, write_json_atomic, write_text_atomic
from recbole_attn.trainer import AttnTrainer


class TextbookAttnSeq(AttnSeq):
    """AttnSeq as the textbook computes it: the loss on the whole
    (rows x items) logits matrix, and a forward that runs every position of
    every block, then gathers the last one."""

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None,
              mask_padding: bool = False) -> torch.Tensor:
        if self.loss_type != "CE":
            return super()._loss(hidden, targets, negatives, mask_padding)
        logits = hidden @ self.item_embedding.weight.T
        return F.cross_entropy(logits, targets, ignore_index=0 if mask_padding else -100)

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                user: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.gather_indexes(self.encode(item_seq, item_seq_len, user), item_seq_len - 1)


#: --cases name -> the case's name in the table.
CASES = {"linear_ce": "train epoch", "last_position": "validation pass", "packing": "train epoch, packing",
         "fused_adam": "train epoch, optimizer"}


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--config_files", default=None, help="property files, comma-separated")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--note", default="", help="what else was running on the machine")
    parser.add_argument("--output", default="docs/results/attnseq_speedups")
    args = parser.parse_args()

    chosen = args.cases.split(",")
    if not chosen or any(case not in CASES for case in chosen):
        parser.error(f"--cases {args.cases!r}: valid choices are {', '.join(CASES)}")
    settings = {"state": "WARNING", **({"data_path": args.data_path} if args.data_path else {})}
    config = AttnConfig("AttnSeq", args.dataset, config_dict=settings,
                        config_file_list=args.config_files.split(",") if args.config_files else None)
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    shipped = AttnSeq(config, train.dataset).to(config["device"])
    textbook = TextbookAttnSeq(config, train.dataset).to(config["device"])
    # one set of weights, which each variant's trainer (with its own Adam state) keeps training
    textbook.load_state_dict(shipped.state_dict(), assign=True)
    trainers = {"A": AttnTrainer(config, shipped), "B": AttnTrainer(config, textbook),
                "plain Adam": AttnTrainer(config, shipped)}
    trainers["plain Adam"].optimizer = torch.optim.Adam(shipped.parameters(), lr=config["learning_rate"])
    loader = AllPositionsLoader(config, train)
    item_seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    packed_loader = AllPositionsLoader(config, train)
    packed_loader.pack = True

    def train_epoch(variant: str) -> float:
        return timed(lambda: trainers[variant]._train_epoch(loader, 0))

    def valid_epoch(variant: str) -> float:
        return timed(lambda: trainers[variant]._valid_epoch(valid))

    every_case = {
        "linear_ce": {"A: chunked linear CE": lambda: train_epoch("A"),
                      "B: F.cross_entropy on full logits": lambda: train_epoch("B")},
        "last_position": {"A: last position only in the last block": lambda: valid_epoch("A"),
                          "B: full encode, then gather": lambda: valid_epoch("B")},
        "packing": {"A: windows padded to the batch's longest": lambda: train_epoch("A"),
                    "B: windows packed end to end": lambda: timed(
                        lambda: trainers["A"]._train_epoch(packed_loader, 0))},
        "fused_adam": {"A: fused Adam": lambda: train_epoch("A"),
                       "B: per-tensor Adam": lambda: train_epoch("plain Adam")},
    }
    cases = {CASES[case]: every_case[case] for case in chosen}
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

    command = shlex.join(["python", "benchmarks/attnseq_speedups.py", *sys.argv[1:]])
    # what the encoder computes in one epoch: positions of the padded and the packed batches
    positions = {"windows": int(loader.fields[config["ITEM_LIST_LENGTH_FIELD"]].sum()),
                 "padded": sum(batch[item_seq_field].numel() for batch in loader),
                 "packed": sum(batch[item_seq_field].numel() for batch in packed_loader)}
    lines = [f"## AttnSeq speed-ups, A/B interleaved, {args.dataset}", "",
             f"Command: `{command}`. "
             f"Started {began}. Machine: {machine(config['device'])}; torch threads {torch.get_num_threads()}. "
             f"{args.note}", "",
             f"{loader.num_rows} windows, {loader.num_targets} training targets, {train.dataset.item_num} items; "
             f"AttnSeq defaults (hidden {config['hidden_size']}, {config['n_layers']} layers, "
             f"{config['n_heads']} heads, batch {config['train_batch_size']} windows, "
             f"window_overlap {config['window_overlap']}). Positions the encoder computes per epoch: "
             f"{positions['padded']:,} padded, {positions['packed']:,} with pack_windows, for "
             f"{positions['windows']:,} in the windows ({positions['padded'] / positions['windows']:.2f}x and "
             f"{positions['packed'] / positions['windows']:.2f}x).", "",
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
        "command": command,
        "started": began, "note": args.note, "seconds": seconds, "ratios": ratios, "positions": positions,
        "machine": machine(config["device"]), "versions": versions()})
    write_text_atomic(output.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
