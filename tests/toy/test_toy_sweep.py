"""Reading the trade-off fronts at equal outliers: interpolation along each method's curve."""

import pytest

from autoguidance.toy.sweep import COMPARED, at_equal_outliers, comparison_table


def point(w, outliers, depth_tv, recall=0.9, branch_tv=0.1, outer=1.0):
    return {"w": w, "outlier_fraction": outliers, "depth_tv": depth_tv, "recall": recall,
            "branch_tv": branch_tv, "outer_depth_ratio": outer}  # fmt: skip


def test_other_methods_are_read_where_they_reach_autoguidance_outliers():
    curves = {
        "autoguidance": [point(1, 0.10, 0.01), point(2, 0.06, 0.02), point(3, 0.04, 0.03)],
        # Truncation falls monotonically: 0.06 lies halfway between its points at 1.1 and 1.2.
        "truncation": [point(1, 0.10, 0.01), point(1.1, 0.08, 0.05, 0.8), point(1.2, 0.04, 0.15, 0.6)],
        # CFG first falls and then rises again; it never gets below 0.05.
        "cfg": [point(1, 0.10, 0.01), point(2, 0.05, 0.2), point(3, 0.09, 0.4)],
    }
    rows = at_equal_outliers(curves)
    assert [r["autoguidance"]["w"] for r in rows] == [2, 3]  # w = 1 is the shared unguided point
    first = rows[0]
    assert first["outliers"] == 0.06
    assert first["truncation"]["w"] == pytest.approx(1.15)
    assert first["truncation"]["depth_tv"] == pytest.approx(0.10)
    assert first["truncation"]["recall"] == pytest.approx(0.7)
    # CFG reaches 0.06 on its falling stretch first (between w = 1 and 2, 4/5 of the way).
    assert first["cfg"]["w"] == pytest.approx(1.8)
    assert set(first["cfg"]) == {"w", *COMPARED}
    second = rows[1]
    assert second["truncation"]["w"] == pytest.approx(1.2) and second["cfg"] is None
    table = comparison_table({"at_equal_outliers": rows})
    assert "never this few outliers" in table and table.count("\n") == 6
