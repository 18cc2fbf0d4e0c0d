"""Serve what was trained: load a checkpoint, recommend, explain.

* :func:`load` rebuilds a checkpoint's dataset from the plain config stored in
  it (same id remapping, same per-user histories as in training), builds the
  model, loads its weights and puts it in eval mode.
* :func:`recommend` gives the top-k raw item tokens and scores for known users
  (their whole history: train + valid + test items, the most recent
  ``MAX_ITEM_LIST_LENGTH`` as input) or for ad-hoc histories of raw item
  tokens (new users); batched: one padded ``(B, L)`` tensor per batch of
  users, ranked in item chunks by :func:`recbole_attn.evaluation.chunked_topk`
  (the same top-k as evaluation; no ``(B, n_items)`` matrix for our models).
* :func:`explain` gives the attention weights over a history: per layer and
  head for AttnSeq (the last position's row), the pooling weights for AttnRNN.

``python run.py recommend ...`` and ``python run.py explain ...`` come through
:func:`main` (see ``docs/serving.md``).
"""
from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction

from recbole_attn.checkpoint import load_checkpoint, load_weights
from recbole_attn.config import AttnConfig
from recbole_attn.data import seen_items, training_sequences
from recbole_attn.errors import UsageError, check_choice, check_positive
from recbole_attn.evaluation import chunked_topk, item_scorer, resolve_chunk_size

#: Stored config keys that RecBole's ``Config`` derives itself (enums, devices,
#: distributed state, paths it joins): passing them back would override the
#: derived values with their plain-data names.
DERIVED_KEYS = frozenset({
    "model", "dataset", "data_path", "device", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type",
    "single_spec", "local_rank", "valid_neg_sample_args", "test_neg_sample_args", "valid_metric_bigger",
})
ON_UNKNOWN = ("error", "warn")


def config_overrides(stored: dict[str, Any], data_path: str | None = None) -> dict[str, Any]:
    """The user-level keys of a stored plain config, ready for ``AttnConfig``."""
    overrides = {key: value for key, value in stored.items() if key not in DERIVED_KEYS}
    # RecBole joins data_path and the dataset name; the stored one is joined already
    folder = data_path or os.path.dirname(os.path.normpath(stored["data_path"]))
    overrides["data_path"] = str(folder)
    negatives = overrides.get("train_neg_sample_args")
    if isinstance(negatives, dict) and negatives.get("distribution") in (None, "none"):
        overrides["train_neg_sample_args"] = None  # RecBole's normalised "no negatives"
    return overrides


@dataclass
class LoadedModel:
    """A checkpoint's model in eval mode, with its dataset's vocabulary and
    each user's history (internal item ids, time order, CSR over user ids)."""

    model: torch.nn.Module
    config: AttnConfig
    dataset: Any
    loaders: tuple[Any, Any, Any]
    checkpoint: Path
    history_indptr: torch.Tensor
    history_items: torch.Tensor
    _titles: dict[str, str] | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.config["device"]

    @property
    def max_length(self) -> int:
        return int(self.config["MAX_ITEM_LIST_LENGTH"])

    @property
    def n_items(self) -> int:
        return int(self.dataset.item_num)

    @property
    def item_tokens(self) -> np.ndarray:
        """Raw item token of each internal id (id 0 is ``[PAD]``)."""
        return self.dataset.field2id_token[self.dataset.iid_field]

    @property
    def user_tokens(self) -> np.ndarray:
        return self.dataset.field2id_token[self.dataset.uid_field]

    def _ids(self, field_name: str, tokens: Iterable[Any]) -> list[int | None]:
        """Internal id of each raw token; ``None`` if unknown (or ``[PAD]``)."""
        vocab = self.dataset.field2token_id[field_name]
        return [vocab.get(str(token)) if str(token) != "[PAD]" else None for token in tokens]

    def item_ids(self, tokens: Iterable[Any]) -> list[int | None]:
        return self._ids(self.dataset.iid_field, tokens)

    def user_ids(self, tokens: Iterable[Any]) -> list[int | None]:
        return self._ids(self.dataset.uid_field, tokens)

    def history(self, user: Any) -> list[str]:
        """Raw item tokens of a known user's whole history, oldest first."""
        [uid] = self.user_ids([user])
        if uid is None:
            raise UsageError(f"unknown user {str(user)!r} in dataset {self.config['dataset']}")
        start, end = self.history_indptr[uid], self.history_indptr[uid + 1]
        return self.item_tokens[self.history_items[start:end].numpy()].tolist()

    def titles(self) -> dict[str, str]:
        """Item token -> title, read from the dataset's ``.item`` file (any
        field whose name holds ``title``); empty when there is none."""
        if self._titles is None:
            self._titles = read_titles(self.config)
        return self._titles


def read_titles(config: Any) -> dict[str, str]:
    """Titles straight from ``<data_path>/<dataset>.item``: the project's
    dataset YAMLs may leave the title field out of ``load_col``."""
    path = Path(config["data_path"]) / f"{config['dataset']}.item"
    if not path.is_file():
        return {}
    separator = config["field_separator"] or "\t"
    with open(path, encoding="utf-8", errors="replace") as handle:
        names = [column.split(":")[0] for column in handle.readline().rstrip("\n").split(separator)]
        id_field = config["ITEM_ID_FIELD"]
        title_field = next((name for name in names if "title" in name.lower()), None)
        if title_field is None or id_field not in names:
            return {}
        id_col, title_col = names.index(id_field), names.index(title_field)
        titles = {}
        for line in handle:
            cells = line.rstrip("\n").split(separator)
            if len(cells) > max(id_col, title_col):
                titles[cells[id_col]] = cells[title_col]
    return titles


def load(
    checkpoint: str | os.PathLike, device: str | torch.device | None = None, data_path: str | None = None
) -> LoadedModel:
    """The model saved in ``checkpoint``, ready to serve.

    The dataset is rebuilt from the config stored in the checkpoint, so ids
    and histories are those of training. ``device``: ``cpu``, ``cuda`` or
    ``cuda:N`` (default: CUDA when available). ``data_path``: the folder that
    holds ``<dataset>/``, when the data moved since training.
    """
    from recbole_attn.registry import get_model_class

    path = Path(checkpoint)
    stored = load_checkpoint(path)
    settings = stored["config"]
    overrides = config_overrides(settings, data_path)
    if device is not None:
        overrides["device"] = str(device)
    for key in ("model", "dataset"):
        if not isinstance(settings.get(key), str):
            raise UsageError(f"checkpoint {str(path)!r} names no {key} in its config")
    config = AttnConfig(get_model_class(settings["model"]), settings["dataset"], config_dict=overrides,
                        typed_config_dict=True)
    inter_file = Path(config["data_path"]) / f"{config['dataset']}.inter"
    if not inter_file.is_file():
        raise UsageError(
            f"checkpoint {str(path)!r} was trained on {inter_file}, which does not exist here; "
            f"pass data_path=DIR (--data_path DIR) where DIR/{config['dataset']}/ holds the atomic files"
        )

    dataset = create_dataset(config)
    loaders = data_preparation(config, dataset)
    model = config.model_class(config, loaders[0].dataset)
    load_weights(model, stored, path)
    model.to(config["device"]).eval()
    # ``dataset`` now holds every prefix row (train, valid and test): rebuilt
    # into each user's whole history in RecBole's own order
    users, items, offsets = training_sequences(dataset)
    indptr, indices = seen_items(users, items, offsets, dataset.user_num)
    return LoadedModel(model, config, dataset, tuple(loaders), path, indptr, indices)


def tail_windows(
    indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``width`` items of each CSR row in ``rows``, right-padded with
    0 as RecBole pads: ``(B, width)`` ids and ``(B,)`` lengths."""
    start, end = indptr[rows], indptr[rows + 1]
    lengths = torch.clamp(end - start, max=width)
    position = torch.arange(width)[None, :]
    valid = position < lengths[:, None]
    index = torch.where(valid, (end - lengths)[:, None] + position, 0)
    return torch.where(valid, indices[index], 0), lengths


def _reject(problem: str, names: Sequence[str], on_unknown: str) -> None:
    """Raise (``on_unknown="error"``) or warn that ``names`` are skipped."""
    if not names:
        return
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    message = f"{problem}: {', '.join(repr(name) for name in names[:10])}{more}"
    if on_unknown == "error":
        raise UsageError(message)
    warnings.warn(f"{message} (skipped)", stacklevel=4)


@dataclass(frozen=True)
class Queries:
    """Resolved queries as CSR histories: row ``i`` answers ``keys[i]``."""

    keys: list[Any]
    indptr: torch.Tensor
    indices: torch.Tensor
    rows: torch.Tensor
    user_ids: torch.Tensor  # 0 (padding user) for ad-hoc histories


def resolve_queries(
    loaded: LoadedModel, users: Sequence[Any] | None, histories: Sequence[Sequence[Any]] | None, on_unknown: str
) -> Queries:
    """Map user tokens, or histories of item tokens, to internal ids;
    unknown tokens and empty histories raise or are skipped (``on_unknown``)."""
    check_choice("on_unknown", on_unknown, ON_UNKNOWN)
    if (users is None) == (histories is None):
        raise UsageError("give either users (known user tokens) or histories (lists of item tokens), not both")
    name = loaded.config["dataset"]
    if users is not None:
        users = [users] if isinstance(users, (str, int)) else list(users)
        ids = loaded.user_ids(users)
        _reject(f"unknown users in dataset {name}", [str(u) for u, i in zip(users, ids) if i is None], on_unknown)
        keys = [str(u) for u, i in zip(users, ids) if i is not None]
        user_ids = torch.tensor([i for i in ids if i is not None], dtype=torch.long)
        has_history = (loaded.history_indptr[user_ids + 1] > loaded.history_indptr[user_ids]).tolist()
        without = [u for u, ok in zip(keys, has_history) if not ok]
        _reject(f"users without history in dataset {name}", without, on_unknown)
        if not all(has_history):
            keys, user_ids = [u for u, ok in zip(keys, has_history) if ok], user_ids[torch.tensor(has_history)]
        return Queries(keys, loaded.history_indptr, loaded.history_items, user_ids, user_ids)

    if isinstance(histories, (str, bytes)) or (histories and isinstance(histories[0], (str, int))):
        raise UsageError("histories must be a list of histories, each a list of item tokens (e.g. [['50', '172']])")
    keys, sequences, unknown, empty = [], [], [], []
    for position, history in enumerate(histories):
        history = list(history)
        ids = loaded.item_ids(history)
        unknown += [str(token) for token, i in zip(history, ids) if i is None]
        known = [i for i in ids if i is not None]
        if not known:
            empty.append(f"#{position}")
            continue
        keys.append(position)
        sequences.append(known)
    _reject(f"unknown items in dataset {name}", list(dict.fromkeys(unknown)), on_unknown)
    _reject(f"empty histories (no item known in dataset {name})", empty, on_unknown)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    indices = torch.tensor([i for s in sequences for i in s], dtype=torch.long)
    rows = torch.arange(len(sequences))
    return Queries(keys, indptr, indices, rows, torch.zeros(len(sequences), dtype=torch.long))


@dataclass(frozen=True)
class Recommendations:
    """Top-k per query, best first. ``keys[i]``: the user token, or the index
    of the history in the ``histories`` given; ``items`` (n, k) raw item
    tokens (``None`` where fewer than k items were left to rank);
    ``scores`` (n, k) the model's scores."""

    keys: list[Any]
    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, index: int) -> list[tuple[int, str, float]]:
        """``(rank, item token, score)`` for query ``index``."""
        return [
            (rank, item, float(score))
            for rank, (item, score) in enumerate(zip(self.items[index], self.scores[index]), start=1)
            if item is not None
        ]


def model_input(loaded: LoadedModel, item_seq: torch.Tensor, lengths: torch.Tensor, users: torch.Tensor) -> Interaction:
    """The batch RecBole models read: history window, its length, the user id."""
    model = loaded.model
    fields = {model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths, loaded.dataset.uid_field: users}
    return Interaction(fields).to(loaded.device)


def recommend(
    loaded: LoadedModel,
    users: Sequence[Any] | None = None,
    histories: Sequence[Sequence[Any]] | None = None,
    k: int = 10,
    exclude_seen: bool = True,
    on_unknown: str = "error",
    batch_size: int = 1024,
    item_chunk_size: int | None = None,
) -> Recommendations:
    """Top-``k`` items for known ``users`` (raw tokens) or for ``histories``
    (lists of raw item tokens, oldest first), never the padding item.

    ``exclude_seen`` leaves out every item of the history (the whole
    history, not only the model's input window). ``on_unknown``: ``"error"``
    raises :class:`UsageError` naming unknown tokens; ``"warn"`` warns and
    skips them (an unknown user, an unknown item of a history).
    ``item_chunk_size``: items scored at a time (``None``: auto, at most
    256 MiB of scores per chunk; ``0``: the whole catalog at once).
    """
    check_positive("k", k)
    check_positive("batch_size", batch_size)
    chunk = resolve_chunk_size(item_chunk_size, batch_size, "item_chunk_size") or loaded.n_items
    if k > loaded.n_items - 1:
        raise UsageError(f"k={k} is more than the {loaded.n_items - 1} items of dataset {loaded.config['dataset']}")
    queries = resolve_queries(loaded, users, histories, on_unknown)
    all_items, all_scores = [], []
    with torch.inference_mode():
        for start in range(0, len(queries.rows), batch_size):
            rows = queries.rows[start : start + batch_size]
            item_seq, lengths = tail_windows(queries.indptr, queries.indices, rows, loaded.max_length)
            interaction = model_input(loaded, item_seq, lengths, queries.user_ids[start : start + batch_size])
            exclude = None
            if exclude_seen:  # every item of the whole history (padding 0 is ranked last anyway)
                longest = int((queries.indptr[rows + 1] - queries.indptr[rows]).max())
                seen, _ = tail_windows(queries.indptr, queries.indices, rows, longest)
                exclude = (torch.arange(len(rows)).repeat_interleave(longest), seen.flatten())
            scorer = item_scorer(loaded.model, interaction, loaded.n_items)
            top = chunked_topk(scorer, loaded.n_items, k, chunk, exclude)
            all_items.append(top.items.cpu())
            all_scores.append(top.scores.cpu())
    ids = torch.cat(all_items).numpy() if all_items else np.zeros((0, k), dtype=np.int64)
    scores = torch.cat(all_scores).numpy() if all_scores else np.zeros((0, k), dtype=np.float32)
    items = loaded.item_tokens[ids].astype(object)
    items[~np.isfinite(scores)] = None
    return Recommendations(queries.keys, items, scores)


@dataclass(frozen=True)
class Explanation:
    """Attention over one history window (the model's input, oldest first).

    ``weights`` (panels, n): the weight of each history item in the next-item
    prediction, the last position's row of each panel (``"layer 1, head 2"``
    for AttnSeq, ``"pooling"`` for AttnRNN). ``matrices`` (panels, n, n):
    the whole causal attention, query position by attended position.
    ``padding_weights`` (panels, L - n): weight left on the padding slots of
    the model's window (zero). ``grid``: (layers, heads) of the panels.
    """

    model: str
    items: list[str]
    titles: list[str | None]
    panels: list[str]
    weights: np.ndarray
    matrices: np.ndarray
    padding_weights: np.ndarray
    grid: tuple[int, int]

    def label(self, position: int, width: int = 40) -> str:
        """``title [token]`` (or the token alone) of a history position."""
        title = self.titles[position]
        text = f"{title} [{self.items[position]}]" if title else str(self.items[position])
        return text if len(text) <= width else text[: width - 1] + "…"


def explain(
    loaded: LoadedModel, history: Sequence[Any] | None = None, user: Any = None, on_unknown: str = "error"
) -> Explanation:
    """The attention weights of ``loaded``'s model over a ``history`` of raw
    item tokens, or over a known ``user``'s most recent items."""
    model = loaded.model
    try:
        names = model.attention_panels()
    except (AttributeError, NotImplementedError):  # RecBole's models, plugins without attention
        raise UsageError(
            f"model {loaded.config['model']} exposes no attention weights; explain supports AttnSeq and AttnRNN"
        ) from None
    if (history is None) == (user is None):
        raise UsageError("give either a history (list of item tokens) or a user, not both")
    if user is not None:
        queries = resolve_queries(loaded, [user], None, on_unknown)
    else:
        queries = resolve_queries(loaded, None, [list(history or ())], on_unknown)
    if not queries.keys:
        raise UsageError("nothing to explain: every token was unknown and skipped")
    item_seq, lengths = tail_windows(queries.indptr, queries.indices, queries.rows, loaded.max_length)
    interaction = model_input(loaded, item_seq, lengths, queries.user_ids)
    with torch.inference_mode():
        weights = model.attention_weights(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
    matrices = weights[0].float().cpu()  # (panels, L, L)
    n = int(lengths[0])
    rows = matrices[:, n - 1, :]  # the last position's row makes the prediction
    tokens = loaded.item_tokens[item_seq[0, :n].numpy()].tolist()
    titles = loaded.titles()
    return Explanation(
        model=loaded.config["model"],
        items=tokens,
        titles=[titles.get(token) for token in tokens],
        panels=[name for row in names for name in row],
        weights=rows[:, :n].numpy(),
        matrices=matrices[:, :n, :n].numpy(),
        padding_weights=rows[:, n:].numpy(),
        grid=(len(names), len(names[0])),
    )


# -- printing and the command line ----------------------------------------------


def format_recommendations(loaded: LoadedModel, recs: Recommendations, index: int) -> str:
    titles = loaded.titles()
    header = f"{'rank':>4}  {'item':<8}  {'title':<44}  score" if titles else f"{'rank':>4}  {'item':<8}  score"
    lines = [header]
    for rank, item, score in recs.rows(index):
        title = f"  {titles.get(item, ''):<44.44}" if titles else ""
        lines.append(f"{rank:>4}  {item:<8}{title}  {score:.4f}")
    return "\n".join(lines)


def format_explanation(explanation: Explanation) -> str:
    """One row per history item (oldest first), one column per panel."""
    short = [panel.replace("layer ", "L").replace(", head ", "H") for panel in explanation.panels]
    lines = [f"{'pos':>3}  {'item':<44}  " + "  ".join(f"{name:>7}" for name in short)]
    for position in range(len(explanation.items)):
        cells = "  ".join(f"{value:7.4f}" for value in explanation.weights[:, position])
        lines.append(f"{position + 1:>3}  {explanation.label(position, 44):<44}  {cells}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="Serve a trained checkpoint.")
    commands = parser.add_subparsers(dest="command", required=True)
    recommend_cmd = commands.add_parser("recommend", help="top-k items for users or a history")
    explain_cmd = commands.add_parser("explain", help="attention weights over a history")
    for command in (recommend_cmd, explain_cmd):
        command.add_argument("--checkpoint", required=True, help="a .pth file written by training")
        who = command.add_mutually_exclusive_group(required=True)
        several = " (or several, comma-separated)" if command is recommend_cmd else ""
        who.add_argument("--user", help=f"a known user token{several}")
        who.add_argument("--history", help="item tokens, oldest first, comma-separated (a new user)")
        command.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
        command.add_argument("--data_path", default=None, help="folder holding <dataset>/, if the data moved")
    recommend_cmd.add_argument("-k", type=int, default=10, help="how many items (default: 10)")
    recommend_cmd.add_argument("--include_seen", action="store_true", help="also rank the history's own items")
    explain_cmd.add_argument("--png", default=None, help="draw a heatmap to this file (needs matplotlib)")
    return parser


def _split(text: str) -> list[str]:
    return [token.strip() for token in text.split(",") if token.strip()]


def main(argv: Sequence[str]) -> int:
    """``run.py recommend|explain ...``; :func:`recbole_attn.cli.main` turns a
    :class:`UsageError` into exit code 2 and any other failure into 1."""
    args = _parser().parse_args(list(argv))
    if args.command == "explain" and args.png:
        from recbole_attn.explain_plot import require_matplotlib

        require_matplotlib()  # before the slow part
    loaded = load(args.checkpoint, device=args.device, data_path=args.data_path)
    if args.command == "recommend":
        query = {"users": _split(args.user)} if args.user is not None else {"histories": [_split(args.history)]}
        recs = recommend(loaded, **query, k=args.k, exclude_seen=not args.include_seen)
        for index, key in enumerate(recs.keys):
            print(f"user {key}" if args.user is not None else f"history {args.history}")
            print(format_recommendations(loaded, recs, index))
        return 0
    query = {"user": args.user} if args.user is not None else {"history": _split(args.history)}
    explanation = explain(loaded, **query)
    print(format_explanation(explanation))
    if args.png:
        from recbole_attn.explain_plot import plot_explanation

        print(f"heatmap: {plot_explanation(explanation, args.png)}")
    return 0
