"""Training throughput, AttnSeq vs RecBole's SASRec, interleaved in one process.

    python benchmarks/throughput.py --dataset ml-100k --rounds 5

Both models get the same data (RecBole's split of the dataset), the same size
(hidden 64, 2 layers, 2 heads, max length 50), CE loss and the same plain
(per-tensor) Adam, so the ratio is the models' and their rows' work; the
fused Adam of this project's trainer comes on top (``attnseq_speedups.py
--cases fused_adam``). Each round
times ``--batches`` SASRec training steps on RecBole's prefix rows (batch
2048) and the same number of seconds' worth of AttnSeq steps on all-position
windows (AttnSeq's defaults; the table names batch and overlap), alternating,
so load from anything else on the machine hits both alike. Throughput =
supervised target items per second. Prints a table and writes
``<output>.json`` / ``<output>.md`` atomically.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

import recbole_attn
from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.data.fields import TARGET_SEQ_FIELD
from recbole_attn.results import machine, versions, write_json_atomic, write_text_atomic

SIZE = {"hidden_size": 64, "n_layers": 2, "n_heads": 2, "inner_size": 256, "MAX_ITEM_LIST_LENGTH": 50,
        "loss_type": "CE", "state": "WARNING", "device": "cpu"}


def build(model_name: str, dataset: str, data_path: str | None, device: str) -> tuple[Any, Any, Any, AttnConfig]:
    settings = dict(SIZE, device=device, **({"data_path": data_path} if data_path else {}))
    config = AttnConfig(model_name, dataset, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    model = config.model_class(config, train.dataset).to(config["device"])
    loader = AllPositionsLoader(config, train) if config["train_mode"] == "all_positions" else train
    return model, loader, torch.optim.Adam(model.parameters(), lr=config["learning_rate"]), config


def targets_in(batch: Any) -> int:
    if TARGET_SEQ_FIELD in batch:
        return int((batch[TARGET_SEQ_FIELD] > 0).sum())
    return len(batch)


def timed_steps(
    model: Any, batches: Any, optimizer: Any, steps: int | None, seconds: float | None
) -> tuple[int, float]:
    """Train until ``steps`` batches or ``seconds`` pass; (targets, seconds)."""
    model.train()
    device = next(model.parameters()).device
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    targets, began = 0, time.perf_counter()
    for count in itertools.count():
        if (steps is not None and count >= steps) or (seconds is not None and time.perf_counter() - began >= seconds):
            break
        host_batch = next(batches)
        targets += targets_in(host_batch)  # counted before the copy to the device: no sync
        batch = host_batch.to(device)
        optimizer.zero_grad()
        # bf16 autocast on CUDA, as AttnTrainer trains (enable_amp); SASRec gets the same
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
    synchronize()
    return targets, time.perf_counter() - began


def endless(loader: Any) -> Any:
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3, help="SASRec steps per round")
    parser.add_argument("--output", default="docs/results/throughput_ml-100k")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast for both models on CUDA)")
    args = parser.parse_args()

    sasrec, sasrec_data, sasrec_opt, sasrec_config = build("SASRec", args.dataset, args.data_path, args.device)
    attnseq, attnseq_data, attnseq_opt, attnseq_config = build("AttnSeq", args.dataset, args.data_path, args.device)
    sasrec_batches, attnseq_batches = endless(sasrec_data), endless(attnseq_data)
    timed_steps(attnseq, attnseq_batches, attnseq_opt, steps=2, seconds=None)  # warm-up
    timed_steps(sasrec, sasrec_batches, sasrec_opt, steps=1, seconds=None)
    rounds = []
    for index in range(args.rounds):
        s_targets, s_seconds = timed_steps(sasrec, sasrec_batches, sasrec_opt, steps=args.batches, seconds=None)
        a_targets, a_seconds = timed_steps(attnseq, attnseq_batches, attnseq_opt, steps=None, seconds=s_seconds)
        rounds.append({"sasrec_targets_per_s": s_targets / s_seconds, "attnseq_targets_per_s": a_targets / a_seconds,
                       "sasrec_seconds": s_seconds, "attnseq_seconds": a_seconds})
        rounds[-1]["ratio"] = rounds[-1]["attnseq_targets_per_s"] / rounds[-1]["sasrec_targets_per_s"]
        print(f"round {index}: " + ", ".join(f"{k}={v:.1f}" for k, v in rounds[-1].items()), flush=True)

    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    text = "\n".join([
        f"## Training throughput on {args.dataset} (interleaved, same process)", "",
        f"Command: `python benchmarks/throughput.py --dataset {args.dataset} --rounds {args.rounds} "
        f"--batches {args.batches} --device {args.device}`; torch threads {torch.get_num_threads()}; "
        f"machine {machine(args.device)}. SASRec: batch "
        f"{sasrec_config['train_batch_size']} prefix rows; AttnSeq: batch "
        f"{attnseq_config['train_batch_size']} windows, window_overlap {attnseq_config['window_overlap']}.", "",
        "| round | SASRec targets/s | AttnSeq targets/s | ratio |", "|---|---|---|---|",
        *(f"| {i} | {r['sasrec_targets_per_s']:.0f} | {r['attnseq_targets_per_s']:.0f} | {r['ratio']:.1f}x |"
          for i, r in enumerate(rounds)),
        f"| median | {median['sasrec_targets_per_s']:.0f} | {median['attnseq_targets_per_s']:.0f} "
        f"| {median['ratio']:.1f}x |", "",
    ])
    print(text)
    output = Path(args.output)
    write_json_atomic(output.with_suffix(".json"), {"rounds": rounds, "median": median, "versions": versions(),
                                                    "machine": machine(args.device)})
    write_text_atomic(output.with_suffix(".md"), text)


if __name__ == "__main__":
    recbole_attn.compat.apply()
    main()
