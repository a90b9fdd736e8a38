"""The Train tab's DataFrames, built from TRL-style log rows (no trainer, no UI)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from alignlab.pipeline import plots


@pytest.fixture
def rows() -> list[dict]:
    return [
        {
            "step": 1,
            "loss": 0.69,
            "rewards/margins": 0.0,
            "rewards/chosen": 0.0,
            "rewards/rejected": 0.0,
            "rewards/accuracies": 0.0,
            "grad_norm": 3.0,
        },
        {
            "step": 2,
            "loss": 0.60,
            "rewards/margins": 0.2,
            "rewards/chosen": 0.15,
            "rewards/rejected": -0.05,
            "rewards/accuracies": 1.0,
            "grad_norm": 2.5,
        },
        {
            "step": 3,
            "loss": float("nan"),
            "rewards/margins": 0.4,
            "rewards/chosen": 0.3,
            "rewards/rejected": -0.1,
            "rewards/accuracies": 1.0,
            "grad_norm": 2.0,
        },
    ]


def test_each_plot_gets_one_point_per_logged_step(rows) -> None:
    assert plots.loss_frame(rows)["step"].tolist() == [1, 2]  # a NaN loss is left out, not plotted as 0
    assert plots.margin_frame(rows)["margin"].tolist() == [0.0, 0.2, 0.4]
    rewards = plots.rewards_frame(rows)
    assert list(rewards.columns) == ["step", "reward", "answer"]
    assert rewards[rewards.answer == "rejected"]["reward"].tolist() == [0.0, -0.05, -0.1]


def test_reward_accuracy_is_a_running_mean(rows) -> None:
    assert plots.running_accuracy(rows) == pytest.approx([0.0, 0.5, 2 / 3])
    assert plots.accuracy_frame(rows)["accuracy"].tolist() == pytest.approx([0.0, 0.5, 2 / 3])


def test_log_table_has_readable_columns_and_no_nan(rows) -> None:
    table = plots.log_table(rows)
    assert list(table.columns) == list(plots.LOG_COLUMNS)
    assert table["loss"].tolist()[:2] == [0.69, 0.6] and table["loss"].isna().tolist()[2]
    assert table["accuracy"].tolist()[-1] == pytest.approx(0.6667)


def test_empty_run_gives_empty_numeric_frames() -> None:
    for frame in plots.all_frames([]):
        assert isinstance(frame, pd.DataFrame) and frame.empty
    assert str(plots.loss_frame([]).dtypes["loss"]) == "float64"  # an empty plot keeps numeric axes
    assert plots.running_accuracy([{"loss": 1.0}]) and math.isnan(plots.running_accuracy([{"loss": 1.0}])[0])


def test_overlay_reads_each_methods_own_keys() -> None:
    from alignlab.pipeline.plots import overlay_frame

    kto = [{"step": 1, "loss": 0.5, "kl": 0.2, "rewards/margins": 0.3}, {"step": 2, "loss": 0.4, "kl": 0.25}]
    orpo = [{"step": 1, "loss": 2.0, "log_odds_ratio": -0.6, "rewards/margins": 0.01}]
    runs = [("A · KTO", kto, "kto"), ("B · ORPO", orpo, "orpo")]
    kl = overlay_frame(runs, "KL estimate (KTO, RLHF)")
    assert list(kl["run"]) == ["A · KTO", "A · KTO"] and list(kl["value"]) == [0.2, 0.25]  # ORPO logs no KL
    odds = overlay_frame(runs, "log-odds ratio (ORPO)")
    assert list(odds["run"]) == ["B · ORPO"]
    assert sorted(set(overlay_frame(runs, "loss")["run"])) == ["A · KTO", "B · ORPO"]
    assert overlay_frame(runs, "held-out accuracy").empty  # no probe in these rows
