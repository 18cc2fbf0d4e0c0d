"""Per-user metrics, the paired comparison and Holm's correction against
numbers worked out by hand, and the per-user hits a real run saves."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import replace

import numpy as np
import pytest

from recbole_attn.bench import significance
from recbole_attn.user_ranks import UserHits, load_user_hits, save_user_hits
from tests.conftest import benchmark_script


def hits_of(ranks: list[int], k: int = 10, user_ids: list[int] | None = None) -> UserHits:
    """One positive per user at the given 1-based rank (0: outside the top k)."""
    table = np.zeros((len(ranks), k), dtype=np.uint8)
    for row, rank in enumerate(ranks):
        if rank:
            table[row, rank - 1] = 1
    ids = np.arange(1, len(ranks) + 1) if user_ids is None else np.array(user_ids)
    return UserHits(ids, table, np.ones(len(ranks), dtype=np.int64))


def test_per_user_ndcg_and_hit_by_hand():
    hits = hits_of([1, 2, 3, 0])
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(4), 0.0]  # 1, 0.6309, 0.5, 0
    np.testing.assert_allclose(significance.per_user_ndcg(hits), expected)
    np.testing.assert_array_equal(significance.per_user_hit(hits), [1, 1, 1, 0])
    np.testing.assert_array_equal(significance.per_user_hit(hits, k=2), [1, 1, 0, 0])
    np.testing.assert_array_equal(hits.rank, [1, 2, 3, 0])


def test_ndcg_with_two_positives_uses_the_ideal_of_two():
    hits = UserHits(np.array([1]), np.array([[0, 1, 1] + [0] * 7], dtype=np.uint8), np.array([2]))
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    assert significance.per_user_ndcg(hits)[0] == pytest.approx(dcg / (1 + 1 / math.log2(3)))


def test_paired_t_test_p_value_by_hand():
    differences = np.array([0.1, 0.3, 0.2, 0.4])
    # mean 0.25, sample sd sqrt(0.05 / 3), t = 0.25 / (sd / 2) = 3.873 with 3 degrees of freedom;
    # Student's t with 3 df has the closed-form cdf 1/2 + (t / (sqrt(3) (1 + t^2 / 3)) + atan(t / sqrt(3))) / pi
    t = 0.25 / (math.sqrt(0.05 / 3) / 2)
    cdf = 0.5 + (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi
    assert significance.paired_p_value(differences) == pytest.approx(2 * (1 - cdf), rel=1e-9)
    assert significance.paired_p_value(np.zeros(5)) == 1.0


def test_holm_by_hand():
    # sorted: 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept non-decreasing: 0.06
    assert significance.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert significance.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert significance.holm([]) == []


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.02, 0.1, size=2000)
    low, high = significance.bootstrap_ci(differences, resamples=2000, seed=3)
    assert (low, high) == significance.bootstrap_ci(differences, resamples=2000, seed=3)
    assert low < differences.mean() < high
    # the CI of a mean over n users is about +-1.96 sd / sqrt(n) wide
    assert high - low == pytest.approx(2 * 1.96 * differences.std() / math.sqrt(2000), rel=0.1)
    assert significance.bootstrap_ci(np.full(50, 0.5), resamples=100) == (0.5, 0.5)


def test_comparison_pairs_seeds_and_users_by_id():
    # the model ranks the target one place higher for users 1..3 in both seeds; its users come shuffled in one file
    reference = {7: hits_of([2, 2, 3, 0]), 8: hits_of([2, 3, 2, 0])}
    model = {7: hits_of([0, 1, 1, 2], user_ids=[4, 1, 2, 3]), 8: hits_of([1, 2, 1, 0])}
    comparisons = significance.compare_all({"Ref": reference, "Model": model, "Alone": {9: hits_of([1])}}, "Ref",
                                           resamples=200)
    assert [c.model for c in comparisons] == ["Model"]  # no common seed with "Alone": not compared
    found = comparisons[0]
    ndcg = {rank: (1 / math.log2(rank + 1) if rank else 0.0) for rank in range(4)}
    seed7 = [ndcg[1] - ndcg[2], ndcg[1] - ndcg[2], ndcg[2] - ndcg[3], 0.0]
    seed8 = [ndcg[1] - ndcg[2], ndcg[2] - ndcg[3], ndcg[1] - ndcg[2], 0.0]
    per_user = (np.array(seed7) + np.array(seed8)) / 2
    assert found.seeds == [7, 8] and found.users == 4
    assert found.mean_difference == pytest.approx(per_user.mean())
    assert found.p_value == pytest.approx(significance.paired_p_value(per_user))
    assert found.p_holm == pytest.approx(found.p_value)  # one comparison: Holm changes nothing
    assert found.significant == (found.p_holm < 0.05)


def test_users_pair_by_token_when_internal_ids_differ():
    """Two runs that loaded the data differently give the same user other
    internal ids; the saved tokens pair them."""
    reference = hits_of([1, 0, 2], user_ids=[1, 2, 3])
    model = hits_of([2, 1, 0], user_ids=[1, 2, 3])
    reference = UserHits(reference.user_id, reference.hits, reference.pos_len, np.array(["u7", "u8", "u9"]))
    model = UserHits(model.user_id, model.hits, model.pos_len, np.array(["u9", "u7", "u8"]))
    users, values = significance.aligned([model, reference])
    assert users.tolist() == ["u7", "u8", "u9"]
    np.testing.assert_allclose(values[0], values[1])  # each user ranked alike in both runs
    apart = UserHits(model.user_id, model.hits, model.pos_len, np.array(["x1", "x2", "x3"]))
    assert significance.compare("Model", {1: apart}, "Ref", {1: reference}) is None  # no user in common


def test_a_user_with_two_test_rows_is_refused():
    with pytest.raises(ValueError, match="more than one test row"):
        significance.aligned([hits_of([1, 2], user_ids=[5, 5]), hits_of([1, 2], user_ids=[5, 6])])


def test_runs_without_user_ids_pair_row_by_row():
    reference, model = hits_of([2, 0, 1], user_ids=[-1, -1, -1]), hits_of([1, 0, 1], user_ids=[-1, -1, -1])
    _, values = significance.aligned([model, reference])
    np.testing.assert_allclose(values[0] - values[1], [1 - 1 / math.log2(3), 0, 0])
    with pytest.raises(ValueError, match="same number of users"):
        significance.aligned([model, hits_of([1], user_ids=[-1])])


def test_hits_file_round_trip(tmp_path):
    hits = hits_of([3, 0, 1])
    save_user_hits(tmp_path / "r.ranks.npz", replace(hits, user_token=np.array(["a", "b", "c"])))
    back = load_user_hits(tmp_path / "r.ranks.npz")
    np.testing.assert_array_equal(back.hits, hits.hits)
    np.testing.assert_array_equal(back.user_id, hits.user_id)
    assert back.user_token is not None and back.user_token.tolist() == ["a", "b", "c"]
    with np.load(tmp_path / "r.ranks.npz") as data:
        assert data["user_token"].tolist() == ["a", "b", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.ranks.npz"]  # no temp file left


@pytest.mark.slow
@pytest.mark.parametrize("model", ["AttnSeq", "GRU4Rec"])
def test_a_run_saves_hits_that_give_back_its_test_metrics(pattern_root, tmp_path, model):
    from recbole_attn import run

    result = run(model, "pattern", config_dict={
        "data_path": str(pattern_root), "epochs": 1, "state": "WARNING", "save_user_ranks": True,
        "output_dir": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "saved")})
    assert result["ranks_file"] == result["results_file"][: -len(".json")] + ".ranks.npz"
    hits = load_user_hits(result["ranks_file"])
    assert len(hits.user_id) == len(set(hits.user_id.tolist())) == 300  # every test user, once
    # RecBole rounds its metrics to 4 places
    assert significance.per_user_ndcg(hits).mean() == pytest.approx(result["test"]["ndcg@10"], abs=5e-5)
    assert significance.per_user_hit(hits, 5).mean() == pytest.approx(result["test"]["hit@5"], abs=5e-5)
    with np.load(result["ranks_file"]) as data:
        assert data["user_token"][:3].tolist() != [] and data["hits"].shape == (300, 20)  # max(topk) = 20


def test_records_compare_several_models_with_holm_over_them(tmp_path, monkeypatch):
    """Several models against one reference from other records: each
    comparison as alone, its p-value Holm-corrected over the models given."""
    compare_records = benchmark_script("compare_records.py")
    users = 40
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 3, users)
    runs = {"R": reference, "A": np.where(rng.random(users) < 0.6, 0, reference), "B": reference.copy()}
    runs["B"][:4] = 0  # B misses where R hits on a few users only: a larger p than A's
    for label, user_ranks in runs.items():
        save_user_hits(tmp_path / f"{label}.npz", hits_of(list(user_ranks)))
        (tmp_path / f"{label}.json").write_text(json.dumps({"rows": [
            {"label": label, "seed": 1, "ranks_file": f"{label}.npz"}]}))
    out = tmp_path / "c.json"
    monkeypatch.setattr(sys, "argv", ["x", f"{tmp_path / 'A.json'}:A", f"{tmp_path / 'B.json'}:B",
                                      f"{tmp_path / 'R.json'}:R", f"--output={out}"])
    compare_records.main()
    saved = json.loads(out.read_text())
    found = {c["overall"]["model"]: c["overall"] for c in saved["comparisons"]}
    assert [c["model"] for c in saved["comparisons"]] == [f"{tmp_path / 'A.json'}:A", f"{tmp_path / 'B.json'}:B"]
    p_a, p_b = found["A"]["p_value"], found["B"]["p_value"]
    assert p_a < p_b < 1
    # Holm by hand: the smaller p times 2, the larger times 1, kept non-decreasing
    assert found["A"]["p_holm"] == pytest.approx(min(1.0, 2 * p_a))
    assert found["B"]["p_holm"] == pytest.approx(max(min(1.0, 2 * p_a), p_b))
    assert found["A"]["reference"] == found["B"]["reference"] == "R"


def test_records_compare_across_files_seed_by_seed(tmp_path, monkeypatch, capsys):
    """benchmarks/compare_records.py pairs one record's model with another
    record's, seed against seed, as the benchmark's own tables do."""
    compare_records = benchmark_script("compare_records.py")
    ranks = {("A", 1): [1, 0], ("A", 2): [1, 2], ("B", 1): [0, 0], ("B", 2): [1, 0], ("B", 3): [1, 1]}
    for model in ("A", "B"):
        rows = []
        for (label, seed), user_ranks in ranks.items():
            if label == model:
                save_user_hits(tmp_path / f"{label}{seed}.npz", hits_of(user_ranks))
                rows.append({"label": label, "seed": seed, "ranks_file": f"{label}{seed}.npz"})
        (tmp_path / f"{model}.json").write_text(json.dumps({"rows": rows}))
    out = tmp_path / "c.json"
    monkeypatch.setattr(sys, "argv", ["x", f"{tmp_path / 'A.json'}:A", f"{tmp_path / 'B.json'}:B", f"--output={out}"])
    compare_records.main()
    (result,) = json.loads(out.read_text())["comparisons"]
    # differences per seed: seed 1 [1, 0], seed 2 [0, 1/log2(3)]; seed 3 has no pair
    assert result["overall"]["seeds"] == [1, 2]
    assert result["overall"]["mean_difference"] == pytest.approx(0.25 + 0.25 / math.log2(3))
    assert [c["mean_difference"] for c in result["per_seed"]] == pytest.approx([0.5, 0.5 / math.log2(3)])
    assert result["overall"]["p_holm"] == result["overall"]["p_value"]  # one comparison: nothing to correct
    assert [c["p_holm"] for c in result["per_seed"]] == [None, None]
    monkeypatch.setattr(sys, "argv", ["x", f"{tmp_path / 'A.json'}:C", f"{tmp_path / 'B.json'}:B"])
    with pytest.raises(SystemExit) as exited:
        compare_records.main()
    assert exited.value.code == 2 and "no saved hits of 'C'" in capsys.readouterr().err


def _record_row(label: str, seed: int, user_ranks: list[int], folder, epochs_run: int) -> dict:
    """A finished benchmark row whose saved hits rank each user's target at ``user_ranks``."""
    save_user_hits(folder / f"{label}{seed}.npz", hits_of(user_ranks))
    ndcg = float(significance.per_user_ndcg(hits_of(user_ranks)).mean())
    return {"label": label, "model": label, "seed": seed, "status": "ok", "ranks_file": f"{label}{seed}.npz",
            "test": {"ndcg@10": ndcg, "hit@10": float(np.mean([r > 0 for r in user_ranks]))},
            "best_valid": {"ndcg@10": 0.5}, "epochs_run": epochs_run, "best_epoch": epochs_run - 1,
            "train_seconds_per_epoch": 2.0, "seconds_to_best": 10.0,
            "result": {"config": {"dataset": "amazon-toys", "filter_seen": True, "epochs": 200}}}


def test_records_that_cannot_merge_make_one_table_that_says_how_each_model_trained(tmp_path, monkeypatch):
    """--markdown: one row per model over its seeds, sorted by test NDCG@10,
    the reference marked, each model's stopping rule from its record, and the
    dataset's published anchors."""
    compare_records = benchmark_script("compare_records.py")
    users = 60
    rng = np.random.default_rng(5)
    reference = rng.integers(1, 4, users)
    capped = {"dataset": "amazon-toys", "budget_seconds": None, "epochs": 45, "rows": [
        _record_row("NARM", seed, list(np.where(rng.random(users) < 0.7, 0, reference)), tmp_path, 45)
        for seed in (1, 2)]}
    converged = {"dataset": "amazon-toys", "budget_seconds": None, "epochs": 200, "rows": [
        _record_row("AttnSeq", seed, list(reference), tmp_path, 30) for seed in (1, 2)]}
    budgeted = {"dataset": "amazon-toys", "budget_seconds": 600.0, "epochs": 200, "rows": [
        {**_record_row("SASRec", 1, [0, *reference[1:]], tmp_path, 3), "status": "budget"},
        _record_row("GRU4Rec", 1, [0] * users, tmp_path, 20)]}
    for name, record in (("capped", capped), ("converged", converged), ("budgeted", budgeted)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    table = tmp_path / "table.md"
    monkeypatch.setattr(sys, "argv", ["x", f"{tmp_path / 'capped.json'}:NARM", f"{tmp_path / 'budgeted.json'}:SASRec",
                                      f"{tmp_path / 'budgeted.json'}:GRU4Rec",
                                      f"{tmp_path / 'converged.json'}:AttnSeq", f"--markdown={table}"])
    compare_records.main()
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ") and "---" not in line][:5]
    assert rows[0].startswith("| model | settings | training | runs |") and "vs AttnSeq [95% CI]" in rows[0]
    attnseq, sasrec, narm, gru4rec = rows[1:]  # SASRec misses one target, NARM most, GRU4Rec all
    assert attnseq.startswith("| AttnSeq | defaults | early stopping | 2 |") and "| reference | - |" in attnseq
    assert "`converged.json`" in attnseq
    assert sasrec.startswith("| SASRec | defaults | 600 s budget | 1, 1 budget-stopped |")
    first_user = 1 / math.log2(reference[0] + 1) / users
    assert f"{-first_user:+.4f} [" in sasrec and "(seed 1)" in sasrec  # paired on the one seed it ran
    assert narm.startswith("| NARM | defaults | 45-epoch cap (2 of 2 runs reached it) | 2 |")
    assert "| **<1e-4** |" in narm
    assert gru4rec.startswith("| GRU4Rec | defaults | early stopping within 600 s | 1 |")
    assert "| ICLRec (Chen et al., WWW 2022) | 0.0480 | 0.0834 |" in table.read_text()
