"""Plotly figures: camera paths with frusta, training curves."""

from __future__ import annotations

import numpy as np

PALETTE = {"target": "#636363", "baseline": "#1f77b4", "tuned": "#d62728"}


def _frustum_lines(c2w: np.ndarray, size: float) -> tuple[list, list, list]:
    """Line segments of a small pyramid frustum for one OpenCV camera (None separates segments)."""
    corners_cam = np.array([[-1, -0.75, 1.5], [1, -0.75, 1.5], [1, 0.75, 1.5], [-1, 0.75, 1.5]]) * size
    c = c2w[:3, 3]
    w = corners_cam @ c2w[:3, :3].T + c
    xs, ys, zs = [], [], []
    for k in range(4):
        for a, b in ((c, w[k]), (w[k], w[(k + 1) % 4])):
            xs += [a[0], b[0], None]
            ys += [a[1], b[1], None]
            zs += [a[2], b[2], None]
    return xs, ys, zs


def trajectory_figure(paths: dict[str, np.ndarray], title: str = "Camera paths", frusta: int = 5):
    """3D plot of camera centres (F, 4, 4 c2w each, OpenCV axes) with frusta; start and end marked.

    The view puts OpenCV's +y (down) at the bottom, so the plot reads like the scene.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    extent = max([np.ptp(p[:, :3, 3], axis=0).max() for p in paths.values()] + [1e-3])
    size = 0.08 * max(extent, 0.3)
    for name, c2w in paths.items():
        color = PALETTE.get(name, None)
        cen = c2w[:, :3, 3]
        dash = "dash" if name == "target" else "solid"
        fig.add_trace(go.Scatter3d(x=cen[:, 0], y=cen[:, 2], z=-cen[:, 1], mode="lines+markers", name=name,
                                   line=dict(color=color, width=5, dash=dash), marker=dict(size=2, color=color)))
        idx = np.unique(np.linspace(0, len(c2w) - 1, min(frusta, len(c2w))).round().astype(int))
        xs, ys, zs = [], [], []
        for i in idx:
            fx, fy, fz = _frustum_lines(c2w[i], size)
            xs += fx
            ys += fy
            zs += fz
        fig.add_trace(go.Scatter3d(x=xs, y=[v for v in zs], z=[None if v is None else -v for v in ys], mode="lines",
                                   line=dict(color=color, width=2), name=f"{name} frusta", showlegend=False))
        fig.add_trace(go.Scatter3d(x=[cen[0, 0], cen[-1, 0]], y=[cen[0, 2], cen[-1, 2]], z=[-cen[0, 1], -cen[-1, 1]],
                                   mode="markers+text", text=["start", "end"], textposition="top center",
                                   marker=dict(size=[6, 9], color=color, symbol=["circle", "diamond"]),
                                   showlegend=False, name=f"{name} ends"))
    fig.update_layout(title=title, height=420, margin=dict(l=0, r=0, t=40, b=0), legend=dict(orientation="h"),
                      scene=dict(xaxis_title="x (right)", yaxis_title="z (forward)", zaxis_title="up",
                                 aspectmode="data", camera=dict(eye=dict(x=-1.2, y=-1.6, z=0.9))))
    return fig


def curves_figure(rows: list[dict], keys: list[str], title: str = "", x: str = "step"):
    """Line plot of metric keys over steps from metrics.jsonl rows (missing values skipped)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for k in keys:
        pts = [(r[x], r[k]) for r in rows if x in r and isinstance(r.get(k), (int, float)) and np.isfinite(r[k])]
        if pts:
            xs, ys = zip(*pts)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=k))
    fig.update_layout(title=title, height=320, margin=dict(l=40, r=10, t=40, b=30), xaxis_title=x)
    return fig
