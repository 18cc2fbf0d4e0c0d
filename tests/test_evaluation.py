"""Chunked full-sort evaluation: the same top-k, hits and metrics as RecBole's
full score matrix, masks applied per chunk, bad chunk sizes rejected, and no
(users x items) tensor ever made."""
from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.evaluator.collector import Collector
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader, attach_seen_filters
from recbole_attn.errors import UsageError
from recbole_attn.evaluation import (
    TopKCollector,
    _mask_pairs,
    _mask_pairs_without_sync,
    chunked_topk,
    item_scorer,
    metrics_needing_full_scores,
    resolve_chunk_size,
    topk_hits,
)
from recbole_attn.data.fixtures import synthetic_model
from recbole_attn.trainer import AttnTrainer
from tests.conftest import FAST, benchmark_script

METRICS = ["Recall", "MRR", "NDCG", "Hit", "Precision", "MAP"]


def _dense_topk(scores: torch.Tensor, k: int, exclude: tuple[torch.Tensor, torch.Tensor] | None):
    """RecBole's way: mask the whole matrix in place, one ``torch.topk``."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    if exclude is not None:
        scores[exclude] = float("-inf")
    return torch.topk(scores, k, dim=1)


def _random_pairs(generator: torch.Generator, rows: int, n_items: int, count: int):
    return (torch.randint(rows, (count,), generator=generator),
            torch.randint(n_items, (count,), generator=generator))


@pytest.mark.parametrize("chunk_size", [1, 7, 97, 1000, 4096])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_topk_equals_one_topk_of_the_masked_matrix(chunk_size, masked):
    generator = torch.Generator().manual_seed(chunk_size)
    scores = torch.randn(40, 1000, generator=generator)
    exclude = _random_pairs(generator, 40, 1000, 3000) if masked else None  # duplicates included
    top = chunked_topk(lambda start, end: scores[:, start:end].clone(), 1000, 20, chunk_size, exclude)
    want = _dense_topk(scores, 20, exclude)
    assert torch.equal(top.items, want.indices) and torch.equal(top.scores, want.values)


def test_each_chunk_masks_its_own_history_items():
    """Mask the best item of every chunk of every row: none may come back,
    whatever chunk it lives in, and the rest is the dense answer."""
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(8, 500, generator=generator)
    chunk = 37
    best = torch.stack([scores[:, s:s + chunk].argmax(1) + s for s in range(0, 500, chunk)], dim=1)  # (8, chunks)
    exclude = (torch.arange(8).repeat_interleave(best.shape[1]), best.flatten())
    top = chunked_topk(lambda start, end: scores[:, start:end].clone(), 500, 10, chunk, exclude)
    assert not (top.items[:, :, None] == best[:, None, :]).any() and not (top.items == 0).any()
    assert torch.equal(top.items, _dense_topk(scores, 10, exclude).indices)


def _collector_config(metrics: list[str]) -> dict:
    return {"metrics": metrics, "topk": [5, 10, 20], "device": torch.device("cpu"), "eval_args": {"mode": "full"}}


def test_topk_rows_are_what_recboles_collector_stores():
    """'rec.topk' and 'rec.items' from the chunked path equal RecBole's
    collector's from the full matrix: several positives per user, duplicate
    pairs, users without positives."""
    generator = torch.Generator().manual_seed(2)
    n_users, n_items = 30, 800
    scores = torch.randn(n_users, n_items, generator=generator)
    history = _random_pairs(generator, n_users, n_items, 500)
    positive_u, positive_i = _random_pairs(generator, n_users - 5, n_items, 90)
    positive_u, positive_i = torch.cat([positive_u, positive_u[:10]]), torch.cat([positive_i, positive_i[:10]])

    theirs = Collector(_collector_config(METRICS + ["ItemCoverage"]))
    masked = scores.clone()
    masked[:, 0] = float("-inf")
    masked[history] = float("-inf")
    theirs.eval_batch_collect(masked, None, positive_u, positive_i)
    ours = TopKCollector(_collector_config(METRICS + ["ItemCoverage"]))
    top = chunked_topk(lambda start, end: scores[:, start:end].clone(), n_items, 20, 61, history)
    ours.eval_batch_collect(top, None, positive_u, positive_i)
    for key in ("rec.topk", "rec.items"):
        assert torch.equal(ours.data_struct[key], theirs.data_struct[key]), key
    assert torch.equal(topk_hits(top.items, positive_u, positive_i, n_items)[:, -1],
                       torch.bincount(torch.unique(positive_u * n_items + positive_i) // n_items, minlength=n_users))


def test_masked_items_stay_out_whatever_their_score():
    scores = torch.tensor([[float("inf"), float("nan"), 1.0, -0.0, 0.5]])
    exclude = (torch.tensor([0, 0]), torch.tensor([0, 1]))
    top = chunked_topk(lambda start, end: scores[:, start:end].clone(), 5, 4, 2, exclude)
    assert top.items.tolist() == [[2, 4, 3, 0]] and top.scores[0, -1] == float("-inf")


def test_the_accelerator_masking_masks_what_the_cpu_masking_does():
    generator = torch.Generator().manual_seed(4)
    scores = torch.randn(16, 50, generator=generator)
    scores[0, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
    rows, columns = _random_pairs(generator, 16, 120, 400)  # duplicates, and columns on both sides of the chunk
    rows, columns = torch.cat([rows, torch.zeros(3, dtype=torch.long)]), torch.cat([columns - 10, torch.arange(3)])
    on_cpu, without_sync = scores.clone(), scores.clone()
    _mask_pairs(on_cpu, rows, columns)
    _mask_pairs_without_sync(without_sync, rows, columns, (columns >= 0) & (columns < 50))
    assert torch.equal(on_cpu.isneginf(), without_sync.isneginf()) and on_cpu.isneginf().sum() > 100
    assert torch.equal(on_cpu.nan_to_num(), without_sync.nan_to_num()) and on_cpu[0, :3].isneginf().all()


def test_topk_hits_without_positives_are_all_misses():
    none = torch.zeros(0, dtype=torch.long)
    assert topk_hits(torch.tensor([[3, 1], [2, 4]]), none, none, 10).tolist() == [[0, 0, 0], [0, 0, 0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs exist on accelerators only")
def test_masked_topk_and_hits_never_wait_for_the_gpu():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(64, 5000, generator=generator).cuda()
    history = tuple(part.cuda() for part in _random_pairs(generator, 64, 5000, 2000))
    positives = tuple(part.cuda() for part in _random_pairs(generator, 64, 5000, 64))
    torch.cuda.set_sync_debug_mode("error")
    try:
        top = chunked_topk(lambda start, end: scores[:, start:end].clone(), 5000, 20, 777, history)
        topk_hits(top.items, *positives, 5000)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.fixture(scope="module")
def ml100k_trainer(ml100k_root):
    """AttnSeq on the ml-100k cut after one training epoch, metrics to 12
    decimals, every top-k metric RecBole has."""
    settings = {**FAST, "data_path": str(ml100k_root), "metrics": METRICS, "metric_decimal_place": 12,
                "eval_item_chunk_size": 97}
    config = AttnConfig("AttnSeq", "ml-100k", config_dict=settings)
    train, valid, test = data_preparation(config, create_dataset(config))
    model = config.model_class(config, train.dataset)
    trainer = AttnTrainer(config, model)
    trainer._train_epoch(AllPositionsLoader(config, train), 0)
    return trainer, train, valid, test


class RecordingTrainer(AttnTrainer):
    """Records what each full-sort batch step handed on: a TopK (item chunks) or a score matrix."""

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        self.handed_on: list[str] = []

    def _full_sort_batch_eval(self, batched_data):
        out = super()._full_sort_batch_eval(batched_data)
        self.handed_on.append(type(out[1]).__name__)
        return out


@pytest.mark.parametrize("filter_seen", [False, True])
def test_chunked_metrics_equal_recboles_on_ml100k(ml100k_trainer, filter_seen):
    trained, train, valid, test = ml100k_trainer
    if filter_seen:
        valid, test = _filtered(train, valid, test)
    results, handed_on = {}, {}
    for chunk in (97, None):
        trainer = RecordingTrainer(trained.config, trained.model)
        trainer.eval_item_chunk_size = chunk
        results[chunk] = [trainer.evaluate(data, load_best_model=False) for data in (valid, test)]
        handed_on[chunk] = set(trainer.handed_on)
    assert handed_on == {97: {"TopK"}, None: {"Tensor"}}  # the chunked run went through item chunks
    n_items = valid._dataset.item_num
    assert n_items // 97 >= 10  # many chunks
    for chunked, full in zip(results[97], results[None]):
        assert chunked.keys() == full.keys() and len(full) == len(METRICS) * 3
        assert chunked == full  # to 12 decimals: exactly the same rankings


def _filtered(train, valid, test):
    """The valid and test loaders with ``filter_seen`` masks (copies: the
    module fixture's loaders stay unfiltered)."""
    valid, test = copy.copy(valid), copy.copy(test)
    attach_seen_filters(train, valid, test)
    return valid, test


def test_filter_seen_masks_reach_every_chunk(ml100k_trainer):
    """With ``filter_seen`` no user's training items come back in the chunked
    top-20 of the validation ranking."""
    trainer, train, valid, test = ml100k_trainer
    valid, _ = _filtered(train, valid, test)
    trainer.eval_item_chunk_size = 97
    model = trainer.model.eval()
    for interaction, history_index, _, _ in valid:
        with torch.no_grad():
            scorer = item_scorer(model, interaction, valid._dataset.item_num)
            top = chunked_topk(scorer, valid._dataset.item_num, 20, 97, history_index)
        seen = torch.zeros(top.items.shape[0], valid._dataset.item_num, dtype=torch.bool)
        seen[history_index] = True
        assert history_index[0].numel() > 0
        assert not seen.gather(1, top.items).any()


@pytest.mark.parametrize("bad", [-1, 2.5, "big", True, [97]])
def test_bad_chunk_size_is_rejected_naming_the_value(bad, ml100k_root):
    with pytest.raises(UsageError, match=f"eval_item_chunk_size must be .*got {bad!r}".replace("[", r"\[")
                       .replace("]", r"\]")):
        AttnConfig("AttnSeq", "ml-100k", config_dict={"data_path": str(ml100k_root), "eval_item_chunk_size": bad})
    with pytest.raises(UsageError, match="item_chunk_size"):
        resolve_chunk_size(bad, 64, "item_chunk_size")


def test_chunk_size_auto_and_off():
    assert resolve_chunk_size(None, 4096) == 16384 and resolve_chunk_size(None, 10**6) == 1024
    assert resolve_chunk_size(0, 4096) is None and resolve_chunk_size(97, 4096) == 97


def test_metrics_that_need_every_score_fall_back_and_say_so(ml100k_root, caplog):
    assert metrics_needing_full_scores(METRICS + ["ItemCoverage", "GiniIndex"]) == []
    assert metrics_needing_full_scores(["Recall", "GAUC", "AUC"]) == ["GAUC", "AUC"]
    settings = {**FAST, "data_path": str(ml100k_root), "metrics": ["Recall", "GAUC"], "eval_item_chunk_size": 97,
                "valid_metric": "Recall@10"}
    config = AttnConfig("AttnSeq", "ml-100k", config_dict=settings)
    train, valid, _ = data_preparation(config, create_dataset(config))
    with caplog.at_level(logging.INFO):
        trainer = AttnTrainer(config, config.model_class(config, train.dataset))
    assert trainer.eval_item_chunk_size is None
    assert "['GAUC'] need every item's score" in caplog.text
    result = trainer.evaluate(valid, load_best_model=False)
    assert "gauc" in result and "recall@10" in result


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any torch op returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.numel() > self.numel:
                self.numel, self.shape = tensor.numel(), tuple(tensor.shape)
        return out


def test_no_users_by_items_tensor_for_a_200k_item_catalog():
    """The evaluator's batch step on a 200,000-item catalog never makes a
    tensor anywhere near (users x items); RecBole's path does (so the check
    can fail)."""
    n_items, users, chunk = 200_000, 256, 4096
    model = synthetic_model("AttnSeq", n_items, hidden_size=64, MAX_ITEM_LIST_LENGTH=20).eval()
    generator = torch.Generator().manual_seed(0)
    interaction = Interaction({
        model.ITEM_SEQ: torch.randint(1, n_items, (users, 20), generator=generator),
        model.ITEM_SEQ_LEN: torch.full((users,), 20),
    })
    history = (torch.arange(users).repeat_interleave(20), interaction[model.ITEM_SEQ].flatten())
    positives = (torch.arange(users), torch.randint(1, n_items, (users,), generator=generator))
    with torch.no_grad(), LargestTensor() as chunked:
        top = chunked_topk(item_scorer(model, interaction, n_items), n_items, 20, chunk, history)
        hits = topk_hits(top.items, *positives, n_items)
    assert hits.shape == (users, 21)
    # the largest is a chunk of scores (users x 4096) or the model's own feed-forward (users x 20 x 256)
    assert chunked.numel <= max(users * chunk, users * 20 * model.inner_size), chunked.shape
    with torch.no_grad(), LargestTensor() as full:
        model.full_sort_predict(interaction)
    assert full.numel >= users * n_items


def test_scale_report_writer_on_fake_rows(tmp_path):
    scale = benchmark_script("scale.py")
    run = {
        "command": "python benchmarks/scale.py --device cpu", "machine": {"device": "cpu"}, "versions": {},
        "started": "now", "seconds": 1.0, "note": "fake", "load": [0.0, 0.0, 0.0],
        "items": [
            {"loss": loss, "n_items": n, "seq_len": 50, "batch": 32, "step_seconds": 0.01 * n / 1000,
             "step_peak_mb": n / 1e4, "process_peak_mb": 100.0}
            for loss in ("CE", "SSM") for n in (1000, 10000)
        ] + [{"loss": "CE", "n_items": 10**6, "seq_len": 50, "batch": 32, "skipped": "too big"}],
        "length": [{"loss": "SSM", "n_items": 10000, "seq_len": L, "batch": 32, "step_seconds": L * 1e-4,
                    "step_peak_mb": 1.0, "process_peak_mb": 2.0} for L in (50, 100)],
        "users": [{"n_users": u, "seq_len": 50, "batch": 128, "epoch_seconds": u * 1e-3, "steps": 2}
                  for u in (500, 1000)],
        "eval": [{"mode": "chunked", "n_items": 10**6, "users": 512, "batch": 512, "chunk": 131072,
                  "seconds": 2.0, "users_per_second": 256.0, "rank_peak_mb": 250.0, "bound_mb": 257.0}],
    }
    table = scale.format_tables(run)
    assert "| CE | 1,000,000 | skipped: too big |" in table and "| SSM | 10,000 | 50 | 32 | 0.100 |" in table
    assert "CE: step time x10.0 from 1,000 to 10,000 items, x10.0 per step of the sweep (log-log slope 1.00, " \
           "about linear in items)" in table
    assert "ranking peak 250 MiB for 512 users per batch, within the stated bound of 257 MiB" in table
    stem = tmp_path / "scale"
    scale.write_report({"cpu": run}, stem)
    assert json.loads((tmp_path / "scale.json").read_text())["cpu"]["note"] == "fake"
    markdown = (tmp_path / "scale.md").read_text()
    assert "python benchmarks/scale.py --device cpu" in markdown and "skipped: too big" in markdown
    assert not list(tmp_path.glob(".tmp-*"))


BEYOND_ACCURACY = ["ItemCoverage", "AveragePopularity", "GiniIndex", "ShannonEntropy", "TailPercentage"]


@pytest.mark.parametrize("model", ["AttnSeq", "GRU4Rec"])  # chunked evaluation and RecBole's own
def test_beyond_accuracy_metrics_are_reported(pattern_root, model):
    import recbole_attn

    settings = {"epochs": 1, "state": "WARNING", "show_progress": False, "data_path": str(pattern_root),
                "metrics": ["NDCG", *BEYOND_ACCURACY], "topk": [10], "valid_metric": "NDCG@10"}
    result = recbole_attn.run(model, "pattern", config_dict=settings, write_results=False)
    test = result["test"]
    assert 0 < test["itemcoverage@10"] <= 1 and 0 <= test["giniindex@10"] <= 1
    assert test["averagepopularity@10"] > 0 and test["shannonentropy@10"] > 0
    assert 0 <= test["tailpercentage@10"] <= 1


EVAL_MODES = ["full", "uni20", "pop20", {"valid": "uni20", "test": "full"}]


@pytest.fixture(scope="module")
def small_pattern(tmp_path_factory):
    from recbole_attn.data.fixtures import write_sequential_pattern

    root = tmp_path_factory.mktemp("small")
    write_sequential_pattern(root, n_users=80, n_items=40, seq_len=12)
    return root


@pytest.mark.parametrize("filter_seen", [False, True])
@pytest.mark.parametrize("split", [{"LS": "valid_and_test"}, {"RS": [0.8, 0.1, 0.1]}])
@pytest.mark.parametrize("mode", EVAL_MODES, ids=["full", "uni20", "pop20", "uni20-then-full"])
@pytest.mark.parametrize("model", ["AttnSeq", "GRU4Rec"])
def test_every_evaluation_mode_works_with_our_options(small_pattern, model, mode, split, filter_seen):
    import recbole_attn

    settings = {"epochs": 1, "state": "WARNING", "show_progress": False, "data_path": str(small_pattern),
                "MAX_ITEM_LIST_LENGTH": 10, "filter_seen": filter_seen,
                "eval_args": {"split": split, "order": "TO", "mode": mode}}
    result = recbole_attn.run(model, "pattern", config_dict=settings, write_results=False)
    for part in ("best_valid", "test"):
        assert 0 <= result[part]["ndcg@10"] <= 1 and 0 <= result[part]["hit@10"] <= 1


def test_beyond_accuracy_metrics_of_item_chunks_equal_recboles_score_matrix(pattern_root):
    import recbole_attn

    settings = {"epochs": 1, "state": "WARNING", "show_progress": False, "data_path": str(pattern_root),
                "metrics": ["NDCG", *BEYOND_ACCURACY], "topk": [5, 10], "valid_metric": "NDCG@10"}
    chunked, full = (recbole_attn.run("AttnSeq", "pattern", write_results=False,
                                      config_dict={**settings, "eval_item_chunk_size": chunk})["test"]
                     for chunk in (7, 0))
    assert chunked == full and len(full) == 12


@pytest.mark.parametrize("model_name", ["AttnSeq", "AttnRNN"])
def test_predict_encodes_each_distinct_history_once_and_scores_every_row(model_name):
    model = synthetic_model(model_name, 50, MAX_ITEM_LIST_LENGTH=8).eval()
    generator = torch.Generator().manual_seed(0)
    histories = torch.randint(1, 50, (3, 8), generator=generator)
    histories[0, 5:] = 0
    lengths = torch.tensor([5, 8, 8])
    rows = torch.tensor([2, 0, 0, 1, 2, 0])  # as sampled evaluation repeats them, in any order
    items = torch.randint(1, 50, (6,), generator=generator)
    batch = Interaction({model.ITEM_SEQ: histories[rows], model.ITEM_SEQ_LEN: lengths[rows], model.ITEM_ID: items})
    embedded = []  # shapes the item table is looked up with: histories, then candidate items
    handle = model.item_embedding.register_forward_hook(lambda module, args, out: embedded.append(args[0].shape))
    with torch.no_grad():
        scores = model.predict(batch)
        handle.remove()
        expected = (model(histories[rows], lengths[rows]) * model.item_embedding(items)).sum(-1)
    assert (3, 8) in embedded and (6, 8) not in embedded  # three distinct histories encoded, not six
    torch.testing.assert_close(scores, expected)


class _Scored:
    """A model with both ways of scoring: the chunked scorer and the matrix."""

    def full_sort_scorer(self, interaction):
        return lambda start, end: torch.zeros(1, end - start)

    def full_sort_predict(self, interaction):
        return torch.zeros(1, 4)


class _OwnScores(_Scored):
    def full_sort_predict(self, interaction):  # a plugin's own ranking, e.g. a popularity prior added
        return torch.arange(4.0).view(1, 4)


class _OwnScorer(_OwnScores):
    def full_sort_scorer(self, interaction):
        return lambda start, end: -torch.arange(float(start), float(end)).view(1, -1)


class _PriorMixin:
    def full_sort_predict(self, interaction):
        return torch.full((1, 4), 7.0)


class _WithMixin(_PriorMixin, _Scored):
    pass


def test_a_model_that_overrides_full_sort_predict_is_ranked_by_it():
    """Evaluation and serving rank by the chunked scorer only where it is
    the model's last word: a subclass that replaced ``full_sort_predict``
    alone is ranked by its own scores."""
    assert item_scorer(_Scored(), None, 4)(0, 4).tolist() == [[0.0, 0.0, 0.0, 0.0]]
    assert item_scorer(_OwnScores(), None, 4)(1, 3).tolist() == [[1.0, 2.0]]
    assert item_scorer(_OwnScorer(), None, 4)(1, 3).tolist() == [[-1.0, -2.0]]
    assert item_scorer(_WithMixin(), None, 4)(0, 2).tolist() == [[7.0, 7.0]]  # a mixin's scores, first in line
