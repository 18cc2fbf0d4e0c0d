"""Training checkpoints that hold plain data only, and resuming from them.

Two files per run, both written atomically (temp file + rename):

* the **best** model, RecBole's ``saved_model_file`` (``saved/<Model>-<time>-<tag>.pth``),
  rewritten whenever validation improves; the test reloads it;
* the **last** checkpoint, ``saved/<Model>-<time>-<tag>-last.pth``, holding
  everything needed to go on as if the process had never stopped: weights,
  optimizer, epoch, early-stopping state, best result so far, the RNG states
  of torch (CPU and CUDA), numpy and ``random``, the training loader's own
  shuffling generator, the per-epoch curve, and the path of the best file;
  under DDP rank 0 writes it, with every process's RNG states, so that a
  resumed run with the same ``nproc`` draws what each process would have.

The last checkpoint is written once epoch ``e`` is completely done (trained,
validated, best file updated), at the moment the trainer's loop comes round
to epoch ``e + 1``, and again when fitting ends (``finished: True``). Nothing
draws random numbers in between, so the saved RNG states are exactly those the
next epoch starts from, and a resumed run repeats the uninterrupted one.

Every value is a tensor, number, string, list or dict, so
``torch.load(path, weights_only=True)`` (torch's safe default) reads it;
:func:`load_checkpoint` turns an unreadable file into one
:class:`~recbole_attn.errors.UsageError` line naming it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbole_attn import distributed
from recbole_attn.budget import fitted_seconds
from recbole_attn.serialization import atomic_torch_save, plain_data
from recbole_attn.errors import UsageError
from recbole_attn.hooks import TrainerHook
from recbole_attn.run_claim import claim

logger = logging.getLogger(__name__)

LAST_SUFFIX = "-last.pth"
#: Keys every checkpoint this package writes has (best and last alike).
REQUIRED_KEYS = ("config", "state_dict")
#: Settings that do not change what training computes: how long it may run,
#: where files go, how it reports, how its processes find each other.
UNFINGERPRINTED_KEYS = frozenset({
    "resume", "epochs", "time_budget", "data_path", "checkpoint_dir", "output_dir", "config_files",
    "state", "show_progress", "strict_keys", "log_wandb", "wandb_project", "ip", "port", "local_rank",
    # which device and machine a process runs on (they differ between the processes of one DDP run)
    "device", "gpu_id", "use_gpu", "offset", "verbose", "single_spec",
})


#: Options added after checkpoints were first written, with the value at
#: which each is off (and the options that only matter when it is on): a
#: run with them off trains as before they existed, so its fingerprint
#: leaves them out and older checkpoints stay resumable.
OFF_WHEN = {"lr_plateau_patience": (0, ("lr_plateau_factor",)), "pack_windows": (False, ())}


def trainer_state(trainer: Any, epoch: int, data_hash: str | None) -> dict[str, Any]:
    """What both checkpoint files hold of a trainer, as plain data: its
    config, the model and optimizer after ``epoch``, the best score so far
    and the fingerprint of the data it trained on."""
    return {
        "config": plain_data(trainer.config.final_config_dict),
        "data_fingerprint": data_hash,
        "epoch": epoch,
        "cur_step": trainer.cur_step,
        "best_valid_score": plain_data(trainer.best_valid_score),
        "state_dict": trainer.model.state_dict(),
        "other_parameter": trainer.model.other_parameter(),
        "optimizer": trainer.optimizer.state_dict(),
    }


def training_settings(config: Any) -> dict[str, Any]:
    """The settings of a (plain or RecBole) config that change training."""
    settings = {key: value for key, value in plain_data(dict(config)).items() if key not in UNFINGERPRINTED_KEYS}
    for key, (off, dependents) in OFF_WHEN.items():
        if settings.get(key, off) == off:
            for dropped in (key, *dependents):
                settings.pop(dropped, None)
    return settings


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of :func:`training_settings`, stored in every checkpoint."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_fingerprint(dataset: Any) -> str | None:
    """A short hash of the training data a model's tables index: the user
    and item tokens in id order and the target item of every training row.
    ``data_path`` stays out of the settings fingerprint (a data folder may
    move), so this is what tells other data of the same name apart."""
    fields = [getattr(dataset, "uid_field", None), getattr(dataset, "iid_field", None)]
    tokens = getattr(dataset, "field2id_token", None)
    inter = getattr(dataset, "inter_feat", None)
    if tokens is None or inter is None or None in fields:
        return None
    digest = hashlib.sha256()
    for field in fields:
        digest.update("\x1f".join(map(str, tokens[field])).encode())
        digest.update(b"\x1e")
    digest.update(np.ascontiguousarray(inter[fields[1]].numpy(), dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def differing_settings(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: stored -> current`` for each training setting that differs."""
    keys = sorted(set(stored) | set(current))
    return [f"{key}: {stored.get(key)!r} -> {current.get(key)!r}" for key in keys
            if stored.get(key) != current.get(key)]


def settings_mismatch(state: dict[str, Any], current: dict[str, Any]) -> list[str] | None:
    """None when a run whose :func:`training_settings` are ``current`` trains
    as the one that wrote the checkpoint ``state`` did; else the differing
    settings (by fingerprint, so a checkpoint's recorded one decides)."""
    if _fingerprint_of(state) == settings_fingerprint(current):
        return None
    return differing_settings(training_settings(state["config"]), current)


def last_checkpoint_path(saved_model_file: str | os.PathLike) -> str:
    """``saved/AttnSeq-<time>.pth`` -> ``saved/AttnSeq-<time>-last.pth``."""
    stem, _ = os.path.splitext(os.fspath(saved_model_file))
    return stem + LAST_SUFFIX


def _why_unreadable(error: Exception) -> str:
    """One line on why ``torch.load`` failed, without its advice to turn the
    safe unpickler off (and without its terminal colour codes)."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it holds pickled Python objects ({found.group(1)}), e.g. RecBole's own Config; "
                f"only plain-data checkpoints are loaded")
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation", 1)[0].strip()
    return f"corrupt or truncated ({type(error).__name__}: {text[:160] or 'no detail'})"


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", required: tuple[str, ...] = REQUIRED_KEYS
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing, truncated,
    corrupt or foreign file raises a one-line :class:`UsageError` naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} {'is not a file' if os.path.exists(path) else 'does not exist'}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # zip reader, unpickler, EOF: all mean "not readable here"
        raise UsageError(f"cannot read checkpoint {path}: {_why_unreadable(error)}") from None
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise UsageError(f"{path} is not a recbole_attn checkpoint (missing {', '.join(missing)})")
    if "config" in required and not isinstance(state["config"], dict):
        raise UsageError(f"{path} is not a recbole_attn checkpoint (its config is not a mapping)")
    return state


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: str | os.PathLike,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
    """Put a checkpoint's weights (and optimizer state) into ``model``; a
    checkpoint whose config does not fit them is one :class:`UsageError` line."""
    try:
        model.load_state_dict(state["state_dict"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        first = " ".join(str(error).split())[:240]
        raise UsageError(f"checkpoint {os.fspath(path)} does not fit this model's settings: {first}") from None
    load_other = getattr(model, "load_other_parameter", None)
    if load_other is not None:
        load_other(state.get("other_parameter"))


# ----------------------------------------------------------------------------- RNG states

def rng_states() -> dict[str, Any]:
    """Global RNG states as plain data (numpy's array becomes a tensor,
    ``random``'s tuple a list)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # legacy=True: the MT19937 tuple
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "random": [version, list(internal), gauss],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    version, internal, gauss = states["random"]
    random.setstate((version, tuple(internal), gauss))


def _loader_generator(loader: Any) -> torch.Generator | None:
    """RecBole's loaders shuffle with their own ``torch.Generator``."""
    generator = getattr(loader, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


# ----------------------------------------------------------------------------- saving

class LastCheckpoint(TrainerHook):
    """Writes the trainer's last checkpoint after every epoch (any RecBole
    trainer): on entering epoch ``e`` it saves the state after epoch
    ``e - 1``. Call :meth:`save` with ``finished=True`` once ``fit`` returns.
    ``extra`` returns plain data to store beside (the runner's per-epoch
    curve). It writes to :attr:`path`: beside the best-model file, or the
    file a resumed run goes on from."""

    def __init__(self, train_data: Any, extra: Callable[[], dict[str, Any]] = dict,
                 data_hash: str | None = None) -> None:
        self.train_data, self.extra = train_data, extra
        self.data_hash = data_hash  # the training data's :func:`data_fingerprint`, computed once by the runner
        self.trainer: Any = None
        self.resumed_path: str | None = None  # set when the run goes on from a last checkpoint
        self.current_epoch: int | None = None  # epoch being trained
        self.last_epoch: int | None = None  # last epoch whose training finished
        self.saved_epoch: int | None = None

    @property
    def path(self) -> str:
        return self.resumed_path or last_checkpoint_path(self.trainer.saved_model_file)

    def on_build(self, trainer: Any) -> None:
        self.trainer = trainer

    def before_train_epoch(self, trainer: Any, epoch_idx: int) -> None:
        if self.last_epoch is not None:
            self.save()
        self.current_epoch = epoch_idx

    def after_train_epoch(self, trainer: Any, epoch_idx: int, train_data: Any, loss: Any) -> None:
        self.last_epoch = epoch_idx

    def save(self, finished: bool = False) -> None:
        """Atomically write the state after epoch ``last_epoch``."""
        trainer = self.trainer
        if self.last_epoch is None or (self.saved_epoch == self.last_epoch and not finished):
            return
        rng = rng_states()
        per_rank = distributed.gather_to_rank_zero(rng) if distributed.world_size() > 1 else None
        if not distributed.is_rank_zero():  # one writer per run, not one per machine
            self.saved_epoch = self.last_epoch
            return
        generator = _loader_generator(self.train_data)
        settings = training_settings(trainer.config.final_config_dict)
        state = {
            "kind": "last",
            **trainer_state(trainer, self.last_epoch, self.data_hash),
            "fingerprint": settings_fingerprint(settings),
            "finished": finished,
            "best_valid_result": plain_data(trainer.best_valid_result),
            "best_model_file": os.fspath(trainer.saved_model_file),
            "rng": rng,
            "rng_per_rank": per_rank,  # DDP: each process's own (dropout masks differ per rank)
            "loader_rng": generator.get_state() if generator is not None else None,
            "extra": plain_data(self.extra()),
        }
        atomic_torch_save(state, self.path)
        self.saved_epoch = self.last_epoch
        trainer.logger.info(f"Saved last checkpoint (epoch {self.last_epoch}): {self.path}")


# ----------------------------------------------------------------------------- resuming

def find_last_checkpoint(
    checkpoint_dir: str | os.PathLike, config: Any, data_hash: str | None = None,
    claims: ExitStack | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """Newest ``*-last.pth`` (path, state) in ``checkpoint_dir`` written by a run with the
    same training settings as ``config`` (``resume=auto``) on the training
    data whose :func:`data_fingerprint` is ``data_hash`` (when given). Files
    of another model or dataset are not candidates; unreadable files,
    checkpoints of other settings or data, and (given ``claims``) those a
    running run holds are skipped with a warning naming them. With
    ``claims`` the checkpoint found is claimed (:mod:`recbole_attn.run_claim`)
    before it is read, and the claim is entered into ``claims``."""
    candidates = sorted(Path(checkpoint_dir).glob(f"{config['model']}-*{LAST_SUFFIX}"),
                        key=lambda p: p.stat().st_mtime)
    current = training_settings(config.final_config_dict)
    for path in reversed(candidates):
        with ExitStack() as this_claim:
            if claims is not None:
                held = claim(path)
                if held is None:
                    logger.warning(f"resume=auto: skipping {path}: another run is training from it")
                    continue
                this_claim.enter_context(held)
            found = _resumable_candidate(path, config, current, data_hash)
            if found is None:
                continue  # the claim, if any, is released on leaving the block
            if claims is not None:
                claims.enter_context(this_claim.pop_all())
            return str(path), found
    return None


def _resumable_candidate(path: Path, config: Any, current: dict[str, Any], data_hash: str | None
                         ) -> dict[str, Any] | None:
    """The state of the last checkpoint ``path`` if a run of ``config``
    (whose :func:`training_settings` are ``current``) may go on from it;
    else None, with a warning when it is another run's of this model and
    dataset."""
    model, dataset = config["model"], config["dataset"]
    try:
        stored = load_checkpoint(path)
    except UsageError as error:
        logger.warning(f"resume=auto: skipping {path}: {error}")
        return None
    if stored["config"].get("model") != model or stored["config"].get("dataset") != dataset:
        return None
    differing = settings_mismatch(stored, current)
    if differing is not None:
        logger.warning(f"resume=auto: skipping {path}: it was trained with other settings "
                       f"({'; '.join(differing[:3]) or 'unknown'})")
        return None
    if not same_data(stored, data_hash):
        logger.warning(f"resume=auto: skipping {path}: it was trained on other data named {dataset!r}")
        return None
    obstacle = resume_obstacle(stored, config["epochs"], config["time_budget"])
    if obstacle:
        logger.warning(f"resume=auto: skipping {path}: {obstacle}")
        return None
    return stored


def same_data(state: dict[str, Any], wanted: str | None) -> bool:
    """Whether the checkpoint ``state`` was trained on the data whose
    fingerprint is ``wanted`` (checkpoints written before the data
    fingerprint, and data without one, are taken as the same)."""
    recorded = state.get("data_fingerprint")
    return recorded is None or wanted is None or recorded == wanted


def resume_obstacle(state: dict[str, Any], epochs: int, time_budget: float | None) -> str | None:
    """Why a run capped at ``epochs`` and ``time_budget`` seconds cannot go
    on from the last checkpoint ``state`` (None: it can). The cap and budget
    are not in the fingerprint, so that a run may go on with larger ones; a
    checkpoint trained past them would be tested as this run's model."""
    done = state["epoch"] + 1
    if done > epochs:
        return f"it has trained {done} epochs, more than epochs={epochs}"
    if time_budget is None or time_budget == state["config"].get("time_budget"):
        return None  # no budget, or the one the checkpoint was trained under: it cannot have overrun it
    spent = fitted_seconds((state.get("extra") or {}).get("curve", []))
    if spent > time_budget:
        return f"it has fitted for {spent:.0f} s, more than time_budget={time_budget}"
    return None


def training_is_over(state: dict[str, Any], epochs: int, stopping_step: int) -> bool:
    """Whether a run capped at ``epochs`` has nothing left to train after
    ``state``: early stopping ended it (RecBole stops once ``cur_step`` passes
    ``stopping_step``) or it has reached the cap. A run that a smaller cap
    ended goes on."""
    return state["cur_step"] > stopping_step or state["epoch"] + 1 >= epochs


def _fingerprint_of(state: dict[str, Any]) -> str:
    """The checkpoint's recorded fingerprint (computed from its config for older files)."""
    recorded = state.get("fingerprint")
    return recorded if isinstance(recorded, str) else settings_fingerprint(training_settings(state["config"]))


def _best_model_file(state: dict[str, Any], path: str) -> str:
    """The best-model file a last checkpoint points to: where it was written,
    else beside the last checkpoint (the folder was moved)."""
    recorded = state["best_model_file"]
    beside = os.path.join(os.path.dirname(path), os.path.basename(recorded))
    for candidate in (recorded, beside):
        if os.path.isfile(candidate):
            return candidate
    if state["best_valid_result"] is None:  # no validation yet: nothing to reload
        return recorded
    raise UsageError(f"the best-model checkpoint {recorded} that {path} refers to is missing")


def check_resumable(state: dict[str, Any], path: str, config: Any, data_hash: str | None) -> None:
    """Raise :class:`UsageError` unless a run of ``config`` on the training
    data whose :func:`data_fingerprint` is ``data_hash`` may go on from the
    last checkpoint ``state`` (read from ``path``): the same model, dataset,
    training settings and data, within the epoch cap and time budget. The
    runner calls it before the trainer makes any folder."""
    if state.get("kind") != "last":  # RecBole's own checkpoints miss the RNG and loader states too
        raise UsageError(f"{path} is a best-model checkpoint; resume from the *{LAST_SUFFIX} file beside it")
    for key in ("model", "dataset"):
        if str(state["config"].get(key)) != str(config[key]):
            raise UsageError(
                f"checkpoint {path} was trained with {key}={state['config'].get(key)}, "
                f"this run has {key}={config[key]}"
            )
    current = training_settings(config.final_config_dict)
    differing = settings_mismatch(state, current)
    if differing is not None:
        raise UsageError(
            f"checkpoint {path} was trained with other settings ({'; '.join(differing[:8]) or 'unknown'}); "
            f"pass the same options as that run, or start afresh without --resume"
        )
    if not same_data(state, data_hash):
        raise UsageError(
            f"checkpoint {path} was trained on other data named {config['dataset']!r} (other users, items "
            f"or training rows than in data_path={config['data_path']}); point data_path at the data it "
            f"was trained on, or start afresh without --resume"
        )
    obstacle = resume_obstacle(state, config["epochs"], config["time_budget"])
    if obstacle:
        raise UsageError(f"cannot go on from checkpoint {path}: {obstacle}; start afresh without --resume")


def resume_training(trainer: Any, state: dict[str, Any], path: str, train_data: Any) -> None:
    """Put ``trainer`` (and the RNGs, and ``train_data``'s shuffling) back in
    ``state``, the last checkpoint read from ``path`` (on the CPU) and passed
    by :func:`check_resumable`; ``trainer.fit`` then goes on with the next
    epoch."""
    load_weights(trainer.model, state, path, optimizer=trainer.optimizer)
    trainer.saved_model_file = _best_model_file(state, path)
    trainer.start_epoch = state["epoch"] + 1
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    trainer.best_valid_result = state["best_valid_result"]
    per_rank = state.get("rng_per_rank")
    same_world = isinstance(per_rank, list) and len(per_rank) == distributed.world_size()
    set_rng_states(per_rank[distributed.rank()] if isinstance(per_rank, list) and same_world else state["rng"])
    generator = _loader_generator(train_data)
    if generator is not None and state["loader_rng"] is not None:
        generator.set_state(state["loader_rng"])
    trainer.logger.info(f"Resumed from {path}: epoch {state['epoch']} done, best so far {state['best_valid_score']}")
