"""The validation's plots and report: report.md, a self-contained report.html (plots
embedded), the summary and equipartition tables, and the JSON form of metrics.json."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from . import analysis
from .metrics import KIND_LABELS, KINDS, OUTCOMES, PAIRS
from .plots import figure, save_figure

#: Columns of the summary table: (header, metric, "row" = the row's own number or
#: "value" = the compared value, scale, format).
SUMMARY_COLUMNS = (
    ("g_OO peak (nm)", "rdf_OO.first_peak_position", "row", 1.0, "{:.3f}"),
    ("g_OO height", "rdf_OO.first_peak_height", "row", 1.0, "{:.2f}"),
    ("n_OO", "rdf_OO.coordination_number", "row", 1.0, "{:.2f}"),
    ("∫|Δg_OO| (Å)", "rdf_OO.integrated_abs_diff", "value", 1.0, "{:.2f}"),
    ("∫|Δg_OH| (Å)", "rdf_OH.integrated_abs_diff", "value", 1.0, "{:.2f}"),
    ("∫|Δg_HH| (Å)", "rdf_HH.integrated_abs_diff", "value", 1.0, "{:.2f}"),
    ("O-H (nm)", "bond_length.mean", "row", 1.0, "{:.4f}"),
    ("H-O-H (°)", "hoh_angle.mean", "row", 1.0, "{:.1f}"),
    ("H-bonds / mol", "hbonds.per_molecule", "row", 1.0, "{:.2f}"),
    ("D_O (1e-5 cm²/s)", "diffusion.log_ratio", "row", 1000.0, "{:.2f}"),
    ("T (K)", "temperature.mean", "row", 1.0, "{:.1f}"),
    ("T_O / T_H (K)", "kinetic_vs_reference.O", "pair:kinetic_vs_reference.H", 1.0, "{:.0f}"),
    ("T trans / rot / vib (K)", "kinetic_vs_reference.translation",
     "pair:kinetic_vs_reference.rotation:kinetic_vs_reference.vibration", 1.0, "{:.0f}"),
    ("libration (cm⁻¹)", "vacf.libration_band", "row", 1.0, "{:.0f}"),
    ("bend (cm⁻¹)", "vacf.bend_band", "row", 1.0, "{:.0f}"),
    ("stretch (cm⁻¹)", "vacf.stretch_band", "row", 1.0, "{:.0f}"),
    ("heat (kJ/mol/ps)", "thermostat.heat_per_ps", "row", 1.0, "{:.0f}"),
    ("|F_net| (kJ/mol/nm)", "forces.net_force", "row", 1.0, "{:.3g}"),
    ("ms / step", "cost.speedup", "row", 1000.0, "{:.3g}"),
    ("speed-up", "cost.speedup", "value", 1.0, "{:.0f}"),
)


def equipartition_table(ref, ref_eq, profiles, metrics, target_k) -> dict:
    """Kinetic temperature of every kind of motion, reference first, with outcomes against the target."""
    header = ["row"] + [f"T {KIND_LABELS[k]} (K)" for k in KINDS] + ["against target"]
    rows, data = [], {}

    def cells(kin):
        return [("n/a" if kin is None else f"{kin[k][0]:.0f} ± {kin[k][1]:.0f}") for k in KINDS]

    if ref.kinetic is not None:
        outs = {k: ref_eq["kinds"].get(k, {}).get("outcome", "n/a") for k in KINDS}
        rows.append(["CP2K reference"] + cells(ref.kinetic) + [_outcome_summary(outs)])
        data["CP2K reference"] = {k: {"value": ref.kinetic[k][0], "uncertainty": ref.kinetic[k][1],
                                      "outcome": outs[k]} for k in KINDS}
    else:
        rows.append(["CP2K reference"] + ["n/a"] * len(KINDS) + ["no velocities"])
    for name, prof in profiles.items():
        outs = {k: next((m["outcome"] for m in metrics if m["row"] == name
                         and m["metric"] == f"kinetic_vs_target.{k}"), "n/a") for k in KINDS}
        rows.append([name] + cells(prof.kinetic) + [_outcome_summary(outs)])
        if prof.kinetic is not None:
            data[name] = {k: {"value": prof.kinetic[k][0], "uncertainty": prof.kinetic[k][1], "outcome": outs[k]}
                          for k in KINDS}
    text = [f"Kinetic temperature of each species and of each kind of molecular motion (3 degrees of freedom "
            f"per molecule each), target {target_k if target_k is not None else '?'} K; ± is the standard error "
            "(runs, or blocks of one run). In equilibrium all are equal to the target. A global thermostat "
            "(CSVR, one Nose-Hoover variable) scales every velocity by one factor and cannot restore "
            "equipartition; non-reciprocal (agent) forces break it by themselves."]
    if not ref_eq["ok"]:
        text.append("The reference is out of equipartition: the row-against-reference comparisons of kinetic "
                    "temperatures are not applicable, and the reference's dynamics (diffusion, spectra) are suspect.")
    return {"section": {"title": "Equipartition", "text": text, "table": {"header": header, "rows": rows},
                        "plots": []},
            "data": data}


def _outcome_summary(outs: dict) -> str:
    bad = [k for k, o in outs.items() if o == "fail"]
    unsure = [k for k, o in outs.items() if o == "inconclusive"]
    if bad:
        return "FAIL: " + ", ".join(bad)
    if unsure:
        return "INCONCLUSIVE: " + ", ".join(unsure)
    return "PASS" if any(o == "pass" for o in outs.values()) else "n/a"


def plot_all(out_dir, ref, profiles) -> list:
    """Write the comparison's plots (PNG) to out_dir: g(r) of each pair, the O-H length and
    H-O-H angle distributions, temperatures, O mean-squared displacement and, where there
    are velocities, the H velocity autocorrelation and spectrum. Returns their file names."""
    sides = [("CP2K reference", ref)] + list(profiles.items())
    names = [save_figure(_rdf_figure(p, ref, profiles), out_dir / f"rdf_{p}.png").name for p in PAIRS]
    for fname, attr, xlabel in (("bond_length.png", "bond", "O-H length (nm)"),
                                ("hoh_angle.png", "angle", "H-O-H angle (degrees)")):
        names.append(save_figure(_distribution_figure(attr, xlabel, ref, profiles), out_dir / fname).name)
    names.append(save_figure(_temperature_figure(sides, ref), out_dir / "temperature.png").name)
    names.append(save_figure(_msd_figure(sides, ref), out_dir / "msd.png").name)
    with_spec = [(n, p) for n, p in sides if p.spectrum is not None]
    if with_spec:
        names.append(save_figure(_vacf_figure(with_spec, ref), out_dir / "vacf.png").name)
    return names


def _rdf_figure(p, ref, profiles):
    fig, ax = figure(figsize=(6, 4))
    r = ref.rdf[p]["r"]
    ax.fill_between(r, ref.rdf[p]["g"] - 2 * ref.rdf[p]["g_sem"], ref.rdf[p]["g"] + 2 * ref.rdf[p]["g_sem"],
                    color="0.8", label="CP2K +/- 2 s.e.")
    ax.plot(r, ref.rdf[p]["g"], color="k", lw=2, label="CP2K reference")
    for name, prof in profiles.items():
        ax.plot(r, prof.rdf[p]["g"], lw=1.2, label=name)
    ax.set_xlabel("r (nm)")
    ax.set_ylabel(f"g_{p}(r)  (intermolecular)")
    ax.set_title(f"g_{p}")
    ax.legend(fontsize=8)
    return fig


def _distribution_figure(attr, xlabel, ref, profiles):
    fig, ax = figure(figsize=(6, 4))
    data = [ref.pooled(attr)] + [pr.pooled(attr) for pr in profiles.values()]
    edges = np.linspace(min(d.min() for d in data), max(d.max() for d in data), 81)
    ax.hist(data[0], edges, density=True, histtype="stepfilled", color="0.8", label="CP2K reference")
    for name, d in zip(profiles, data[1:]):
        ax.hist(d, edges, density=True, histtype="step", lw=1.3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("probability density (1/" + xlabel.split("(")[-1].rstrip(")") + ")")
    ax.legend(fontsize=8)
    return fig


def _temperature_figure(sides, ref):
    # Time series (left) and distribution (right): runs of different lengths still compare.
    fig, (ax, axh) = figure(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    for name, prof in sides:
        if prof.temperature is not None:
            t = prof.temperature[0]  # the first run's series; the histogram pools every run
            allt = np.concatenate([x[:, 1] for x in prof.temperature])
            style = {"color": "k"} if prof is ref else {}
            line, = ax.plot(t[:, 0] - t[0, 0], t[:, 1], lw=0.8,
                            label=f"{name} ({allt.mean():.1f} ± {allt.std():.1f} K)", **style)
            axh.hist(allt, 30, density=True, histtype="step", lw=1.3, color=line.get_color(),
                     orientation="horizontal")
    if not ax.lines:
        ax.text(0.5, 0.5, "no temperature series given", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("time since cut (ps)")
    ax.set_ylabel("temperature (K)")
    axh.set_xlabel("probability density (1/K)")
    axh.set_ylabel("temperature (K)")
    return fig


def _msd_figure(sides, ref):
    fig, ax = figure(figsize=(6, 4))
    for name, prof in sides:
        # the mean MSD of the runs, over the lags the shortest run resolves
        curves = [analysis.msd_oxygen(run.traj) for run in prof.runs]
        n = min(len(c[0]) for c in curves)
        ax.plot(curves[0][0][:n], np.mean([c[1][:n] for c in curves], axis=0), label=name,
                **({"color": "k", "lw": 2} if prof is ref else {}))
    lo, hi = ref.diffusion["window"] if ref.diffusion else analysis.DIFFUSION_WINDOW_PS
    ax.axvspan(lo, hi, color="0.93", zorder=0, label="diffusion fit window")
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("O mean-squared displacement (nm$^2$)")
    box = np.mean(ref.traj.unitcell_lengths, axis=0)
    ax.set_title(f"{ref.traj.n_residues} molecules, box {box[0]:.3f} nm", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _vacf_figure(with_spec, ref):
    fig, (ax, axs) = figure(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2]})
    for name, prof in with_spec:
        sp = prof.spectrum
        style = {"color": "k", "lw": 2} if prof is ref else {"lw": 1.2}
        ax.plot(sp["t"] * 1000, sp["vacf"], label=name, **style)
        axs.plot(sp["nu"], sp["intensity"] * 1000, label=name, **style)
    for lo, hi in analysis.SPECTRAL_BANDS.values():
        axs.axvspan(lo, hi, color="0.93", zorder=0)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("lag time (fs)")
    ax.set_ylabel("H velocity autocorrelation (normalised)")
    axs.set_xlim(0, 4500)
    axs.set_xlabel("wavenumber (cm$^{-1}$); shaded: libration, bend, stretch windows")
    axs.set_ylabel("H vibrational spectrum (10$^{-3}$ cm)")
    axs.legend(fontsize=8)
    return fig


def _fmt(v, e=None):
    if v is None:
        return ""
    if isinstance(v, float) and not np.isfinite(v):
        return "n/a"
    s = f"{v:.4g}"
    if e is not None and isinstance(e, float) and np.isfinite(e):
        s += f" ± {e:.2g}"
    return s


def _round(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def provenance_lines(info):
    if info is None:
        return []
    if isinstance(info, dict):
        return [f"{k}: {v}" for k, v in info.items()]
    if isinstance(info, str):
        return [info]
    return [str(x) for x in info]


def summary_table(metrics, verdicts) -> dict:
    """{"header": [...], "rows": [[...]]}: the CP2K reference and every row, one line each.

    The reference line holds the reference's numbers and, in difference columns, the
    reference's own half-vs-half floor.
    """
    header = ["row"] + [c[0] for c in SUMMARY_COLUMNS] + ["pass / fail / inconclusive / n/a"]
    by = {(m["row"], m["metric"]): m for m in metrics}
    first = next(iter(verdicts))

    def one(rec, source, scale, fmt, reference):
        if rec is None:
            return "–"
        if source == "value":
            v = rec.get("noise_floor") if reference else rec.get("value")
            prefix = "floor " if reference else ""
        else:
            v = rec.get("reference_value" if reference else "row_value")
            prefix = ""
        if v is None or not np.isfinite(v):
            return "–" if reference and source == "value" else "n/a"
        return prefix + fmt.format(v * scale)

    def cell(name, key, source, scale, fmt, reference=False):
        if source.startswith("pair:"):  # several row values in one cell, e.g. T_O / T_H
            keys = [key] + source.split(":")[1:]
            return " / ".join(one(by.get((name, k)), "row", scale, fmt, reference) for k in keys)
        return one(by.get((name, key)), source, scale, fmt, reference)

    table = [["CP2K reference"] + [cell(first, key, src, sc, fmt, True)
                                   for _, key, src, sc, fmt in SUMMARY_COLUMNS] + ["–"]]
    for name, verdict in verdicts.items():
        recs = [m for m in metrics if m["row"] == name]
        counts = "/".join(str(sum(m["outcome"] == o for m in recs)) for o in ("pass", "fail", "inconclusive", "n/a"))
        table.append([name] + [cell(name, key, src, sc, fmt) for _, key, src, sc, fmt in SUMMARY_COLUMNS]
                     + [f"{counts} {verdict}"])
    return {"header": header, "rows": table}


def _note(m) -> str:
    note = m["note"]
    for extra in ([f"reference and row in {m['unit_values']}"] if m.get("unit_values") else []) + \
            ([m["context"]] if m.get("context") else []) + \
            ([("beats baseline" if m["beats_baseline"] else "worse than baseline")] if "beats_baseline" in m else []):
        note = (note + "; " if note else "") + extra
    return note


_LEGEND = (
    "Values are row − reference unless the metric says otherwise; a row's value is the mean of its "
    "independent runs and ± is the standard error (between those runs: their spread is √n times it; "
    "between blocks for the reference's one run); *floor* is the same "
    "number for the reference's first half against its second half. Outcomes: PASS when value ± zσ "
    "lies inside the threshold, FAIL when value ± z_fail σ lies outside (z_fail at the family-wise "
    "confidence of the row's judged metrics: a row fails when any one fails), INCONCLUSIVE when it "
    "straddles it (the data "
    "cannot decide), n/a when the data cannot measure the metric (the note says why); n/a and "
    "inconclusive never count as passes. 'needs': the reference length (ps) at which its own error "
    "would use half the threshold."
)


_METRIC_HEADER = ["metric", "unit", "reference", "row", "value", "floor", "threshold", "outcome", "needs (ps)",
                  "note"]


def _metric_cells(m):
    thr = "" if m["threshold"] is None else f"{m['kind']} {_fmt(m['threshold'])}"
    needs = m.get("reference_needed_ps")
    return [m["metric"], m["unit"], _fmt(m.get("reference_value"), m.get("reference_uncertainty")),
            _fmt(m.get("row_value"), m.get("row_uncertainty")), _fmt(m["value"], m["uncertainty"]),
            _fmt(m.get("noise_floor")), thr, m["outcome"].upper(), "" if needs is None else f"{needs:.3g}",
            _note(m)]


def _verdict_lines(overall, verdicts, metrics, settings):
    head = f"Overall: {overall}" + (
        f" (baseline row `{settings['baseline']}` does not count)" if settings["baseline"] else "")
    lines = []
    for name, verdict in verdicts.items():
        recs = [m for m in metrics if m["row"] == name]
        n = {o: sum(m["outcome"] == o for m in recs) for o in OUTCOMES}
        seeds = recs[0].get("seeds", 1) if recs else 1
        lines.append(f"`{name}` ({seeds} run{'s' if seeds != 1 else ''}): {verdict} ({n['pass']} pass, "
                     f"{n['fail']} fail, {n['inconclusive']} inconclusive, {n['n/a']} n/a, "
                     f"{n['reported']} reported)")
    return head, lines


def _md_table(header, rows):
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def report_md(overall, rows_passed, metrics, settings, info, plots, summary, sections) -> str:
    head, lines = _verdict_lines(overall, rows_passed, metrics, settings)
    out = ["# Validation against CP2K", "", f"**{head}**", ""] + [f"- {x}" for x in lines]
    out += ["", "## Summary", ""] + _md_table(summary["header"], summary["rows"])
    out += ["", _LEGEND, ""]
    for name in rows_passed:
        rows = []
        for m in (m for m in metrics if m["row"] == name):
            cells = _metric_cells(m)
            cells[7] = "**FAIL**" if cells[7] == "FAIL" else cells[7]
            rows.append(cells)
        out += [f"## {name}", ""] + _md_table(_METRIC_HEADER, rows) + [""]
    for sec in sections:
        out += [f"## {sec['title']}", ""] + list(sec.get("text", []))
        if sec.get("table"):
            out += [""] + _md_table(sec["table"]["header"], sec["table"]["rows"])
        out += [""] + [f"![{p}]({p})" for p in sec.get("plots", [])] + [""]
    out += ["## Settings", ""]
    for k, v in jsonable(settings).items():
        out.append(f"- {k}: {_round(v)}")
    prov = provenance_lines(info)
    if prov:
        out += ["", "## Provenance", ""] + [f"- {line}" for line in prov]
    out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}.PASS{color:#070}.FAIL{color:#b00;font-weight:bold}.INCONCLUSIVE{color:#b60}
img{max-width:100%;margin:0.5em 0}code{background:#f4f4f4}"""


def report_html(out_dir, overall, rows_passed, metrics, settings, info, plots, summary, sections) -> str:
    """One self-contained HTML page: the plots are embedded as base64 PNG."""
    e = html.escape

    def table(header, rows, verdict_col=None):
        out = ["<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>"]
        for r in rows:
            cells = []
            for k, c in enumerate(r):
                c = str(c)
                cls = ""
                if k == verdict_col or (verdict_col == -1 and k == len(r) - 1):
                    cls = next((f" class='{w}'" for w in ("FAIL", "INCONCLUSIVE", "PASS") if w in c), "")
                cells.append(f"<td{cls}>{e(c)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        return "\n".join(out + ["</table>"])

    def img(name):
        data = base64.b64encode((Path(out_dir) / name).read_bytes()).decode("ascii")
        return (f"<figure><img alt='{e(name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(name)}</figcaption></figure>")

    head, lines = _verdict_lines(overall, rows_passed, metrics, settings)
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Validation against CP2K</title>",
           f"<style>{_CSS}</style></head><body>", "<h1>Validation against CP2K</h1>",
           f"<p class='{overall}'><b>{e(head)}</b></p><ul>"]
    out += [f"<li>{e(x)}</li>" for x in lines] + ["</ul>", "<h2>Summary</h2>",
                                                  table(summary["header"], summary["rows"], -1),
                                                  f"<p>{e(_LEGEND)}</p>"]
    out += ["<h2>Overlays</h2>"] + [img(p) for p in plots]
    for name in rows_passed:
        out += [f"<h2>{e(name)}</h2>",
                table(_METRIC_HEADER, [_metric_cells(m) for m in metrics if m["row"] == name], 7)]
    for sec in sections:
        out += [f"<h2>{e(sec['title'])}</h2>"] + [f"<p>{e(t)}</p>" for t in sec.get("text", []) if t]
        if sec.get("table"):
            out.append(table(sec["table"]["header"], sec["table"]["rows"]))
        out += [img(p) for p in sec.get("plots", [])]
    out += ["<h2>Settings</h2><ul>"] + [f"<li>{e(k)}: {e(str(_round(v)))}</li>" for k, v in jsonable(settings).items()]
    out += ["</ul>"]
    prov = provenance_lines(info)
    if prov:
        out += ["<h2>Provenance</h2><ul>"] + [f"<li>{e(x)}</li>" for x in prov] + ["</ul>"]
    out += ["</body></html>", ""]
    return "\n".join(out)


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x
