"""Statistics of an A/B study, computed from plain vote dicts (`battles.load_votes`).

Conventions:
- Only ordinary battles (kind == "pair") count towards preferences; attention checks are
  reported apart.
- For systems A vs B on one criterion, a vote is a win for A, a win for B, a tie
  ("both_good") or a "both_bad". The win rate is A's share of the decisive votes
  (wins of A + wins of B); ties and both-bad are reported as shares of all votes.
- Confidence: Wilson score 95 % interval (better than the normal approximation near 0/1
  and for small n); the sign test is the two-sided exact binomial test of wins against
  p = 0.5; the bootstrap resamples prompts (not votes), because votes on one prompt are
  correlated and prompt choice is the larger source of variance.
- Bradley–Terry: P(i beats j) = p_i / (p_i + p_j), fitted by the MM algorithm of Hunter
  (2004); ratings are log-strengths θ = log p centred to mean 0. A pseudo-count of
  `BT_PRIOR` wins in each direction of every pair keeps θ finite when a system never wins.
  With two systems it is the log-odds of the win rate split in two (θ_b − θ_a = log(w_b / w_a)),
  shown because its bootstrap CI is the one scale that carries over to studies of more systems.
- The first system of a study is the reference (the baseline); figures and the headline show how
  often each later system wins against an earlier one, so "above 0.5" means the later system
  (e.g. the tuned one) is preferred.
- Evaluators are flagged as careless for failed attention checks, for choosing one side
  far more than chance allows (exact binomial test of left against right on their decisive
  overall answers, Bonferroni over evaluators at a family-wise `POSITION_ALPHA`), or for
  voting faster than the clips can be watched (median time to vote under `min_vote_ms`).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from studio.study.db import CATEGORIES, CRITERIA, answer_column

Z95 = 1.959963984540054
BT_PRIOR = 0.1
POSITION_ALPHA = 0.05
MIN_VOTE_MS = 1500  # the page opens voting only once both clips (2 s at 16 frames / 8 fps) played
ClipKey = tuple[str, int, str]  # (prompt, seed, system)


# --- primitives ---------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (ties already dropped); 1.0 without data."""
    n = wins + losses
    if n == 0:
        return 1.0
    return float(sps.binomtest(wins, n, 0.5, alternative="two-sided").pvalue)


def _outcome(vote: Mapping, criterion: str) -> tuple[str, str | None] | None:
    """('win', winner) / ('both_good', None) / ('both_bad', None), None if unanswered."""
    answer = vote.get(answer_column(criterion))
    if answer is None or answer == "":
        return None
    if answer == "left":
        return ("win", vote["left_system"])
    if answer == "right":
        return ("win", vote["right_system"])
    return (answer, None)


def pair_votes(votes: Iterable[Mapping]) -> list[Mapping]:
    return [v for v in votes if v.get("kind", "pair") == "pair"]


# --- pairwise -----------------------------------------------------------------------


@dataclass
class PairwiseResult:
    criterion: str
    system_a: str
    system_b: str
    n_votes: int
    wins_a: int
    wins_b: int
    both_good: int
    both_bad: int
    win_rate_a: float  # share of decisive votes won by A
    ci_low: float  # Wilson 95 %
    ci_high: float
    tie_rate: float  # both good / all votes
    both_bad_rate: float
    sign_test_p: float
    boot_low: float  # bootstrap over prompts, 95 % percentile interval
    boot_high: float


def _per_prompt_counts(votes: Sequence[Mapping], criterion: str, a: str, b: str) -> tuple[list, np.ndarray]:
    """Per prompt: [wins_a, wins_b, both_good, both_bad]."""
    counts: dict[object, np.ndarray] = {}
    for v in votes:
        if {v["left_system"], v["right_system"]} != {a, b}:
            continue
        outcome = _outcome(v, criterion)
        if outcome is None:
            continue
        row = counts.setdefault(v["prompt_id"], np.zeros(4, dtype=np.int64))
        kind, winner = outcome
        if kind == "win":
            row[0 if winner == a else 1] += 1
        else:
            row[2 if kind == "both_good" else 3] += 1
    return list(counts), np.array(list(counts.values()), dtype=np.int64).reshape(-1, 4)


def prompt_bootstrap_weights(n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_prompts) counts: how often each prompt is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_boot)


def pairwise(votes: Sequence[Mapping], criterion: str, a: str, b: str, n_boot: int = 2000,
             seed: int = 0) -> PairwiseResult:
    _, per_prompt = _per_prompt_counts(pair_votes(votes), criterion, a, b)
    wins_a, wins_b, good, bad = (int(x) for x in per_prompt.sum(axis=0)) if len(per_prompt) else (0, 0, 0, 0)
    n = wins_a + wins_b + good + bad
    decisive = wins_a + wins_b
    low, high = wilson_interval(wins_a, decisive)
    boot_low = boot_high = math.nan
    if len(per_prompt) and n_boot > 0:
        w = prompt_bootstrap_weights(len(per_prompt), n_boot, seed)
        boot_wins = w @ per_prompt[:, 0]
        boot_decisive = w @ (per_prompt[:, 0] + per_prompt[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = boot_wins / boot_decisive
        rates = rates[np.isfinite(rates)]
        if len(rates):
            boot_low, boot_high = (float(x) for x in np.percentile(rates, [2.5, 97.5]))
    return PairwiseResult(
        criterion=criterion, system_a=a, system_b=b, n_votes=n, wins_a=wins_a, wins_b=wins_b,
        both_good=good, both_bad=bad, win_rate_a=wins_a / decisive if decisive else math.nan,
        ci_low=low, ci_high=high, tie_rate=good / n if n else math.nan, both_bad_rate=bad / n if n else math.nan,
        sign_test_p=sign_test(wins_a, wins_b), boot_low=boot_low, boot_high=boot_high,
    )


# --- position bias ------------------------------------------------------------------


@dataclass
class PositionBias:
    criterion: str
    n_decisive: int
    chose_left: int
    left_rate: float
    ci_low: float
    ci_high: float
    p_value: float  # exact binomial test of left_rate = 0.5


def position_bias(votes: Sequence[Mapping], criterion: str) -> PositionBias:
    """How often the left clip is preferred among decisive votes; 0.5 when position is ignored
    (left/right is randomised, so any departure is the evaluators' bias)."""
    answers = [v.get(answer_column(criterion)) for v in pair_votes(votes)]
    left = sum(a == "left" for a in answers)
    right = sum(a == "right" for a in answers)
    n = left + right
    low, high = wilson_interval(left, n)
    return PositionBias(criterion, n, left, left / n if n else math.nan, low, high, sign_test(left, right))


# --- Bradley–Terry ------------------------------------------------------------------


def win_matrix(votes: Sequence[Mapping], criterion: str, systems: Sequence[str]) -> np.ndarray:
    """wins[i, j] = decisive votes where system i beat system j."""
    index = {s: i for i, s in enumerate(systems)}
    wins = np.zeros((len(systems), len(systems)))
    for v in pair_votes(votes):
        outcome = _outcome(v, criterion)
        if outcome is None or outcome[0] != "win":
            continue
        winner = outcome[1]
        loser = v["right_system"] if winner == v["left_system"] else v["left_system"]
        if winner in index and loser in index:
            wins[index[winner], index[loser]] += 1
    return wins


def bradley_terry(wins: np.ndarray, prior: float = BT_PRIOR, max_iter: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Log-strengths θ (mean 0) from a win matrix by Hunter's MM updates:
    p_i ← W_i / Σ_j n_ij / (p_i + p_j)."""
    k = wins.shape[0]
    w = wins + prior * (1 - np.eye(k))
    games = w + w.T
    total_wins = w.sum(axis=1)
    p = np.ones(k)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = total_wins / denom
        new /= np.exp(np.mean(np.log(new)))  # fix the scale: geometric mean 1
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    theta = np.log(p)
    return theta - theta.mean()


@dataclass
class Rating:
    criterion: str
    system: str
    theta: float  # log-strength, mean 0 over systems
    boot_low: float
    boot_high: float
    decisive_votes: int


def bt_ratings(votes: Sequence[Mapping], criterion: str, systems: Sequence[str], n_boot: int = 300,
               seed: int = 0) -> list[Rating]:
    """Bradley–Terry ratings with a bootstrap over prompts."""
    pv = pair_votes(votes)
    prompts = sorted({v["prompt_id"] for v in pv}, key=str)
    per_prompt = np.stack([
        win_matrix([v for v in pv if v["prompt_id"] == p], criterion, systems) for p in prompts
    ]) if prompts else np.zeros((0, len(systems), len(systems)))
    theta = bradley_terry(per_prompt.sum(axis=0) if prompts else np.zeros((len(systems),) * 2))
    lows = highs = np.full(len(systems), math.nan)
    if prompts and n_boot > 0:
        weights = prompt_bootstrap_weights(len(prompts), n_boot, seed)
        boots = np.stack([bradley_terry(np.tensordot(w, per_prompt, axes=1)) for w in weights])
        lows, highs = np.percentile(boots, [2.5, 97.5], axis=0)
    played = (per_prompt.sum(axis=0) if prompts else np.zeros((len(systems),) * 2))
    decisive = played.sum(axis=0) + played.sum(axis=1)
    return [
        Rating(criterion, s, float(theta[i]), float(lows[i]), float(highs[i]), int(decisive[i]))
        for i, s in enumerate(systems)
    ]


# --- evaluators and attention checks -------------------------------------------------


def evaluator_summary(votes: Sequence[Mapping], attention_fail_limit: int,
                      min_vote_ms: float = MIN_VOTE_MS) -> list[dict]:
    """Per evaluator: votes, attention checks and failures, side preference, time to vote, and
    `careless` with its `flags` (failed checks, one side, too fast; the module doc has the rules)."""
    rows: dict[str, dict] = {}
    for v in votes:
        r = rows.setdefault(v["evaluator"], {"evaluator": v["evaluator"], "votes": 0, "pair_votes": 0,
                                              "attention_checks": 0, "attention_failures": 0,
                                              "chose_left": 0, "chose_right": 0, "_times": []})
        r["votes"] += 1
        r["_times"].append(v.get("time_to_vote_ms") or 0)
        if v.get("kind", "pair") == "pair":
            r["pair_votes"] += 1
            answer = v.get(answer_column("overall"))
            r["chose_left"] += answer == "left"
            r["chose_right"] += answer == "right"
        else:
            r["attention_checks"] += 1
            r["attention_failures"] += int(bool(v.get("attention_failed")))
    tested = sum(1 for r in rows.values() if r["chose_left"] + r["chose_right"] > 0)
    position_threshold = POSITION_ALPHA / max(tested, 1)
    out = []
    for r in sorted(rows.values(), key=lambda r: (-r["votes"], r["evaluator"])):
        times = r.pop("_times")
        r["median_time_to_vote_ms"] = int(np.median(times))
        r["fast_votes"] = int(sum(t < min_vote_ms for t in times))
        r["side_p_value"] = sign_test(r["chose_left"], r["chose_right"])
        flags = []
        if r["attention_failures"] >= attention_fail_limit:
            flags.append("failed attention checks")
        if r["chose_left"] + r["chose_right"] > 0 and r["side_p_value"] < position_threshold:
            flags.append(f"picks {'left' if r['chose_left'] > r['chose_right'] else 'right'}")
        if r["median_time_to_vote_ms"] < min_vote_ms:
            flags.append("too fast")
        r["careless"] = bool(flags)
        r["flags"] = ", ".join(flags)
        out.append(r)
    return out


def attention_summary(votes: Sequence[Mapping]) -> dict:
    checks = [v for v in votes if v.get("kind", "pair") != "pair"]
    by_kind = Counter(v["kind"] for v in checks)
    failed = Counter(v["kind"] for v in checks if v.get("attention_failed"))
    return {
        "checks": len(checks), "failures": sum(failed.values()),
        "by_kind": {k: {"checks": by_kind[k], "failures": failed[k]} for k in sorted(by_kind)},
    }


# --- automatic metrics vs votes -------------------------------------------------------


def metric_vote_agreement(votes: Sequence[Mapping], clip_metrics: Mapping[ClipKey, Mapping[str, float]],
                          criterion: str) -> list[dict]:
    """Spearman correlation, over compared clip pairs, between a metric's delta (A − B)
    and the vote margin for A ((wins A − wins B) / votes on that pair).

    A positive ρ means the metric rises with human preference (a "higher is better" metric
    that agrees); a negative ρ is agreement for a "lower is better" metric such as an error.
    """
    margins: dict[tuple, list[int]] = defaultdict(list)
    for v in pair_votes(votes):
        outcome = _outcome(v, criterion)
        if outcome is None:
            continue
        a, b = sorted((v["left_system"], v["right_system"]))
        score = 0 if outcome[0] != "win" else (1 if outcome[1] == a else -1)
        margins[(v["prompt"], v["seed"], a, b)].append(score)
    metric_names = sorted({m for values in clip_metrics.values() for m in values})
    out = []
    for name in metric_names:
        deltas, margin = [], []
        for (prompt, seed, a, b), scores in margins.items():
            ma = clip_metrics.get((prompt, seed, a), {}).get(name)
            mb = clip_metrics.get((prompt, seed, b), {}).get(name)
            if ma is None or mb is None:
                continue
            deltas.append(ma - mb)
            margin.append(float(np.mean(scores)))
        rho = p = math.nan
        if len(deltas) >= 3 and np.ptp(deltas) > 0 and np.ptp(margin) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = sps.spearmanr(deltas, margin)
            rho, p = float(result.statistic), float(result.pvalue)
        out.append({"criterion": criterion, "metric": name, "n_pairs": len(deltas), "spearman_rho": rho, "p_value": p})
    return out


def clip_metric_table(clip_metrics: Mapping[ClipKey, Mapping[str, float]], systems: Sequence[str]) -> list[dict]:
    """Mean automatic metric per system, to show beside the human result."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (_, _, system), values in clip_metrics.items():
        for name, value in values.items():
            sums[(system, name)].append(float(value))
    names = sorted({n for _, n in sums})
    return [{"system": s, **{n: float(np.mean(sums[(s, n)])) if sums[(s, n)] else math.nan for n in names}}
            for s in systems]


# --- the results page -----------------------------------------------------------------


def summarize(
    votes: Sequence[Mapping],
    systems: Sequence[str],
    attention_fail_limit: int = 2,
    clip_metrics: Mapping[ClipKey, Mapping[str, float]] | None = None,
    exclude_careless: bool = False,
    n_boot: int = 2000,
    n_boot_bt: int = 300,
    seed: int = 0,
    min_vote_ms: float = MIN_VOTE_MS,
) -> dict:
    """Everything the results page shows, as JSON-ready data."""
    evaluators = evaluator_summary(votes, attention_fail_limit, min_vote_ms)
    careless = {e["evaluator"] for e in evaluators if e["careless"]}
    used = [v for v in votes if v["evaluator"] not in careless] if exclude_careless else list(votes)
    pairs = list(itertools.combinations(systems, 2))
    result: dict = {
        "systems": list(systems), "n_votes": len(votes), "n_votes_used": len(used),
        "n_pair_votes": len(pair_votes(used)), "excluded_careless": sorted(careless) if exclude_careless else [],
        "headline": [], "pairwise": [], "by_category": [], "position_bias": [], "bradley_terry": [],
        "evaluators": evaluators, "attention": attention_summary(votes), "metric_agreement": [],
        "clip_metrics": clip_metric_table(clip_metrics, systems) if clip_metrics else [],
    }
    for criterion in CRITERIA:
        for a, b in pairs:
            result["pairwise"].append(asdict(pairwise(used, criterion, a, b, n_boot=n_boot, seed=seed)))
            for category in CATEGORIES:
                subset = [v for v in used if v.get("category") == category]
                if pair_votes(subset):
                    row = asdict(pairwise(subset, criterion, a, b, n_boot=n_boot, seed=seed))
                    result["by_category"].append({"category": category, **row})
        result["position_bias"].append(asdict(position_bias(used, criterion)))
        result["bradley_terry"] += [asdict(r) for r in bt_ratings(used, criterion, systems, n_boot_bt, seed)]
        if clip_metrics:
            result["metric_agreement"] += metric_vote_agreement(used, clip_metrics, criterion)
    result["headline"] = [challenger_view(r) for r in result["pairwise"] if r["criterion"] == "overall"]
    return _json_safe(result)


def challenger_view(row: Mapping) -> dict:
    """A pairwise row seen from its later system (B, e.g. the tuned one) against A (the reference)."""
    def flip(x):
        return math.nan if x is None or (isinstance(x, float) and math.isnan(x)) else 1.0 - x
    return {"criterion": row["criterion"], "system": row["system_b"], "against": row["system_a"],
            "wins": row["wins_b"], "losses": row["wins_a"], "both_good": row["both_good"],
            "both_bad": row["both_bad"], "win_rate": flip(row["win_rate_a"]),
            "ci_low": flip(row["ci_high"]), "ci_high": flip(row["ci_low"]), "sign_test_p": row["sign_test_p"]}


def headline_text(summary: Mapping) -> str:
    """One sentence per compared pair, from the later system's side (markdown)."""
    lines = []
    for h in summary.get("headline", []):
        if h["win_rate"] is None or (isinstance(h["win_rate"], float) and math.isnan(h["win_rate"])):
            lines.append(f"**{h['system']}** vs **{h['against']}**: no decisive overall vote yet.")
            continue
        lines.append(
            f"**{h['system']}** wins {100 * h['win_rate']:.0f} % of decisive overall votes against "
            f"**{h['against']}** ({h['wins']}–{h['losses']}, Wilson 95 % CI {100 * h['ci_low']:.0f}–"
            f"{100 * h['ci_high']:.0f} %, sign test p = {h['sign_test_p']:.2g}).")
    return "\n\n".join(lines)


def _json_safe(value):
    """NaN → None, numpy scalars → Python, so the summary is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- export ---------------------------------------------------------------------------


def export_votes_csv(votes: Sequence[Mapping], path: Path, fields: Sequence[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(votes)
    return path


def export_votes_json(votes: Sequence[Mapping], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(votes), indent=1, default=str), encoding="utf-8")
    return path


# --- figures (plotly imported lazily) -------------------------------------------------


def _err(rows: list[dict], value: str, low: str, high: str) -> dict:
    def nz(x):
        return math.nan if x is None else x
    return dict(
        type="data", symmetric=False,
        array=[nz(r[high]) - nz(r[value]) for r in rows], arrayminus=[nz(r[value]) - nz(r[low]) for r in rows],
    )


def _challenger_rows(rows: Sequence[Mapping]) -> list[dict]:
    return [{**challenger_view(r), **({"category": r["category"]} if "category" in r else {})} for r in rows]


def fig_win_rates(summary: dict):
    """How often the later system of each pair (e.g. the tuned one) wins against the earlier one,
    per criterion, with Wilson 95 % error bars; one named bar series per pair."""
    import plotly.graph_objects as go

    fig = go.Figure()
    by_pair: dict[tuple, list[dict]] = defaultdict(list)
    for row in _challenger_rows(summary["pairwise"]):
        by_pair[(row["system"], row["against"])].append(row)
    for (b, a), rows in by_pair.items():
        fig.add_bar(x=[r["criterion"] for r in rows], y=[r["win_rate"] for r in rows], name=f"{b} wins vs {a}",
                    error_y=_err(rows, "win_rate", "ci_low", "ci_high"),
                    customdata=[[r["wins"], r["losses"], r["sign_test_p"]] for r in rows],
                    hovertemplate=f"{b} wins %{{customdata[0]}}, {a} wins %{{customdata[1]}}"
                                  "<br>win rate %{y:.2f}<br>sign test p=%{customdata[2]:.3g}<extra></extra>")
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="no preference", annotation_position="bottom right")
    title = ("Win rate against the reference" if len(by_pair) != 1 else
             "How often {} wins against {}".format(*next(iter(by_pair))))
    fig.update_layout(title=title, showlegend=True, legend=dict(orientation="h", y=-0.2),
                      yaxis=dict(range=[0, 1], title="win rate (decisive votes, 95 % CI)"),
                      barmode="group", height=380)
    return fig


def fig_outcomes(summary: dict):
    """Stacked shares of the answers per criterion, with the systems named."""
    import plotly.graph_objects as go

    fig = go.Figure()
    rows = summary["pairwise"]
    labels = [f"{r['criterion']}<br>{r['system_b']} vs {r['system_a']}" for r in rows]
    share = lambda r, k: r[k] / r["n_votes"] if r["n_votes"] else 0  # noqa: E731
    two = len({(r["system_a"], r["system_b"]) for r in rows}) == 1
    for key, name, colour in (("wins_b", f"{rows[0]['system_b']} better" if rows and two else "later system better",
                               "#2ca02c"),
                              ("wins_a", f"{rows[0]['system_a']} better" if rows and two else "earlier system better",
                               "#1f77b4"),
                              ("both_good", "both good", "#bcbd22"), ("both_bad", "both bad", "#7f7f7f")):
        fig.add_bar(x=labels, y=[share(r, key) for r in rows], name=name, marker_color=colour)
    fig.update_layout(barmode="stack", title="Answers", yaxis=dict(title="share of votes", range=[0, 1]), height=360,
                      showlegend=True)
    return fig


def fig_categories(summary: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    rows = _challenger_rows([r for r in summary["by_category"] if r["criterion"] == "overall"])
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["system"], r["against"])].append(r)
    for (b, a), rs in groups.items():
        fig.add_bar(x=[r["category"] for r in rs], y=[r["win_rate"] for r in rs], name=f"{b} wins vs {a}",
                    error_y=_err(rs, "win_rate", "ci_low", "ci_high"))
    fig.add_hline(y=0.5, line_dash="dot")
    fig.update_layout(title="Overall win rate by prompt category", yaxis=dict(range=[0, 1], title="win rate"),
                      barmode="group", height=360, showlegend=True)
    return fig


def fig_bradley_terry(summary: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    rows = summary["bradley_terry"]
    for criterion in CRITERIA:
        rs = [r for r in rows if r["criterion"] == criterion]
        if rs:
            fig.add_scatter(x=[r["system"] for r in rs], y=[r["theta"] for r in rs], mode="markers", name=criterion,
                            error_y=_err(rs, "theta", "boot_low", "boot_high"))
    fig.update_layout(title="Bradley–Terry log-strength (bootstrap 95 % CI over prompts)", height=360,
                      yaxis=dict(title="θ"))
    return fig


def fig_evaluators(summary: dict):
    """Votes per evaluator: pair votes, attention checks passed (green) and failed (red)."""
    import plotly.graph_objects as go

    rows = summary["evaluators"]
    names = [r["evaluator"] + (" ⚑" if r.get("careless") else "") for r in rows]
    fig = go.Figure()
    fig.add_bar(x=names, y=[r["pair_votes"] for r in rows], name="pair votes", marker_color="#9ecae1",
                customdata=[[r.get("flags") or "—"] for r in rows],
                hovertemplate="%{y} pair votes<br>flags: %{customdata[0]}<extra></extra>")
    fig.add_bar(x=names, y=[r["attention_checks"] - r["attention_failures"] for r in rows],
                name="checks passed", marker_color="#2ca02c")
    fig.add_bar(x=names, y=[r["attention_failures"] for r in rows], name="checks failed", marker_color="#d62728")
    fig.update_layout(barmode="stack", title="Votes per evaluator (⚑ flagged as careless)", height=320,
                      showlegend=True)
    return fig
