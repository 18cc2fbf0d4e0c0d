"""Multi-process (DDP) training: two CPU processes on loopback with gloo.

Two tests spawn real processes (each imports torch and RecBole, the
end-to-end one also builds the dataset and trains): together about 25 s of
CPU time on one core. The rest check the sharding and the options in-process.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from recbole.data import create_dataset, data_preparation

import recbole_attn
from recbole_attn import distributed
from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader, attach_seen_filters
from recbole_attn.errors import UsageError
from recbole_attn.runner import build_trainer
from tests.conftest import FAST


def _settings(ml100k_root: Path, out: Path, **extra: object) -> dict:
    return {**FAST, "data_path": str(ml100k_root), "output_dir": str(out), "filter_seen": True,
            "train_batch_size": 64, "learning_rate": 0.01, **extra}


@pytest.fixture(scope="module")
def ml100k_train(ml100k_root):
    config = AttnConfig("AttnSeq", "ml-100k", config_dict={
        "data_path": str(ml100k_root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 20, "train_batch_size": 64})
    train, _, _ = data_preparation(config, create_dataset(config))
    return config, train


@pytest.mark.parametrize("world", [2, 3])
def test_all_positions_shards_are_disjoint_cover_every_row_and_step_together(ml100k_train, world):
    config, train = ml100k_train
    loaders = [AllPositionsLoader(config, train, rank=r, world_size=world) for r in range(world)]
    rows = loaders[0].num_rows
    assert rows > 2 * config["train_batch_size"]  # several global batches, a short tail
    orders = []
    for epoch in (0, 1):
        for loader in loaders:
            loader.set_epoch(epoch)
        shards = [loader.batch_indices() for loader in loaders]
        assert len({len(batches) for batches in shards}) == 1 == len({len(loader) for loader in loaders})
        assert all(len(batch) > 0 for batches in shards for batch in batches)  # no empty step on any rank
        everything = torch.cat([torch.cat(batches) for batches in shards])
        assert len(everything) == rows and torch.equal(everything.sort().values, torch.arange(rows))
        # step k of all ranks together is the k-th global batch of train_batch_size rows
        assert all(sum(len(batches[k]) for batches in shards) <= config["train_batch_size"] + world
                   for k in range(len(shards[0])))
        orders.append(torch.cat(shards[0]))
    assert not torch.equal(orders[0], orders[1])  # reshuffled per epoch
    single = AllPositionsLoader(config, train, rank=0, world_size=1)
    assert len(single) == -(-rows // config["train_batch_size"])  # one process: RecBole's batch count


def _evaluate_checkpoint(settings: dict, checkpoint: str) -> dict:
    """Test metrics of ``checkpoint``, evaluated by one process."""
    config = AttnConfig("AttnSeq", "ml-100k", config_dict={**settings, "nproc": 1})
    train, valid, test = data_preparation(config, create_dataset(config))
    attach_seen_filters(train, valid, test)
    model = config.model_class(config, train.dataset)
    return dict(build_trainer(config, model).evaluate(test, load_best_model=True, model_file=checkpoint))


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(ml100k_root, tmp_path):
    """Two CPU processes (gloo, loopback, a free port) against one process
    with the same settings (``filter_seen`` on, global batch 64 windows).

    Exact: the two-process test metrics equal what one process computes from
    rank 0's best checkpoint. That holds only if each user is evaluated once
    (no padded duplicates), the metrics are computed over all users' rows
    rather than averaged per process, and both processes hold the same
    weights (the gradients really were all-reduced: rank 1 scores half the
    users with its own copy).

    Not exact: training. Each process takes half of every global batch and
    DDP averages the two half-batch gradients (the mean of two means, not the
    mean over the batch's targets), rank 1 draws its own dropout masks, and
    the shuffle comes from ``seed + epoch`` rather than the global RNG, so
    the two runs follow different paths, like two seeds. Tolerances:
    per-epoch training loss within 5% (the second epoch's loss of seeds
    2020-2022 spreads 1.4% in one process, and two processes were up to
    2.1% off one; a shard served twice or a loss summed instead of averaged
    is 100% off), test NDCG@10 within 0.05 absolute (seeds: 0.005 to 0.043
    on these 60 test users, so one hit more or less moves it by ~0.01-0.02).
    """
    single = recbole_attn.run("AttnSeq", "ml-100k", config_dict=_settings(ml100k_root, tmp_path / "one"))
    settings = _settings(ml100k_root, tmp_path / "two", nproc=2)
    result = recbole_attn.run("AttnSeq", "ml-100k", config_dict=settings)

    [written] = list((tmp_path / "two").glob("*.json"))
    assert result["results_file"] == str(written) and not list((tmp_path / "two").glob(".tmp-*"))
    on_disk = json.loads(written.read_text())
    assert on_disk["test"] == result["test"] and on_disk["world_size"] == 2 == result["world_size"]
    assert on_disk["config"]["backend"] == "gloo" and on_disk["epochs_run"] == single["epochs_run"] == 2
    assert all(0 <= value <= 1 for value in [*result["test"].values(), *result["best_valid"].values()])

    assert result["test"] == _evaluate_checkpoint(settings, result["checkpoint"])
    for one, two in zip(single["curve"], result["curve"]):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.05)
    assert abs(result["test"]["ndcg@10"] - single["test"]["ndcg@10"]) <= 0.05


def _fail_on_rank_one(overrides: dict) -> None:
    if distributed.rank() == 1:
        raise UsageError("bad value on rank 1")
    distributed.barrier()  # rank 0 would wait here forever if rank 1's failure did not end it


@pytest.mark.slow
def test_an_error_in_one_process_ends_all_and_is_raised_as_raised():
    launch = distributed.Launch(nproc=2, world_size=2, offset=0, ip="127.0.0.1", port=distributed.free_port(),
                                backend="gloo", device_type="cpu")
    with pytest.raises(UsageError, match="bad value on rank 1"):
        distributed.spawn(launch, _fail_on_rank_one)


@pytest.mark.parametrize("options, needle", [
    ({"nproc": 0}, "nproc must be an integer > 0, got 0"),
    ({"nproc": "two"}, "nproc must be an integer > 0, got 'two'"),
    ({"nproc": 2, "backend": "glo"}, "unknown backend 'glo'. Did you mean 'gloo'? Valid choices: gloo, mpi, nccl"),
    ({"nproc": 2, "world_size": 1}, "world_size must be -1 (= nproc) or an integer >= nproc=2, got 1"),
    ({"nproc": 2, "world_size": 4}, "give every machine the --ip and --port"),
    ({"nproc": 2, "world_size": 4, "offset": 3, "ip": "10.0.0.1", "port": 29500}, "offset=3 + nproc=2 exceeds"),
    ({"nproc": 2, "port": 70000}, "port must be an integer in 1..65535, got 70000"),
    ({"nproc": 2, "local_rank": 1}, "local_rank is set by the runner"),
])
def test_bad_distributed_options_name_the_value(ml100k_root, options, needle):
    with pytest.raises(UsageError) as error:
        recbole_attn.run("AttnSeq", "ml-100k", config_dict={"data_path": str(ml100k_root), **options})
    assert needle in str(error.value)


def test_nccl_needs_cuda(ml100k_root):
    config = AttnConfig("AttnSeq", "ml-100k", config_dict={"data_path": str(ml100k_root), "device": "cpu",
                                                           "nproc": 2, "backend": "nccl"})
    with pytest.raises(UsageError, match="backend='nccl' needs CUDA devices; use backend=gloo"):
        distributed.plan(config)


def test_one_process_plans_no_launch(ml100k_root):
    config = AttnConfig("AttnSeq", "ml-100k", config_dict={"data_path": str(ml100k_root)})
    assert config["nproc"] == 1 and distributed.plan(config) is None
