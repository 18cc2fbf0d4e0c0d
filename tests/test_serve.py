"""Serving: train -> save -> load -> recommend / explain, and every bad input
ending in one clear error."""
from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

import recbole_attn
from recbole_attn.cli import main
from recbole_attn.serialization import plain_data
from recbole_attn.errors import UsageError
from recbole_attn.hooks import Capture
from recbole_attn.serve import explain, load, recommend

TRAIN = {"epochs": 1, "state": "WARNING", "show_progress": False}


class PickledConfig:
    """Stands for RecBole's ``Config`` object inside an unsafe checkpoint."""


def _train(model: str, data_root: Path, folder: Path) -> dict:
    """One epoch of ``model`` on the ml-100k cut; returns the run's result
    with the in-memory ``model`` and the RecBole test loader it used."""
    captured = Capture()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # RecBole writes log_tensorboard/ into cwd
        patch.setattr(sys, "argv", [sys.argv[0]])
        settings = {**TRAIN, "data_path": str(data_root), "checkpoint_dir": str(folder / "saved")}
        result = recbole_attn.run(model, "ml-100k", config_dict=settings, write_results=False, hooks=[captured])
    return {**result, "model": captured.trainer.model, "test_data": captured.eval_data}


@pytest.fixture(scope="module")
def attnseq(ml100k_root, tmp_path_factory):
    return _train("AttnSeq", ml100k_root, tmp_path_factory.mktemp("attnseq"))


@pytest.fixture(scope="module")
def attnrnn(ml100k_root, tmp_path_factory):
    return _train("AttnRNN", ml100k_root, tmp_path_factory.mktemp("attnrnn"))


@pytest.fixture(scope="module")
def loaded(attnseq):
    return load(attnseq["checkpoint"], device="cpu")


def _raw_histories(root: Path) -> dict[str, list[tuple[float, str]]]:
    """user token -> [(timestamp, item token)] straight from the .inter file."""
    found: dict[str, list[tuple[float, str]]] = {}
    with open(root / "ml-100k" / "ml-100k.inter") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            found.setdefault(row["user_id:token"], []).append((float(row["timestamp:float"]), row["item_id:token"]))
    return found


def test_load_rebuilds_the_training_config_vocab_and_histories(attnseq, loaded, ml100k_root):
    stored = torch.load(attnseq["checkpoint"], weights_only=True)["config"]
    assert plain_data(loaded.config.final_config_dict) == stored
    assert not loaded.model.training and loaded.device == torch.device("cpu")
    assert loaded.item_tokens[0] == "[PAD]" and loaded.item_ids(["50", "nope"])[1] is None
    raw = _raw_histories(ml100k_root)
    assert sorted(loaded.user_tokens[1:]) == sorted(raw)
    for user, events in raw.items():  # whole history: train + valid + test items
        assert sorted(loaded.history(user)) == sorted(item for _, item in events)
    # in RecBole's order (its float32-normalised timestamps tie within seconds; ties keep file order)
    test_data = attnseq["test_data"]
    tokens = test_data.dataset.field2id_token
    for interaction, *_ in test_data:
        columns = (interaction[f] for f in ("user_id", "item_id_list", "item_length", "item_id"))
        for user, seq, n, target in zip(*columns):
            expected = tokens["item_id"][[*seq[:n].tolist(), int(target)]].tolist()
            assert loaded.history(tokens["user_id"][int(user)])[-(int(n) + 1):] == expected


def _reference_topk(trained: dict, k: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Top-k of the in-memory model, with each user's whole history rebuilt
    from RecBole's test rows: the input window plus the test item."""
    model, test_data = trained["model"], trained["test_data"]
    dataset, users, items, scores = test_data.dataset, [], [], []
    with torch.no_grad():
        for interaction, *_ in test_data:
            seq, length, target = interaction["item_id_list"], interaction["item_length"], interaction["item_id"]
            width = seq.shape[1]
            windows = [torch.cat([row[:n], row.new_tensor([t])])[-width:] for row, n, t in zip(seq, length, target)]
            inputs = Interaction({
                "item_id_list": torch.stack([F.pad(w, (0, width - len(w))) for w in windows]),
                "item_length": torch.tensor([len(w) for w in windows]),
            })
            predicted = model.full_sort_predict(inputs)
            predicted[:, 0] = -torch.inf
            top = torch.topk(predicted, k)
            users += dataset.field2id_token["user_id"][interaction["user_id"].numpy()].tolist()
            items.append(dataset.field2id_token["item_id"][top.indices.numpy()])
            scores.append(top.values.numpy())
    return users, np.concatenate(items), np.concatenate(scores)


def test_round_trip_gives_the_in_memory_models_top_k(attnseq, loaded):
    users, items, scores = _reference_topk(attnseq, k=10)
    recs = recommend(loaded, users=users, k=10, exclude_seen=False, batch_size=16)  # several chunks
    assert recs.keys == users
    assert (recs.items == items).all()
    np.testing.assert_allclose(recs.scores, scores, rtol=1e-4, atol=1e-5)


def test_a_new_users_history_is_served_like_a_known_users(loaded):
    user = "7"
    by_user = recommend(loaded, users=[user], k=10)
    by_history = recommend(loaded, histories=[loaded.history(user), ["50", "172", "133"]], k=10)
    assert by_history.keys == [0, 1]
    assert (by_history.items[0] == by_user.items[0]).all()
    np.testing.assert_allclose(by_history.scores[0], by_user.scores[0], rtol=1e-4, atol=1e-5)
    assert not {"50", "172", "133"} & set(by_history.items[1])


def test_exclude_seen_removes_every_seen_item_and_never_padding(loaded):
    users = loaded.user_tokens[1:].tolist()
    k = 200
    kept = recommend(loaded, users=users, k=k)
    assert kept.items.shape == (len(users), k) and np.isfinite(kept.scores).all()
    assert (np.diff(kept.scores, axis=1) <= 0).all()
    for row, user in enumerate(users):
        assert not set(kept.items[row]) & set(loaded.history(user))
    assert "[PAD]" not in set(kept.items.ravel())
    unfiltered = recommend(loaded, users=users, k=k, exclude_seen=False)
    assert any(set(unfiltered.items[row]) & set(loaded.history(user)) for row, user in enumerate(users))


def test_item_chunks_give_the_whole_catalogs_top_k(loaded):
    """recommend ranks in item chunks (the evaluator's top-k); any chunk size,
    the one-chunk answer, seen items excluded across chunk borders too."""
    users = loaded.user_tokens[1:].tolist()
    whole = recommend(loaded, users=users, k=50, item_chunk_size=0)
    chunked = recommend(loaded, users=users, k=50, item_chunk_size=13)
    assert (chunked.items == whole.items).all()
    # a 13-wide product may take another BLAS kernel than the whole table's: last-bit differences
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=0, atol=1e-5)
    with pytest.raises(UsageError, match="item_chunk_size must be .* got -1"):
        recommend(loaded, users=users, item_chunk_size=-1)


def test_unknown_tokens_are_named_or_skipped(loaded):
    with pytest.raises(UsageError, match=r"unknown users.*'no-such-user'"):
        recommend(loaded, users=["1", "no-such-user"])
    with pytest.raises(UsageError, match=r"unknown items.*'999999'"):
        recommend(loaded, histories=[["50", "999999"]])
    with pytest.warns(UserWarning, match="no-such-user"):
        recs = recommend(loaded, users=["1", "no-such-user", "2"], on_unknown="warn")
    assert recs.keys == ["1", "2"] and recs.items.shape == (2, 10)
    with pytest.warns(UserWarning) as caught:
        recs = recommend(loaded, histories=[["999999"], ["50", "999999"]], on_unknown="warn")
    assert [str(w.message).split(":")[0] for w in caught] == [
        "unknown items in dataset ml-100k", "empty histories (no item known in dataset ml-100k)"
    ]
    assert recs.keys == [1]
    with pytest.raises(UsageError, match="on_unknown"):
        recommend(loaded, users=["1"], on_unknown="ignore")


@pytest.mark.parametrize(
    "query, message",
    [
        ({"histories": [[]]}, r"empty.*#0"),
        ({}, "either users"),
        ({"users": ["1"], "histories": [["50"]]}, "either users"),
        ({"histories": ["50", "172"]}, "list of histories"),
        ({"histories": [["50"], "172"]}, "list of histories"),  # "172" is not the history ["1", "7", "2"]
        ({"histories": [["50"], 5]}, "list of histories"),
        ({"users": ["1"], "k": 0}, "k must be"),
        ({"users": ["1"], "k": 10**6}, "more than the"),
    ],
)
def test_bad_queries_raise_clear_errors(loaded, query, message):
    with pytest.raises(UsageError, match=message):
        recommend(loaded, **query)


def test_bad_checkpoint_files_raise_usage_errors_naming_them(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(UsageError, match=r"missing\.pth.*does not exist"):
        load(missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UsageError, match=r"corrupt\.pth.*corrupt or truncated") as caught:
        load(corrupt)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(UsageError, match=r"other\.pth.*missing config, state_dict"):
        load(other)
    pickled = tmp_path / "pickled.pth"  # what RecBole's own trainer writes: its Config object, pickled
    torch.save({"config": PickledConfig(), "state_dict": {}}, pickled)
    with pytest.raises(UsageError, match=r"pickled\.pth.*pickled Python objects"):
        load(pickled)
    with pytest.raises(UsageError, match="is not a file"):
        load(tmp_path)


def test_moved_data_is_reported_and_data_path_overrides(attnseq, ml100k_root, tmp_path):
    checkpoint = torch.load(attnseq["checkpoint"], weights_only=True)
    checkpoint["config"]["data_path"] = str(tmp_path / "gone" / "ml-100k")
    moved = tmp_path / "moved.pth"
    torch.save(checkpoint, moved)
    with pytest.raises(UsageError, match=r"does not exist here.*data_path"):
        load(moved)
    assert load(moved, data_path=str(ml100k_root)).history("1")


@pytest.fixture(params=["AttnSeq", "AttnRNN"])
def explained(request, attnseq, attnrnn, loaded):
    served = loaded if request.param == "AttnSeq" else load(attnrnn["checkpoint"], device="cpu")
    return served, explain(served, user="3"), explain(served, history=["50", "172", "133"])


def test_explain_weights_sum_to_one_over_the_history_and_zero_on_padding(explained):
    served, of_user, of_history = explained
    assert of_user.items == served.history("3")[-served.max_length :]
    assert of_history.items == ["50", "172", "133"]
    assert of_history.titles[0].startswith("Star Wars")  # read from the .item file
    for explanation in (of_user, of_history):
        n = len(explanation.items)
        assert explanation.weights.shape == (len(explanation.panels), n)
        np.testing.assert_allclose(explanation.weights.sum(axis=1), 1.0, atol=1e-5)
        assert (explanation.weights >= 0).all()
        assert explanation.padding_weights.shape == (len(explanation.panels), served.max_length - n)
        assert (explanation.padding_weights == 0).all()
    panels = 4 if served.config["model"] == "AttnSeq" else 1
    assert of_history.grid == ((2, 2) if panels == 4 else (1, 1)) and of_history.matrices.shape == (panels, 3, 3)
    np.testing.assert_allclose(of_history.matrices[:, -1], of_history.weights)
    assert (np.triu(of_history.matrices, k=1) == 0).all()  # causal
    if panels == 1:
        assert of_history.panels == ["pooling"]


def test_explain_heatmap_png_is_written(explained, tmp_path):
    pytest.importorskip("matplotlib")
    from recbole_attn.serve.plot import plot_explanation

    for name, explanation in zip(("user", "history"), explained[1:]):
        path = plot_explanation(explanation, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_heatmap_without_matplotlib_is_a_clear_error(monkeypatch):
    from recbole_attn.serve.plot import require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match=r"matplotlib.*recbole-attn\[plot\]"):
        require_matplotlib()


def test_explain_needs_attention_weights(loaded, monkeypatch):
    monkeypatch.delattr(type(loaded.model), "attention_panels")  # the base class has none
    with pytest.raises(UsageError, match="no attention weights"):
        explain(loaded, user="1")


def test_cli_recommend_prints_a_table(attnseq, capsys):
    checkpoint = attnseq["checkpoint"]
    assert main(["recommend", "--checkpoint", checkpoint, "--user", "1", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "user 1" in out and "rank" in out and "title" in out and len(out.strip().splitlines()) == 7
    assert main(["recommend", "--checkpoint", checkpoint, "--history", "50,172,133"]) == 0
    assert "Star Wars" not in capsys.readouterr().out  # seen items are excluded


def test_cli_explain_prints_weights_and_draws(attnseq, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "attn.png"
    args = ["explain", "--checkpoint", attnseq["checkpoint"], "--user", "1", "--png", str(png)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "L2H2" in out and f"heatmap: {png}" in out and png.stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["recommend", "--checkpoint", "nope.pth", "--user", "1"], "nope.pth"),
        (["recommend", "--checkpoint", "{ckpt}", "--user", "no-such-user"], "no-such-user"),
        (["explain", "--checkpoint", "{ckpt}", "--history", ""], "empty"),
        (["recommend", "--checkpoint", "{ckpt}", "--user", ","], "--user names no user token, got ','"),
        (["explain", "--checkpoint", "{ckpt}", "--user", "1", "--png", "{tmp}/new/x.xyz"], "unknown format 'xyz'"),
        (["explain", "--checkpoint", "{ckpt}", "--user", "1", "--png", "{tmp}/a_file/x.png"], "a_file is a file"),
        (["export", "--checkpoint", "{ckpt}", "--out", "{tmp}/a_file/out"], "a_file is a file"),
    ],
)
def test_cli_bad_input_exits_2(attnseq, capsys, args, message, tmp_path):
    if "--png" in args:
        pytest.importorskip("matplotlib")
    if args[0] == "export":
        pytest.importorskip("onnx")
    (tmp_path / "a_file").write_text("x")
    code = main([arg.format(ckpt=attnseq["checkpoint"], tmp=tmp_path) for arg in args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]  # nothing half-written


def test_cli_option_errors_are_one_line(attnseq, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["recommend", "--checkpoint", attnseq["checkpoint"], "-k", "abc"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: argument -k: invalid int value: 'abc'")
    assert err.count("\n") == 1


@pytest.fixture(scope="module")
def with_user(ml100k_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("user-token")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = {**TRAIN, "data_path": str(ml100k_root), "checkpoint_dir": str(folder / "saved"),
                    "user_features": ["age", "gender", "occupation"], "readout": "attention"}
        result = recbole_attn.run("AttnSeq", "ml-100k", config_dict=settings, write_results=False)
    return load(result["checkpoint"], device="cpu")


def test_a_new_user_with_features_is_served_like_the_known_user(with_user):
    known = recommend(with_user, users=["1"], k=10)
    history = with_user.history("1")
    features = {"age": "24", "gender": "M", "occupation": "technician"}  # user 1 in ml-100k.user
    as_new = recommend(with_user, histories=[history, history], user_features=[features, None], k=10)
    np.testing.assert_allclose(as_new.scores[0], known.scores[0], rtol=1e-5)
    assert list(as_new.items[0]) == list(known.items[0])
    without = recommend(with_user, histories=[history], k=10)  # no features: the unknown-user vector
    np.testing.assert_allclose(as_new.scores[1], without.scores[0], rtol=1e-5)
    assert not np.allclose(as_new.scores[0], as_new.scores[1])


@pytest.mark.parametrize("user_features, message", [
    ([{"salary": "1"}], "unknown user feature 'salary'; the model takes: age, gender, occupation"),
    ([{"occupation": "astronaut"}], "unknown user feature values in dataset ml-100k: 'occupation=astronaut'"),
    ({"age": "24"}, "one dict \\(or None\\) per history"),
])
def test_bad_user_features_are_named(with_user, user_features, message):
    with pytest.raises(UsageError, match=message):
        recommend(with_user, histories=[["50"]], user_features=user_features)


def test_explain_shows_the_user_token_and_the_readout(with_user, tmp_path):
    explained = explain(with_user, user="3")
    assert explained.items[0] == "(user)" and explained.panels[-1] == "readout"
    assert explained.grid == (3, 2) and explained.positions[-1] == (2, 0)
    np.testing.assert_allclose(explained.weights.sum(axis=1), 1.0, atol=1e-5)
    assert (explained.weights[:-1, 0] > 0).all()  # every head attends to the user
    assert explained.weights[-1, 0] == 0  # the readout pools item outputs only
    # a new user with user 3's features and history is explained as user 3 is
    features = {"age": "23", "gender": "M", "occupation": "writer"}  # user 3 in ml-100k.user
    as_new = explain(with_user, history=with_user.history("3"), user_features=features)
    np.testing.assert_allclose(as_new.weights, explained.weights, rtol=1e-5, atol=1e-7)
    nobody = explain(with_user, history=with_user.history("3"))
    assert not np.allclose(nobody.weights, explained.weights)
    with pytest.raises(UsageError, match="user_features go with a history"):
        explain(with_user, user="3", user_features=features)
    with pytest.raises(UsageError, match="user_features is not supported"):
        from recbole_attn.serve.export import export_model

        pytest.importorskip("onnx")
        export_model(with_user, tmp_path / "export")
    pytest.importorskip("matplotlib")
    from recbole_attn.serve.plot import plot_explanation

    assert plot_explanation(explained, tmp_path / "user.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_serves_a_new_user_with_features(with_user, capsys):
    checkpoint = str(with_user.checkpoint)
    base = ["recommend", "--checkpoint", checkpoint, "--history", "50,172", "-k", "3"]
    assert main([*base, "--user_features", "age=24,gender=M,occupation=technician"]) == 0
    with_features = capsys.readouterr().out
    assert main(base) == 0
    assert capsys.readouterr().out != with_features  # the features change the ranking's scores
    assert main([*base, "--user_features", "age"]) == 2
    assert "--user_features must be FIELD=TOKEN pairs" in capsys.readouterr().err
    assert main([*base, "--user_features", "age=24,age=30"]) == 2
    assert "--user_features names 'age' more than once" in capsys.readouterr().err
    assert main(["recommend", "--checkpoint", checkpoint, "--user", "1", "--user_features", "age=24"]) == 2
    assert "goes with --history" in capsys.readouterr().err
    explain_new = ["explain", "--checkpoint", checkpoint, "--history", "50,172"]
    assert main([*explain_new, "--user_features", "age=24,gender=M,occupation=technician"]) == 0
    explained = capsys.readouterr().out
    assert main(explain_new) == 0 and capsys.readouterr().out != explained  # the user token's weights differ
    assert main(["explain", "--checkpoint", checkpoint, "--user", "1", "--user_features", "age=24"]) == 2
    assert "goes with --history" in capsys.readouterr().err


@pytest.fixture(scope="module")
def with_seq_feature(ml100k_root, tmp_path_factory):
    """A model whose user feature is a token_seq field: ml-100k's gender and
    occupation as one multi-token ``traits`` column."""
    folder = tmp_path_factory.mktemp("seq-feature")
    shutil.copytree(ml100k_root / "ml-100k", folder / "ml-100k")
    lines = (folder / "ml-100k" / "ml-100k.user").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    user_file = ["user_id:token\tage:token\ttraits:token_seq", *(f"{r[0]}\t{r[1]}\t{r[2]} {r[3]}" for r in rows)]
    (folder / "ml-100k" / "ml-100k.user").write_text("\n".join(user_file) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = {**TRAIN, "data_path": str(folder), "checkpoint_dir": str(folder / "saved"),
                    "user_features": ["age", "traits"]}
        result = recbole_attn.run("AttnSeq", "ml-100k", config_dict=settings, write_results=False)
    return load(result["checkpoint"], device="cpu")


def test_a_token_seq_user_feature_is_served_like_the_known_user(with_seq_feature):
    """Every token of a token_seq feature counts, as a list or as one string
    cut at the dataset's seq_separator; order does not matter (a mean)."""
    loaded = with_seq_feature
    known = recommend(loaded, users=["1"], k=10)
    history = loaded.history("1")
    given = [{"age": "24", "traits": "M technician"}, {"age": "24", "traits": ["technician", "M"]},
             {"age": "24", "traits": "M"}, {"age": "24"}]
    as_new = recommend(loaded, histories=[history] * 4, user_features=given, k=10)
    np.testing.assert_allclose(as_new.scores[0], known.scores[0], rtol=1e-5)
    np.testing.assert_allclose(as_new.scores[1], known.scores[0], rtol=1e-5)
    assert not np.allclose(as_new.scores[2], known.scores[0])  # one trait of two is another user
    assert not np.allclose(as_new.scores[3], as_new.scores[2])
    with pytest.raises(UsageError, match="unknown user feature values in dataset ml-100k: 'traits=astronaut'"):
        recommend(loaded, histories=[history], user_features=[{"traits": "M astronaut"}])
    with pytest.raises(UsageError, match="'age' is a token field: one value, got \\['24', '25'\\]"):
        recommend(loaded, histories=[history], user_features=[{"age": ["24", "25"]}])
