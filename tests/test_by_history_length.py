"""benchmarks/by_history_length.py: history lengths from an .inter file,
the groups, the per-group paired differences, and its refusal of bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recbole_attn.user_ranks import UserHits, save_user_hits
from tests.conftest import benchmark_script

#: user token -> interactions in the .inter file (history length = count - 1)
COUNTS = {"a": 3, "b": 4, "c": 5, "d": 8, "e": 9, "f": 12}


def write_inter(folder, counts=COUNTS):
    """``folder/toy/toy.inter``; returns ``folder``, the --data_path."""
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{user}\t{item}\t{item}" for user, count in counts.items() for item in range(count)]
    (folder / "toy").mkdir()
    (folder / "toy" / "toy.inter").write_text("\n".join(lines) + "\n")
    return folder


def write_record(folder, label, ranks_by_seed):
    """A record whose ``label`` runs rank each user's target at the given 1-based rank (0: missed)."""
    rows = []
    for seed, ranks in ranks_by_seed.items():
        table = np.zeros((len(ranks), 10), dtype=np.uint8)
        for row, rank in enumerate(ranks):
            if rank:
                table[row, rank - 1] = 1
        tokens = np.array(list(COUNTS))
        save_user_hits(folder / f"{label}{seed}.npz",
                       UserHits(np.arange(1, len(ranks) + 1), table, np.ones(len(ranks), dtype=np.int64), tokens))
        rows.append({"label": label, "seed": seed, "ranks_file": f"{label}{seed}.npz"})
    path = folder / f"{label}.json"
    path.write_text(json.dumps({"dataset": "toy", "rows": rows}))
    return f"{path}:{label}"


def test_lengths_leave_out_the_test_item_and_groups_are_named_by_their_bounds(tmp_path):
    script = benchmark_script("by_history_length.py")
    lengths = script.history_lengths(write_inter(tmp_path) / "toy" / "toy.inter", "user_id")
    assert lengths.to_dict() == {user: count - 1 for user, count in COUNTS.items()}
    assert script.group_names([4, 6, 9]) == ["≤ 4", "5–6", "7–9", "≥ 10"]
    assert script.group_names([4, 5]) == ["≤ 4", "5", "≥ 6"]
    assert script.default_edges(np.array([1, 1, 2, 2, 3, 3, 4, 4, 5, 5]), groups=5) == [1, 2, 3, 4]
    assert script.default_edges(np.array([4] * 9 + [9]), groups=5) == [4]  # ties: fewer groups


def test_each_group_gets_its_users_paired_differences_over_shared_seeds(tmp_path):
    """Reference hits everyone at rank 1; the model misses the short
    histories (lengths 2 and 3) and hits the rest at rank 2 on seed 1, rank 1
    on seed 2; its seed 3 has no reference run and is left out."""
    script = benchmark_script("by_history_length.py")
    inter = write_inter(tmp_path)
    reference = write_record(tmp_path, "R", {1: [1] * 6, 2: [1] * 6})
    model = write_record(tmp_path, "M", {1: [0, 0, 2, 2, 2, 2], 2: [0, 0, 1, 1, 1, 1], 3: [0] * 6})
    script.main([model, reference, f"--data_path={inter}", "--edges=3,8", f"--output={tmp_path / 'out'}"])
    saved = json.loads((tmp_path / "out.json").read_text())
    short, middle, long = saved["groups"]
    assert [g["lengths"] for g in saved["groups"]] == ["≤ 3", "4–8", "≥ 9"]
    assert [g["users"] for g in saved["groups"]] == [2, 3, 1]  # lengths 2, 3 | 4, 7, 8 | 11
    found = short["models"][model]
    assert found["seeds"] == [1, 2] and found["mean_difference"] == pytest.approx(-1.0)
    assert found["ndcg@10"] == 0 and found["reference_ndcg@10"] == 1
    # rank 2 on one seed, rank 1 on the other, against rank 1 on both
    assert middle["models"][model]["mean_difference"] == pytest.approx((1 / math.log2(3) - 1) / 2)
    assert long["models"][model]["mean_difference"] == pytest.approx((1 / math.log2(3) - 1) / 2)
    assert short["models"][model]["p_holm"] == 0.0  # the same difference for every user
    text = (tmp_path / "out.md").read_text()
    assert "| ≤ 3 | 2 | 1.0000 | -1.0000 [-1.0000, -1.0000], **p <1e-4** |" in text


def test_the_reference_column_is_its_mean_over_all_its_seeds_whatever_model_comes_first(tmp_path):
    """The reference hits everyone at rank 1 on seed 1 and misses everyone on
    seed 2; the first model ran seed 1 only. The column shows the reference's
    two-seed mean (0.5), while the model's Δ pairs seed 1 alone (rank 2 against 1)."""
    script = benchmark_script("by_history_length.py")
    inter = write_inter(tmp_path)
    reference = write_record(tmp_path, "R", {1: [1] * 6, 2: [0] * 6})
    one_seed = write_record(tmp_path, "M", {1: [2] * 6})
    two_seeds = write_record(tmp_path, "N", {1: [1] * 6, 2: [1] * 6})
    for order in ([one_seed, two_seeds], [two_seeds, one_seed]):
        script.main([*order, reference, f"--data_path={inter}", "--edges=8", f"--output={tmp_path / 'out'}"])
        saved = json.loads((tmp_path / "out.json").read_text())
        short, long = saved["groups"]
        assert short["reference_ndcg@10"] == pytest.approx(0.5) and short["reference_seeds"] == [1, 2]
        found = short["models"][one_seed]
        assert found["seeds"] == [1] and found["reference_ndcg@10"] == 1
        assert found["mean_difference"] == pytest.approx(1 / math.log2(3) - 1)
        assert short["models"][two_seeds]["mean_difference"] == pytest.approx(0.5)
        text = (tmp_path / "out.md").read_text()
        assert "| ≤ 8 | 5 | 0.5000 |" in text and "mean over all of its seeds (1, 2)" in text


@pytest.mark.parametrize("extra, message", [
    (["--edges=3,x"], "--edges '3,x' is not a comma-separated list of whole numbers"),
    (["--edges=8,3"], "--edges '8,3' must rise strictly"),
    (["--user_field=uid"], "--user_field 'uid' is not a column of"),
    (["--data_path=elsewhere"], "--data_path 'elsewhere' holds no toy/toy.inter"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    script = benchmark_script("by_history_length.py")
    inter = write_inter(tmp_path)
    reference = write_record(tmp_path, "R", {1: [1] * 6})
    model = write_record(tmp_path, "M", {1: [2] * 6})
    with pytest.raises(SystemExit) as exited:
        script.main([model, reference, f"--data_path={inter}", f"--output={tmp_path / 'out'}", *extra])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("out*"))


def test_users_missing_from_the_inter_file_are_refused(tmp_path, capsys):
    script = benchmark_script("by_history_length.py")
    inter = write_inter(tmp_path, {user: count for user, count in COUNTS.items() if user != "f"})
    reference = write_record(tmp_path, "R", {1: [1] * 6})
    model = write_record(tmp_path, "M", {1: [2] * 6})
    with pytest.raises(SystemExit) as exited:
        script.main([model, reference, f"--data_path={inter}", f"--output={tmp_path / 'out'}"])
    assert exited.value.code == 2 and "1 test users are not in the .inter file" in capsys.readouterr().err


def test_ml_100k_is_read_from_recbole_and_other_datasets_need_a_data_path():
    script = benchmark_script("by_history_length.py")

    def runs(dataset):
        return script.ModelRuns("x.json:M", None, {"dataset": dataset}, "M", [], {})

    path = script.inter_file([runs("ml-100k")], None)
    assert path.name == "ml-100k.inter" and path.is_file()
    with pytest.raises(script.UsageError, match="--data_path is needed for 'amazon-toys'"):
        script.inter_file([runs("amazon-toys")], None)
    with pytest.raises(script.UsageError, match="different datasets: amazon-toys, ml-100k"):
        script.inter_file([runs("ml-100k"), runs("amazon-toys")], None)
