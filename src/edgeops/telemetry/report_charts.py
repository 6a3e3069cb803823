"""The drift report's charts, as base64 PNGs for ``data:image/png;base64,`` markdown images (the Prefect UI renders
markdown images but not inline ``<svg>``). matplotlib runs on the Agg backend: no display needed.

Charts are small on purpose (80 dpi, at most trends.MAX_POINTS points in time and trends.MAX_SERIES panels):
the whole report is one markdown artifact, stored and sent to the browser at every look.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from edgeops.telemetry.drift import PREDICTION
from edgeops.telemetry.performance_trends import PerformanceTrend
from edgeops.telemetry.trends import QUANTILES, EvidenceTrend, HealthPoint

DRIFT, CALM, EPISODE, GREY, LABELS = "#d62728", "#1f77b4", "#f4c7c3", "#555555", "#d95f02"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(fig: Any) -> str:
    """The figure as a 64-colour palette PNG: a quarter of the bytes of matplotlib's RGBA PNG for these charts,
    with no visible difference (Pillow comes with matplotlib)."""
    from PIL import Image

    plt = _pyplot()
    raw, out = io.BytesIO(), io.BytesIO()
    fig.savefig(raw, format="png")
    plt.close(fig)
    raw.seek(0)
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=64).save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode()


def _time_axis(ax: Any) -> None:
    from matplotlib import dates

    locator = dates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))


def _naive(ts: datetime) -> datetime:
    """matplotlib's date axis in UTC: aware datetimes converted, then the zone dropped."""
    return ts.astimezone(UTC).replace(tzinfo=None)


def series_label(name: str) -> str:
    return "predictions" if name == PREDICTION else name


def drift_trend_chart(trend: EvidenceTrend, shown: Sequence[int], span: tuple[datetime, datetime]) -> str:
    """One small panel per series: its evidence (−log10 p) over time against the decision line, points above it in
    red, the open drift episode shaded on the series it holds. Evidence above twice the decision level is drawn at
    that height (▲)."""
    plt = _pyplot()
    cols = 2 if len(shown) > 3 else 1
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9 if cols == 2 else 7, 1.25 * rows + 0.9), dpi=80, sharex=True,
                             sharey=True, squeeze=False)
    top = 2.0 * trend.decision
    times = np.array([_naive(t) for t in trend.times], dtype="datetime64[s]")
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
        axes[rows - 2, ax.get_subplotspec().colspan.start].xaxis.set_tick_params(labelbottom=True)
    for ax, i in zip(axes.flat, shown, strict=False):
        values = trend.evidence[:, i]
        clipped = np.minimum(values, top)
        above = values > trend.decision
        if trend.opened is not None and trend.series[i] in trend.drifted:
            ax.axvspan(_naive(trend.opened), _naive(span[1]), color=EPISODE, lw=0)
        ax.plot(times, clipped, color=CALM, lw=0.9)
        over = values > top
        ax.scatter(times[above & ~over], values[above & ~over], color=DRIFT, s=9, zorder=3)
        ax.scatter(times[over], clipped[over], color=DRIFT, marker="^", s=22, zorder=4)
        ax.axhline(trend.decision, color=GREY, ls="--", lw=0.8)
        ax.set_ylim(0, top * 1.08)
        ax.set_title(series_label(trend.series[i]), fontsize=9, loc="left", pad=2,
                     color=DRIFT if above.any() else "black")
        ax.tick_params(labelsize=7)
        _time_axis(ax)
    ax0 = axes.flat[0]
    ax0.set_xlim(_naive(span[0]), _naive(span[1]))
    fig.supylabel("−log10 p", fontsize=8)
    fig.tight_layout(h_pad=0.4, w_pad=0.6)
    return _png(fig)


def health_chart(points: Sequence[HealthPoint], bucket_s: float, max_error_rate: float,
                 span: tuple[datetime, datetime]) -> str:
    """Requests, latency p50/p95/p99 and error rate per bucket (``points`` not empty), on one time axis."""
    plt = _pyplot()
    fig, (req, lat, err) = plt.subplots(3, 1, figsize=(7, 4.6), dpi=80, sharex=True,
                                        gridspec_kw={"height_ratios": [1, 1.6, 1.2]})
    mid = timedelta(seconds=bucket_s / 2)
    times = np.array([_naive(p.start + mid) for p in points], dtype="datetime64[s]")
    req.fill_between(times, [p.count for p in points], step="mid", color="#9aa9b8", lw=0)
    req.set_ylim(0, None)
    req.set_ylabel("requests", fontsize=8)
    for q, style in zip(QUANTILES, ("-", "--", ":"), strict=True):
        values = [p.latency(q) for p in points]
        if any(v is not None for v in values):
            lat.plot(times, [np.nan if v is None else v for v in values], ls=style, color=CALM, lw=1, label=q)
    lat.set_ylabel("latency ms", fontsize=8)
    if lat.lines:
        lat.set_ylim(0, lat.get_ylim()[1] * 1.3)          # room for the legend above the lines
        lat.legend(fontsize=7, loc="upper left", ncols=3, frameon=False)
    rates = np.array([np.nan if p.error_rate is None else 100.0 * p.error_rate for p in points])
    err.plot(times, rates, color=DRIFT, lw=1, marker="." if len(points) < 40 else None)
    err.axhline(100.0 * max_error_rate, color=GREY, ls="--", lw=0.8)
    err.set_ylabel("errors %", fontsize=8)
    err.set_ylim(0, max(np.nanmax(rates) if np.isfinite(rates).any() else 0.0, 100.0 * max_error_rate) * 1.25)
    for ax in (req, lat, err):
        ax.tick_params(labelsize=7)
        _time_axis(ax)
    err.set_xlim(_naive(span[0]), _naive(span[1]))
    fig.tight_layout(h_pad=0.3)
    return _png(fig)


def performance_chart(trend: PerformanceTrend, end: datetime) -> str:
    """The fleet's estimate per hour as a line in its interval band, realized performance per bin as points with
    their interval (hollow: fewer labels than a verdict needs; a horizontal bar spans a bin of several hours),
    the release's test value (solid) and the degradation thresholds (dashed: the estimate's; dotted: the labels',
    drawn when it differs)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=80)
    half_hour = timedelta(minutes=30)
    values: list[float] = []
    if trend.estimated:
        hours = int((trend.estimated[-1].start - trend.estimated[0].start).total_seconds() // 3600) + 1
        grid = np.full((3, hours), np.nan)          # value, low, high per hour; gaps stay NaN and break the line
        for p in trend.estimated:
            i = int((p.start - trend.estimated[0].start).total_seconds() // 3600)
            grid[:, i] = (p.estimate.value, p.estimate.low, p.estimate.high)
        times = np.array([_naive(trend.estimated[0].start + half_hour + timedelta(hours=i)) for i in range(hours)],
                         dtype="datetime64[s]")
        ax.fill_between(times, grid[1], grid[2], color=CALM, alpha=0.22, lw=0, label="estimated, interval")
        ax.plot(times, grid[0], color=CALM, lw=1.1, marker="." if len(trend.estimated) < 30 else None, ms=4,
                label="estimated")
        values += [v for v in grid[1:].ravel() if np.isfinite(v)]
    if trend.realized:
        step = timedelta(hours=trend.step_hours)
        for enough in (True, False):
            chosen = [p for p in trend.realized if (p.realized.labelled >= trend.min_labels) == enough
                      and p.realized.value is not None]
            if not chosen:
                continue
            x = np.array([_naive(p.start + step / 2) for p in chosen], dtype="datetime64[s]")
            y = np.array([p.realized.value for p in chosen], dtype=float)
            low = np.array([p.realized.low if p.realized.low is not None else v for p, v in zip(chosen, y,
                                                                                                  strict=True)])
            high = np.array([p.realized.high if p.realized.high is not None else v for p, v in zip(chosen, y,
                                                                                                    strict=True)])
            ax.errorbar(x, y, yerr=[y - low, high - y], fmt="o", ms=3.5, color=LABELS, lw=0.9, capsize=0,
                        mfc=LABELS if enough else "white", zorder=3,
                        label="realized (labels)" if enough else f"realized, < {trend.min_labels} labels")
            if trend.step_hours > 1:      # the hours the bin pools
                ax.hlines(y, x - np.timedelta64(int(step.total_seconds() // 2), "s"),
                          x + np.timedelta64(int(step.total_seconds() // 2), "s"), color=LABELS, lw=0.9, zorder=3)
            values += [*low.tolist(), *high.tolist()]
    if trend.reference is not None:
        ax.axhline(trend.reference, color=GREY, lw=0.8, label=f"test {trend.reference:.3g}")
        values.append(trend.reference)
    if trend.estimate_threshold is not None:
        ax.axhline(trend.estimate_threshold, color=DRIFT, ls="--", lw=0.8,
                   label=f"threshold {trend.estimate_threshold:.3g}")
        values.append(trend.estimate_threshold)
    if trend.realized_threshold is not None and (trend.estimate_threshold is None
                                                 or abs(trend.realized_threshold - trend.estimate_threshold) > 1e-9):
        ax.axhline(trend.realized_threshold, color=DRIFT, ls=":", lw=0.9,
                   label=f"labels' threshold {trend.realized_threshold:.3g}")
        values.append(trend.realized_threshold)
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.1 * (hi - lo), 0.01)
        ax.set_ylim(max(lo - pad, 0.0), min(hi + pad, 1.005) if trend.metric == "accuracy" else hi + pad)
    ax.set_ylabel("accuracy" if trend.metric == "accuracy" else "MAE", fontsize=8)
    ax.tick_params(labelsize=7)
    _time_axis(ax)
    ax.set_xlim(_naive(trend.start), _naive(max(end, trend.start + timedelta(hours=1))))
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=4, fontsize=7, frameon=False, borderaxespad=0.2)
    fig.tight_layout()
    return _png(fig)


__all__ = ["drift_trend_chart", "health_chart", "performance_chart", "series_label"]
