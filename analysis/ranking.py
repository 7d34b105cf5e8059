"""Ranking vs outcome: how the transferability ranking of `xstilts rank` (read back from its MLflow
run, metrics rank/<method>/<target>/<intermediate>) compares with what the study measured (each
intermediate's English-dev-selected all-language dev score), per target: NDCG@3, Regret@1 and
Regret@3 (xstilts.tasks.transferability), and the phase-2 trainings a top-3 pruning would have run."""
from __future__ import annotations

from xstilts.tasks import NONE
from xstilts.tasks.transferability import ndcg_at_k, regret_at_k

RANK_KIND = "rank"  # xstilts.study.rank.RUN_KIND


def read_rankings(study) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {target: {intermediate: score}}} of the study's latest ranking run ({} without one)."""
    from xstilts.mlflow_store import kind_rows

    rows = kind_rows(study.tracking_uri, study.experiment_id, RANK_KIND, study.name)
    if not rows:
        return {}
    found: dict = {}
    for key, value in rows[0].metrics.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "rank":
            found.setdefault(parts[1], {}).setdefault(parts[2], {})[parts[3]] = value
    return found


def ranking_rows(summary, rankings: dict) -> list[dict]:
    """Per (method, target): predicted and measured orders and the ranking metrics."""
    rows = []
    for method, targets in sorted(rankings.items()):
        for target, scores in sorted(targets.items()):
            measured = {i: c.selected_all_languages() for i in summary.intermediates
                        if (c := summary.cell(i, target)) is not None and c.selected_all_languages() is not None}
            predicted = [name for name in sorted(scores, key=lambda n: -scores[n]) if name in measured]
            if len(measured) < 2 or not predicted:
                continue
            trainable = [name for name in measured if name != NONE]
            rows.append({"method": method, "target": target, "predicted": predicted,
                         "measured": sorted(measured, key=lambda n: -measured[n]),
                         "ndcg@3": ndcg_at_k(predicted, measured, 3), "regret@1": regret_at_k(predicted, measured, 1),
                         "regret@3": regret_at_k(predicted, measured, 3),
                         "phase2_with_top3": min(3, len(trainable)), "phase2_all": len(trainable)})
    return rows


def ranking_table(summary, rankings: dict):
    from xstilts.analysis.tables import Table

    rows = ranking_rows(summary, rankings)
    if not rows:
        return None
    body = [[r["method"], r["target"], " > ".join(r["predicted"]), " > ".join(r["measured"]), f"{r['ndcg@3']:.3f}",
             f"{r['regret@1']:.2f}", f"{r['regret@3']:.2f}", f"{r['phase2_with_top3']} of {r['phase2_all']}"]
            for r in rows]
    return Table("ranking_vs_outcome", "Ranking vs outcome: predicted order next to the measured all-language dev order",
                 ["method", "target", "predicted", "measured", "NDCG@3", "Regret@1 (%)", "Regret@3 (%)",
                  "phase-2 trainings (top 3)"], body,
                 notes=["predicted: `xstilts rank`'s order (only the intermediates the study measured); measured: the "
                        "English-dev-selected trial's all-language dev mean per intermediate. Regret@k: how far the best "
                        "measured score among the top k predicted falls short of the best, in percent."])
