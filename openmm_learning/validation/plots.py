"""Plots of a fit: force parity on held-out frames, every fitted loss channel, the learning
curve and what drives each agent."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.topology import SPECIES


def parity_plot(panels: dict, species, path) -> Path:
    """Predicted against CP2K force components, one row per {label: (reference, predicted)}
    (arrays (n_frames, n_atoms, 3), kJ/mol/nm), one column per species; fit results
    (FitResult: the held-out frames) may stand for the pairs."""
    from ..losses.fit import force_errors

    labels = list(panels)
    fig, axes = figure(len(labels), len(SPECIES), figsize=(4.2 * len(SPECIES), 4 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        pair = panels[label]
        reference, predicted = (pair.test_reference, pair.test_predicted) if hasattr(pair, "test_reference") \
            else pair
        errors = force_errors(reference, predicted, species)
        for s, name in enumerate(SPECIES):
            ax = axes[r, s]
            ref = reference[:, species == s].ravel()
            pred = predicted[:, species == s].ravel()
            ax.hexbin(ref, pred, gridsize=80, bins="log", mincnt=1, cmap="viridis")
            lim = np.percentile(np.abs(ref), 99.9)
            ax.plot([-lim, lim], [-lim, lim], "r-", lw=0.8)
            m = errors[name]
            ax.set_title(f"{label}: {name} agents\nRMSE {m['rmse']:.1f} kJ/mol/nm "
                         f"({100 * m['relative_rmse']:.1f} %)", fontsize=10)
            ax.set_xlabel("CP2K force component (kJ/mol/nm)")
            ax.set_ylabel("model force component (kJ/mol/nm)")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
    return save_figure(fig, path)


def channel_plot(models: dict, path) -> Path:
    """Every term of each model's plan against its invariant, one panel per invariant, over
    the fitted range and a little beyond (where the linear extension and wall take over)."""
    panels = [("pair", "intermolecular pair", "r (nm)"), ("bond", "own-molecule distance", "r (nm)"),
              ("angle", "H-O-H angle of own molecule", "angle (deg)")]
    fig, axes = figure(1, 3, figsize=(15, 4.5))
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
    return save_figure(fig, path)


def evaluation_frames_plot(per_frame: dict, path) -> Path:
    """A model's errors along a CP2K run (evaluate): force RMSE of O and H per frame, the
    committee's model deviation when there is one, frames with an invariant outside the
    fitted range shaded."""
    t = np.asarray(per_frame["time_ps"])
    dev = np.asarray(per_frame["committee_deviation"], float)
    rows = 2 if np.isfinite(dev).any() else 1
    fig, axes = figure(rows, 1, figsize=(9, 3.2 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for name in SPECIES:
        axes[0].plot(t, per_frame[f"rmse_{name}"], ".-", ms=3, lw=0.8, label=f"{name} agents")
    axes[0].set_ylabel("force RMSE (kJ/mol/nm)")
    if rows == 2:
        axes[1].plot(t, dev, ".-", ms=3, lw=0.8, color="C3")
        axes[1].set_ylabel("committee deviation\n(kJ/mol/nm)")
    outside = np.asarray(per_frame["out_of_range_channels"]) > 0
    for ax in axes:
        for x in t[outside]:
            ax.axvline(x, color="0.85", lw=2, zorder=0)
    axes[0].legend(title="shaded: invariant outside the fitted range" if outside.any() else None, fontsize=8)
    axes[-1].set_xlabel("time in the CP2K run (ps)")
    return save_figure(fig, path)


def learning_curve_plot(lc: dict, path) -> Path:
    """Held-out force RMSE against training frames (fit.learning_curve's record), per species."""
    fig, axes = figure(1, 2, figsize=(10, 4))
    for ax, s in zip(axes, SPECIES):
        for mode, err in lc["errors"].items():
            ax.plot(lc["n_frames"], err[s]["rmse"], "o-", label=f"learned {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("training frames")
        ax.set_ylabel(f"held-out force RMSE on {s} (kJ/mol/nm)")
        ax.set_title(f"{s} agents: held-out steps {lc['test_steps'][0]}-{lc['test_steps'][1]}", fontsize=10)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def sensitivity_plot(result: dict, path) -> Path:
    """Each channel's share of each agent's force, per learned model (the agents stage's record)."""
    fig, axes = figure(1, 2, figsize=(15, 5))
    names = list(result)
    width = 0.8 / max(len(names), 1)
    for ax, s in zip(axes, SPECIES):
        for k, name in enumerate(names):
            ag = result[name]["sensitivity"]["agents"][s]
            labels = [r["invariant"].replace(", ", "\n") for r in ag["channels"]] + [
                "all own-\nmolecule", "all other-\nmolecule"]
            values = [r["relative"] for r in ag["channels"]] + [ag["own_molecule_relative"],
                                                                ag["other_molecules_relative"]]
            x = np.arange(len(values))
            ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name)
            ax.set_xticks(x)
            ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("RMS channel force / RMS agent force")
        ax.set_title(f"agent {s}: what drives its force")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def figure(*args, figsize, **kw):
    """A Figure on the Agg canvas and its subplots (Figure.subplots' arguments): no pyplot,
    no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kw)


def save_figure(fig, path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
