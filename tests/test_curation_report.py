"""The curation report: accuracy against the fraction kept, curated vs random, drawn and tabulated."""

from __future__ import annotations

import numpy as np

from medfm.eval.reports.curation import curation_figure, write_curation_report


def estimate(value: float) -> dict[str, float]:
    return {"value": value, "low": value - 0.05, "high": value + 0.04}


def result() -> dict:
    curves = {"prototypes": [{"fraction": f, "seed": 0, "kept": int(200 * f), "accuracy": estimate(a)}
                             for f, a in ((0.1, 0.8), (0.5, 0.85), (1.0, 0.9))],
              "kcenter": [{"fraction": 0.1, "seed": 0, "kept": 20, "accuracy": None},
                          {"fraction": 0.5, "seed": 0, "kept": 100, "accuracy": estimate(0.7)},
                          {"fraction": 1.0, "seed": 0, "kept": 200, "accuracy": estimate(0.9)}],
              "random": [{"fraction": f, "seed": s, "kept": int(200 * f), "accuracy": estimate(0.6 + 0.1 * s + f / 10)}
                         for f in (0.1, 0.5, 1.0) for s in (0, 1)]}
    return {"encoder": "enc", "weights_sha256": "abc", "task": "region", "pool": 200, "test": 50, "test_groups": 40,
            "curves": curves}


def test_the_figure_draws_each_curve_at_its_accuracies_and_the_random_mean():
    fig = curation_figure(result())
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    lines.update({bars.get_label(): bars.lines[0] for bars in ax.containers})  # each curve with its error bars
    assert np.allclose(lines["prototypes"].get_ydata(), [0.8, 0.85, 0.9])
    assert np.allclose(lines["k-center greedy"].get_ydata(), [0.7, 0.9])  # the one-class subset has no accuracy
    assert np.allclose(lines["random, mean of 2 seeds"].get_ydata(), [0.66, 0.7, 0.75])
    assert np.allclose(lines["random, mean of 2 seeds"].get_xdata(), [10, 50, 100])
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["10 %", "50 %", "100 %"]


def test_the_page_holds_the_plot_and_every_point_with_its_interval(tmp_path):
    page = write_curation_report(result(), tmp_path / "curation.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "http" not in page.replace("http-equiv", "")
    assert "0.8 [0.75, 0.84]" in page and "– (one class kept)" in page
    assert page.count("<tr>") == 1 + 3 + 3 + 6  # header, prototypes, k-center, random (2 seeds × 3)
