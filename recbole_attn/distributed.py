"""Multi-process training with ``torch.distributed`` (DDP), RecBole's way.

RecBole 1.2.1 trains data-parallel when its config holds ``local_rank``
(set per process by ``quick_start.run_recboles`` under ``mp.spawn``), but its
``Config._init_device`` hard-codes NCCL and CUDA (its trainer's
``device_ids`` for CPU modules is mended in :mod:`recbole_attn.compat`),
its evaluation sampler pads the user list so that some users count
twice, and ``_map_reduce`` weights each process's metrics by its number of
*batches*. This module holds everything the runner needs instead:

* :func:`plan` reads and checks ``nproc``, ``world_size``, ``offset``, ``ip``,
  ``port`` and ``backend`` in the parent (gloo on CPU, NCCL on CUDA, a free
  loopback port when none is given);
* :func:`spawn` starts the processes, :func:`process_device` gives each one
  its device, and the spawned function's result (or error) comes back to the
  parent from global rank 0 through a private temp folder, not a pipe that
  a big result could fill while the parent waits in ``join``;
* :func:`shard_evaluation` and :class:`GatherMetrics` make each user count
  exactly once: disjoint user shards, then the per-user rows RecBole's
  evaluator reads are gathered from every process before the metrics are
  computed, so the numbers equal a single-process evaluation's;
* small rank helpers (:func:`rank`, :func:`is_rank_zero`,
  :func:`from_rank_zero`, :func:`mean_over_ranks`, :func:`barrier`) that do
  nothing, and cost nothing, in a single process.
"""
from __future__ import annotations

import pickle
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import ProcessException, start_processes

from recbole_attn.atomic import atomic_path
from recbole_attn.errors import UsageError, check_choice, check_positive
from recbole_attn.hooks import TrainerHook

#: Backends ``--backend`` may name (those this torch build has are offered).
BACKENDS = ("gloo", "nccl", "mpi")
#: Collector entries that hold one row per evaluated user (RecBole resets
#: exactly these after every evaluation); everything else is global already.
PER_USER_ENTRIES = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Launch:
    """How to start this machine's share of a multi-process run."""

    nproc: int  # processes on this machine
    world_size: int  # processes on all machines
    offset: int  # global rank of this machine's first process
    ip: str
    port: int
    backend: str
    device_type: str  # "cpu" or "cuda"

    def overrides(self, local_rank: int) -> dict[str, Any]:
        """Config values of one spawned process; they win over every layer."""
        return {"local_rank": local_rank, "nproc": self.nproc, "world_size": self.world_size,
                "offset": self.offset, "ip": self.ip, "port": self.port, "backend": self.backend,
                "device": self.device_type}


# ----------------------------------------------------------------------------- planning

def available_backends() -> list[str]:
    """The entries of :data:`BACKENDS` this torch build can use."""
    if not dist.is_available():
        return []
    checks = {"gloo": dist.is_gloo_available, "nccl": dist.is_nccl_available, "mpi": dist.is_mpi_available}
    return [name for name in BACKENDS if checks[name]()]


def free_port(ip: str = LOOPBACK) -> int:
    """A TCP port nothing listens on at ``ip`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((ip, 0))
        return probe.getsockname()[1]


def _int_option(config: Any, key: str, default: int) -> int:
    value = config[key]
    return default if value is None else value


def plan(config: Any) -> Launch | None:
    """The multi-process launch ``config`` asks for, or ``None`` for one
    process. Every bad value is a :class:`UsageError` naming it."""
    nproc = _int_option(config, "nproc", 1)
    check_positive("nproc", nproc)
    world_size = _int_option(config, "world_size", -1)
    world_size = nproc if world_size == -1 else world_size
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < nproc:
        raise UsageError(
            f"world_size must be -1 (= nproc) or an integer >= nproc={nproc}, got {config['world_size']!r}")
    offset = _int_option(config, "offset", 0)
    check_positive("offset", offset, allow_zero=True)
    if offset + nproc > world_size:
        raise UsageError(f"offset={offset} + nproc={nproc} exceeds world_size={world_size}")
    if world_size == 1:
        return None

    device_type = torch.device(config["device"]).type
    backend = config["backend"] or ("nccl" if device_type == "cuda" else "gloo")
    check_choice("backend", backend, BACKENDS)
    if backend == "nccl" and device_type != "cuda":
        raise UsageError("backend='nccl' needs CUDA devices; use backend=gloo with device=cpu")
    if backend not in available_backends():
        raise UsageError(f"backend {backend!r} is not available in this torch build; "
                         f"available: {', '.join(available_backends()) or 'none'}")
    if device_type == "cuda":
        gpus = [gpu for gpu in str(config["gpu_id"]).split(",") if gpu.strip()]
        if len(gpus) < nproc:
            raise UsageError(f"nproc={nproc} processes on CUDA need as many GPUs in gpu_id, got "
                             f"gpu_id={config['gpu_id']!r}; e.g. --gpu_id=0,1, or --device=cpu")

    multi_node = world_size > nproc
    ip, port = config["ip"], config["port"]
    if multi_node and (ip is None or port is None):
        raise UsageError(f"world_size={world_size} > nproc={nproc} spans machines: give every machine the "
                         f"--ip and --port of the machine running rank 0")
    ip = str(ip or LOOPBACK)
    if port is None:
        port = free_port(ip)
    elif isinstance(port, str) and port.isdigit():  # RecBole's own default is the string "5678"
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise UsageError(f"port must be an integer in 1..65535, got {port!r}")
    return Launch(nproc, world_size, offset, ip, port, backend, device_type)


# ----------------------------------------------------------------------------- processes

def process_device(final_config: dict[str, Any]) -> None:
    """``Config._init_device`` for a spawned process: its own GPU
    (``cuda:<local_rank>``) or the CPU, ``single_spec`` off, and only the
    first process of each machine logging (as RecBole does)."""
    local_rank = final_config["local_rank"]
    if torch.device(str(final_config["device"])).type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    final_config.update(device=device, single_spec=False)
    if local_rank != 0:
        final_config.update(state="error", show_progress=False, verbose=False)


def _init_process(launch: Launch, local_rank: int) -> None:
    dist.init_process_group(backend=launch.backend, init_method=f"tcp://{launch.ip}:{launch.port}",
                            rank=launch.offset + local_rank, world_size=launch.world_size)


def _write_pickle(path: Path, value: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        pickle.dump(value, out)


def _process_main(local_rank: int, launch: Launch, target: Callable[..., Any], args: tuple,
                  kwargs: dict[str, Any], handoff: str) -> None:
    """Body of one spawned process: join the group, run ``target`` with this
    process's config overrides, hand rank 0's result (or any error) back."""
    folder = Path(handoff)
    try:
        _init_process(launch, local_rank)
        result = target(*args, overrides=launch.overrides(local_rank), **kwargs)
        if local_rank == 0:  # this machine's first process answers its parent
            _write_pickle(folder / "result.pkl", result)
    except BaseException as error:
        try:
            pickle.dumps(error)
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        # named by when it was caught: the first is the cause; later ones are
        # usually other processes losing their connection to the failed one
        _write_pickle(folder / f"error-{time.time_ns():020d}-{local_rank:05d}.pkl", error)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(launch: Launch, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``target(*args, overrides=..., **kwargs)`` in ``launch.nproc`` new
    processes and return what this machine's first one returned. An error in
    any process ends them all (``torch.multiprocessing`` terminates the rest,
    so none waits forever in a collective) and the first one raised is
    raised here as it was raised there, so a :class:`UsageError` stays one
    (exit code 2)."""
    handoff = tempfile.mkdtemp(prefix="recbole_attn-ddp-")
    try:
        try:
            start_processes(_process_main, args=(launch, target, args, kwargs, handoff),
                               nprocs=launch.nproc, join=True, start_method="spawn")
        except ProcessException:
            errors = sorted(Path(handoff).glob("error-*.pkl"))
            if errors:
                with open(errors[0], "rb") as source:
                    raise pickle.load(source) from None
            raise
        with open(Path(handoff) / "result.pkl", "rb") as source:
            return pickle.load(source)
    finally:
        shutil.rmtree(handoff, ignore_errors=True)


# ----------------------------------------------------------------------------- rank helpers

def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank_zero() -> bool:
    """Whether this process writes files (checkpoints, results) for the run."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def from_rank_zero(value: Any) -> Any:
    """Rank 0's ``value`` on every process (a decision, a file name)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_rank_zero(value: Any) -> list[Any] | None:
    """Every process's ``value``, in rank order, on rank 0 (``None`` elsewhere)."""
    if world_size() == 1:
        return [value]
    gathered = [None] * world_size() if rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of a (device) tensor over all processes; itself in one process."""
    if world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total / world_size()


def set_epoch(loader: Any, epoch: int) -> None:
    """Reshuffle a training loader's shards for ``epoch`` the same way on
    every process: our :class:`~recbole_attn.data.rows.AllPositionsLoader` or a
    RecBole loader's ``DistributedSampler`` (RecBole's own trainer does the
    latter itself; ours overrides its epoch loop)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif isinstance(getattr(loader, "sampler", None), torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)


# ----------------------------------------------------------------------------- evaluation

def shard_evaluation(loader: Any) -> None:
    """Give each process a disjoint, contiguous share of an evaluation
    loader's rows (users), in place of RecBole's ``DistributedSampler``,
    which pads the list with repeated users so all shares are equally long."""
    if loader.sample_size < world_size():
        raise UsageError(f"{loader.sample_size} users to evaluate cannot be shared by {world_size()} processes; "
                         f"use a smaller nproc")
    shards = torch.tensor_split(torch.arange(loader.sample_size), world_size())
    loader.batch_sampler.sampler = shards[rank()].tolist()


def _gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows of ``tensor`` (row counts may differ);
    through the GPU for NCCL, which moves CUDA tensors only."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    local = tensor.to(device)
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([len(local)], device=device))
    longest = int(max(counts).item())
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(count.item())] for part, count in zip(parts, counts)]).to(tensor.device)


class GatheringEvaluator:
    """RecBole's ``Evaluator`` on every process's per-user rows at once: the
    metrics are those of one process evaluating all users."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def evaluate(self, struct: Any) -> Any:
        for key in PER_USER_ENTRIES:
            if key in struct:
                struct.set(key, _gather_rows(struct.get(key)))
        return self.evaluator.evaluate(struct)

    def __getattr__(self, name: str) -> Any:
        if name == "evaluator":  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.evaluator, name)


class GatherMetrics(TrainerHook):
    """A trainer (ours or any RecBole ``Trainer``) computes metrics over all
    processes' users at once; RecBole's own ``_map_reduce`` (a mean of
    per-process metrics weighted by batch count, after rounding) is skipped."""

    gathers_metrics = True

    def wrap_evaluator(self, evaluator: Any) -> Any:
        return GatheringEvaluator(evaluator)
