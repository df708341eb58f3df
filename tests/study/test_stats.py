"""Statistics against known values and synthetic data with a known truth."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from studio.study.battles import VOTE_FIELDS
from studio.study.stats import (
    bradley_terry,
    bt_ratings,
    export_votes_csv,
    export_votes_json,
    fig_bradley_terry,
    fig_categories,
    fig_evaluators,
    fig_outcomes,
    fig_win_rates,
    headline_text,
    metric_vote_agreement,
    pairwise,
    position_bias,
    sign_test,
    summarize,
    wilson_interval,
)


def vote(left: str, right: str, overall: str, prompt_id: int = 0, category: str = "static", evaluator: str = "e",
         seed: int = 0, kind: str = "pair", time_to_vote_ms: int = 5000, **answers) -> dict:
    """One vote dict as `load_votes` returns it; 5 s to vote, as a person who watched both clips."""
    return {"left_system": left, "right_system": right, "answer_overall": overall, "prompt_id": prompt_id,
            "prompt": f"p{prompt_id}", "seed": seed, "category": category, "evaluator": evaluator, "kind": kind,
            "answer_camera": answers.get("camera"), "answer_3d_consistency": answers.get("consistency"),
            "attention_failed": answers.get("failed"), "time_to_vote_ms": time_to_vote_ms}


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_sign_test_known_p_values():
    assert sign_test(8, 2) == pytest.approx(112 / 1024)  # 2 * P(X >= 8), X ~ Bin(10, 1/2)
    assert sign_test(9, 1) == pytest.approx(22 / 1024)
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert sign_test(0, 0) == 1.0


def test_pairwise_counts_map_left_right_to_systems():
    votes = [
        vote("A", "B", "left"), vote("B", "A", "right"), vote("B", "A", "left"),  # A, A, B
        vote("A", "B", "both_good"), vote("A", "B", "both_bad"),
        vote("A", "A", "left", kind="attention_identical"),  # not a preference
    ]
    r = pairwise(votes, "overall", "A", "B", n_boot=200)
    assert (r.wins_a, r.wins_b, r.both_good, r.both_bad, r.n_votes) == (2, 1, 1, 1, 5)
    assert r.win_rate_a == pytest.approx(2 / 3) and r.tie_rate == pytest.approx(0.2)
    assert r.sign_test_p == pytest.approx(1.0)
    assert pairwise(votes, "camera", "A", "B").n_votes == 0  # unanswered criterion


def test_prompt_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    votes = [vote("A", "B", "left" if rng.random() < 0.7 else "right", prompt_id=p) for p in range(20) for _ in range(10)]
    a = pairwise(votes, "overall", "A", "B", n_boot=1000, seed=7)
    b = pairwise(votes, "overall", "A", "B", n_boot=1000, seed=7)
    assert (a.boot_low, a.boot_high) == (b.boot_low, b.boot_high)
    assert a.boot_low < a.win_rate_a < a.boot_high and a.ci_low < a.win_rate_a < a.ci_high


def test_position_bias():
    votes = [vote("A", "B", "left") for _ in range(70)] + [vote("B", "A", "right") for _ in range(30)]
    votes += [vote("A", "B", "both_good") for _ in range(10)]
    bias = position_bias(votes, "overall")
    assert (bias.n_decisive, bias.chose_left, bias.left_rate) == (100, 70, 0.7)
    assert bias.ci_low > 0.5 and bias.p_value < 1e-3
    assert bias.p_value == pytest.approx(sign_test(70, 30))


def test_bradley_terry_two_systems_matches_closed_form():
    theta = bradley_terry(np.array([[0.0, 30.0], [10.0, 0.0]]), prior=0.0)
    assert theta[0] - theta[1] == pytest.approx(math.log(3.0), abs=1e-6)


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(42)
    systems = ["a", "b", "c", "d"]
    true_theta = np.array([0.8, 0.2, -0.3, -0.7])
    votes = []
    for n in range(6000):
        i, j = rng.choice(4, size=2, replace=False)
        p_i = 1 / (1 + math.exp(true_theta[j] - true_theta[i]))
        winner_left = rng.random() < p_i
        votes.append(vote(systems[i], systems[j], "left" if winner_left else "right", prompt_id=n % 40))
    ratings = bt_ratings(votes, "overall", systems, n_boot=100, seed=0)
    fitted = np.array([r.theta for r in ratings])
    assert np.allclose(fitted, true_theta - true_theta.mean(), atol=0.1)
    for r, t in zip(ratings, true_theta - true_theta.mean()):
        assert r.boot_low < r.theta < r.boot_high and r.boot_high - r.boot_low < 0.5
        assert r.boot_low - 0.1 < t < r.boot_high + 0.1


def test_bradley_terry_stays_finite_when_a_system_never_wins():
    theta = bradley_terry(np.array([[0.0, 5.0], [0.0, 0.0]]))
    assert np.all(np.isfinite(theta)) and theta[0] > theta[1]


def test_spearman_agreement_between_metric_deltas_and_votes():
    votes, metrics = [], {}
    for p in range(6):
        wins_a = p  # A's margin over B rises with p; so does its metric
        votes += [vote("A", "B", "left", prompt_id=p) for _ in range(wins_a)]
        votes += [vote("B", "A", "left", prompt_id=p) for _ in range(5 - wins_a)]
        metrics[(f"p{p}", 0, "A")] = {"clip": 0.2 + 0.01 * p, "traj_err_deg": 5.0 - p}
        metrics[(f"p{p}", 0, "B")] = {"clip": 0.2, "traj_err_deg": 5.0}
    rows = {r["metric"]: r for r in metric_vote_agreement(votes, metrics, "overall")}
    assert rows["clip"]["spearman_rho"] == pytest.approx(1.0) and rows["clip"]["n_pairs"] == 6
    assert rows["traj_err_deg"]["spearman_rho"] == pytest.approx(-1.0)


def test_summary_is_strict_json_with_categories_bt_and_attention(tmp_path):
    rng = np.random.default_rng(1)
    systems = ["base", "tuned", "other"]
    votes = []
    for n in range(300):
        a, b = rng.choice(systems, size=2, replace=False)
        cat = ["static", "camera", "dynamic"][n % 3]
        votes.append(vote(a, b, rng.choice(["left", "right", "both_good", "both_bad"]), prompt_id=n % 12,
                          category=cat, evaluator=f"e{n % 5}", camera=rng.choice(["left", "right"])))
    votes.append(vote("base", "base", "left", kind="attention_identical", evaluator="e0", failed=True))
    votes.append(vote("base", "base", "left", kind="attention_identical", evaluator="e0", failed=True))
    summary = summarize(votes, systems, attention_fail_limit=2, n_boot=200, n_boot_bt=50)
    json.dumps(summary, allow_nan=False)
    assert {r["category"] for r in summary["by_category"]} == {"static", "camera", "dynamic"}
    assert len(summary["bradley_terry"]) == 3 * 3  # criteria × systems
    assert summary["attention"] == {"checks": 2, "failures": 2,
                                    "by_kind": {"attention_identical": {"checks": 2, "failures": 2}}}
    assert [e["evaluator"] for e in summary["evaluators"] if e["careless"]] == ["e0"]
    assert sum(e["votes"] for e in summary["evaluators"]) == len(votes)
    excluded = summarize(votes, systems, attention_fail_limit=2, exclude_careless=True, n_boot=50, n_boot_bt=10)
    assert excluded["excluded_careless"] == ["e0"] and excluded["n_votes_used"] == len(votes) - 62
    for build in (fig_win_rates, fig_outcomes, fig_categories, fig_bradley_terry, fig_evaluators):
        assert build(summary).data


def test_export_round_trip(tmp_path):
    votes = [dict.fromkeys(VOTE_FIELDS, "x") | {"vote_id": i, "answer_overall": "left"} for i in range(3)]
    csv_path = export_votes_csv(votes, tmp_path / "v.csv", VOTE_FIELDS)
    json_path = export_votes_json(votes, tmp_path / "v.json")
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["vote_id"] for r in rows] == ["0", "1", "2"] and list(rows[0]) == list(VOTE_FIELDS)
    assert json.loads(json_path.read_text()) == votes


def two_system_votes(tuned_share: float = 0.7, n: int = 200, seed: int = 3) -> list[dict]:
    """baseline vs tuned, left/right randomised, tuned preferred in `tuned_share` of the votes."""
    rng = np.random.default_rng(seed)
    votes = []
    for i in range(n):
        tuned_wins = rng.random() < tuned_share
        left, right = ("tuned", "baseline") if rng.random() < 0.5 else ("baseline", "tuned")
        answer = "left" if (left == "tuned") == tuned_wins else "right"
        votes.append(vote(left, right, answer, prompt_id=i % 10, evaluator=f"e{i % 4}"))
    return votes


def test_bradley_terry_is_shown_for_two_systems_with_its_ci():
    votes = two_system_votes()
    summary = summarize(votes, ["baseline", "tuned"], n_boot=100, n_boot_bt=100)
    overall = {r["system"]: r for r in summary["bradley_terry"] if r["criterion"] == "overall"}
    assert set(overall) == {"baseline", "tuned"}
    wins = next(r for r in summary["pairwise"] if r["criterion"] == "overall")
    gap = overall["tuned"]["theta"] - overall["baseline"]["theta"]
    assert gap == pytest.approx(math.log((wins["wins_b"] + 0.1) / (wins["wins_a"] + 0.1)), abs=1e-6)
    assert overall["tuned"]["boot_low"] < overall["tuned"]["theta"] < overall["tuned"]["boot_high"]
    assert overall["tuned"]["boot_low"] > 0  # tuned is clearly ahead
    assert fig_bradley_terry(summary).data


def test_the_headline_shows_the_tuned_systems_win_rate_and_names_it():
    summary = summarize(two_system_votes(0.7), ["baseline", "tuned"], n_boot=100, n_boot_bt=10)
    overall = next(r for r in summary["pairwise"] if r["criterion"] == "overall")
    tuned_rate = overall["wins_b"] / (overall["wins_a"] + overall["wins_b"])
    assert tuned_rate > 0.6
    fig = fig_win_rates(summary)
    (bar,) = fig.data
    assert "tuned wins vs baseline" == bar.name and fig.layout.showlegend
    y = dict(zip(bar.x, bar.y))
    assert y["overall"] == pytest.approx(tuned_rate)
    assert fig.layout.title.text == "How often tuned wins against baseline"
    assert fig.layout.yaxis.title.text.startswith("win rate")
    low, high = y["overall"] - bar.error_y.arrayminus[list(bar.x).index("overall")], \
        y["overall"] + bar.error_y.array[list(bar.x).index("overall")]
    assert low == pytest.approx(1 - overall["ci_high"]) and high == pytest.approx(1 - overall["ci_low"])
    (headline,) = summary["headline"]
    assert (headline["system"], headline["against"]) == ("tuned", "baseline")
    assert headline_text(summary).startswith(f"**tuned** wins {100 * tuned_rate:.0f} % of decisive overall votes "
                                             "against **baseline**")
    names = {t.name for t in fig_outcomes(summary).data}
    assert {"tuned better", "baseline better"} <= names
    (category_bar,) = fig_categories(summary).data
    assert category_bar.name == "tuned wins vs baseline" and category_bar.y[0] == pytest.approx(tuned_rate)


def test_evaluator_chart_shows_failed_checks_in_red_and_passed_in_green():
    votes = two_system_votes(n=20)
    votes.append(vote("baseline", "baseline", "left", kind="attention_identical", evaluator="e0", failed=True))
    votes.append(vote("baseline", "baseline", "both_good", kind="attention_identical", evaluator="e1", failed=False))
    colours = {t.name: t.marker.color for t in fig_evaluators(summarize(votes, ["baseline", "tuned"], n_boot=10,
                                                                       n_boot_bt=10)).data}
    assert colours["checks failed"] == "#d62728" and colours["checks passed"] == "#2ca02c"


def test_one_sided_and_too_fast_evaluators_are_flagged_and_can_be_excluded():
    from scipy.stats import binomtest

    votes = two_system_votes(n=120)  # e0..e3, honest
    rng = np.random.default_rng(5)
    for i in range(17):  # always left, whatever the systems
        left, right = ("tuned", "baseline") if rng.random() < 0.5 else ("baseline", "tuned")
        votes.append(vote(left, right, "left", prompt_id=i % 10, evaluator="always-left"))
    for i in range(10):  # an API script: votes 0.2 s after the pair arrives
        votes.append(vote("baseline", "tuned", rng.choice(["left", "right"]), prompt_id=i, evaluator="bot",
                          time_to_vote_ms=200))
    summary = summarize(votes, ["baseline", "tuned"], n_boot=10, n_boot_bt=10)
    rows = {e["evaluator"]: e for e in summary["evaluators"]}
    assert rows["always-left"]["side_p_value"] == pytest.approx(binomtest(17, 17, 0.5).pvalue)
    assert rows["always-left"]["side_p_value"] == pytest.approx(1.5e-5, rel=0.05)
    assert rows["always-left"]["careless"] and rows["always-left"]["flags"] == "picks left"
    assert rows["always-left"]["attention_failures"] == 0  # flagged without failing a check
    assert rows["bot"]["careless"] and rows["bot"]["flags"] == "too fast" and rows["bot"]["fast_votes"] == 10
    assert not any(rows[f"e{i}"]["careless"] for i in range(4))
    excluded = summarize(votes, ["baseline", "tuned"], n_boot=10, n_boot_bt=10, exclude_careless=True)
    assert excluded["excluded_careless"] == ["always-left", "bot"] and excluded["n_votes_used"] == 120
