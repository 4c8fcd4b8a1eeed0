"""Plots of a fit: force parity on held-out frames and every fitted loss channel."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .topology import SPECIES  # noqa: E402


def parity_plot(results: dict, species, path) -> Path:
    """Predicted against CP2K force components on the held-out frames, per mode and species."""
    modes = list(results)
    fig, axes = plt.subplots(len(modes), len(SPECIES), figsize=(4.2 * len(SPECIES), 4 * len(modes)),
                             squeeze=False)
    for r, mode in enumerate(modes):
        res = results[mode]
        for s, name in enumerate(SPECIES):
            ax = axes[r, s]
            ref = res.test_reference[:, species == s].ravel()
            pred = res.test_predicted[:, species == s].ravel()
            ax.hexbin(ref, pred, gridsize=80, bins="log", mincnt=1, cmap="viridis")
            lim = np.percentile(np.abs(ref), 99.9)
            ax.plot([-lim, lim], [-lim, lim], "r-", lw=0.8)
            m = res.model.fit_metrics["held_out"][name]
            ax.set_title(f"{mode}: {name} agents\nRMSE {m['rmse']:.1f} kJ/mol/nm "
                         f"({100 * m['relative_rmse']:.1f} %)", fontsize=10)
            ax.set_xlabel("CP2K force component (kJ/mol/nm)")
            ax.set_ylabel("model force component (kJ/mol/nm)")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def channel_plot(models: dict, path) -> Path:
    """Every fitted loss channel against its invariant, one panel per invariant kind."""
    panels = [("inter", "intermolecular pair", "r (nm)"), ("intra", "intramolecular pair", "r (nm)"),
              ("angle", "H-O-H angle of own molecule", "angle (deg)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    styles = {"agent": "-", "reciprocal": "--"}
    for ax, (kind, title, xlabel) in zip(axes, panels):
        for mode, model in models.items():
            for ch in model.channels:
                if ch.kind != kind or (mode == "reciprocal" and ch.agent == "H" and ch.neighbour == "O"):
                    continue
                x = np.linspace(ch.x0, ch.x1, 300)
                y = ch(x)
                if kind == "inter":
                    from .kernels import switch

                    y = y * np.array([switch(v, model.r_switch, model.r_cut)[0] for v in x])
                label = ch.name if mode == "agent" else f"{ch.name} (reciprocal)"
                xs = np.degrees(x) if kind == "angle" else x
                ax.plot(xs, y - (y[-1] if kind != "inter" else 0), styles.get(mode, "-"), label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss contribution (kJ/mol)")
        if kind == "inter":
            ax.set_ylim(-15, 25)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
