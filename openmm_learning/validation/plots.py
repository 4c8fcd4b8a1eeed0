"""Plots of a fit: force parity on held-out frames and every fitted loss channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io.topology import SPECIES


def parity_plot(results: dict, species, path) -> Path:
    """Predicted against CP2K force components on the held-out frames, per mode and species."""
    modes = list(results)
    fig = Figure(figsize=(4.2 * len(SPECIES), 4 * len(modes)))  # no pyplot: no global backend state
    axes = fig.subplots(len(modes), len(SPECIES), squeeze=False)
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
    return Path(path)


def channel_plot(models: dict, path) -> Path:
    """Every term of each model's plan against its invariant, one panel per invariant, over
    the fitted range and a little beyond (where the linear extension and wall take over)."""
    panels = [("pair", "intermolecular pair", "r (nm)"), ("bond", "own-molecule distance", "r (nm)"),
              ("angle", "H-O-H angle of own molecule", "angle (deg)")]
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    styles = {"agent": "-", "reciprocal": "--"}
    for ax, (invariant, title, xlabel) in zip(axes, panels):
        for mode, model in models.items():
            for term in model.terms():
                if term.invariant != invariant:
                    continue
                f = term.function
                margin = 0.1 * (f.x1 - f.x0)
                x = np.linspace(f.x0 - margin, f.x1 if invariant == "pair" else f.x1 + margin, 300)
                y, _ = term.energy(x)
                xs = np.degrees(x) if invariant == "angle" else x
                ax.plot(xs, y - (0 if invariant == "pair" else y.min()), styles.get(mode, "-"),
                        label=f"{term.name}, {mode}")
                ax.axvline(np.degrees(f.x0) if invariant == "angle" else f.x0, color="0.8", lw=0.5)  # fitted from here
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss contribution (kJ/mol)")
        if invariant == "pair":
            ax.set_ylim(-15, 25)
        else:
            ax.set_ylim(-2, 60)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
