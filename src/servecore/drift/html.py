"""``servecore drift report``: one self-contained HTML page from a server's drift report.

For every feature of the latest closed window (the open window when none has closed yet): the
reference and current distributions drawn over each other (bins of the reference's quantile
edges, or the categorical vocabulary), and the window's statistics; features with an open alert
come first, then drifting ones, then by PSI.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

WIDTH, HEIGHT = 560, 150
REF_COLOUR, CUR_COLOUR = "#4C72B0", "#DD8452"


def _proportions(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total if total else 0.0 for c in counts]


def _bin_labels(feature: dict[str, Any]) -> list[str]:
    if feature["kind"] == "numeric":
        edges = feature["edges"]
        inner = [f"[{edges[i]:.4g}, {edges[i + 1]:.4g})" for i in range(len(edges) - 1)]
        return [f"< {edges[0]:.4g}", *inner, f">= {edges[-1]:.4g}"]
    return [*feature["vocabulary"], "__other__", "null"]


def svg_histogram(reference: Sequence[float], current: Sequence[float], labels: Sequence[str]) -> str:
    """Reference and current proportions as overlaid bars, one pair per bin, with tooltips."""
    ref, cur = _proportions(reference), _proportions(current)
    top = max([*ref, *cur, 1e-9])
    n = max(len(ref), len(cur), 1)
    step = WIDTH / n
    bars = []
    for i in range(n):
        for values, colour, offset in ((ref, REF_COLOUR, 0.0), (cur, CUR_COLOUR, 0.25)):
            value = values[i] if i < len(values) else 0.0
            h = (HEIGHT - 20) * value / top
            x = i * step + offset * step
            label = html.escape(labels[i] if i < len(labels) else str(i))
            who = "reference" if colour == REF_COLOUR else "current"
            bars.append(
                f'<rect x="{x:.2f}" y="{HEIGHT - 15 - h:.2f}" width="{max(step * 0.7, 0.5):.2f}" height="{h:.2f}" '
                f'fill="{colour}" fill-opacity="0.6"><title>{label}: {who} {value:.2%}</title></rect>'
            )
    axis = f'<line x1="0" y1="{HEIGHT - 15}" x2="{WIDTH}" y2="{HEIGHT - 15}" stroke="#888"/>'
    return f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{axis}{"".join(bars)}</svg>'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _order(feature: dict[str, Any]) -> tuple[int, int, float]:
    psi = (feature.get("psi") or {}).get("value") or 0.0
    return (0 if feature.get("alert") else 1, 0 if feature.get("status") == "drift" else 1, -psi)


def render(report: dict[str, Any]) -> str:
    """The HTML page for *report* (the JSON of ``GET /v2/models/{m}/drift``)."""
    reference = {f["name"]: f for f in report["reference_profile"].get("features_detail", [])}
    windows = report.get("windows") or []
    window = windows[-1] if windows else None
    title = f"Drift report: {report['model_name']} version {report['model_version']}"
    head = (
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Reference profile <code>{html.escape(report['reference_profile']['sha256'])}</code>; "
        f"windows of {report['window_seconds']:g} s; rows binned {report['rows']['seen']}, skipped "
        f"{report['rows']['skipped']}. Open alerts: {html.escape(', '.join(report['alerts']) or 'none')}.</p>"
        f'<p class="legend"><span style="color:{REF_COLOUR}">■ reference</span> '
        f'<span style="color:{CUR_COLOUR}">■ current window</span></p>'
    )
    if window is None:
        body = "<p><strong>No window has closed yet</strong>: there is nothing to compare.</p>"
    else:
        sections = []
        head += (
            f"<p>Window {window['window_id']}: {window['rows']} rows; drifted: "
            f"{html.escape(', '.join(window['drifted']) or 'none')}.</p>"
        )
        for feature in sorted(window["features"], key=_order):
            ref = reference.get(feature["name"])
            status = feature["status"]
            badge = "alert" if feature.get("alert") else status
            chart = (
                svg_histogram(ref["counts"], feature["counts"], _bin_labels(ref))
                if ref is not None else "<p>(no reference for this feature)</p>"
            )
            stats = {
                "n": feature.get("n"),
                "PSI": (feature.get("psi") or {}).get("value"),
                "JS": feature.get("js"),
                "p-value": feature.get("p_value"),
                "KS D": (feature.get("ks") or {}).get("d"),
                "W1/σ": (feature.get("wasserstein") or {}).get("value"),
                "missing (ref → now)": f"{_fmt((feature.get('missing') or {}).get('reference'))} → "
                                        f"{_fmt((feature.get('missing') or {}).get('current'))}",
                "mean": feature.get("mean"),
                "std": feature.get("std"),
            }
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v) if not isinstance(v, str) else v}</td></tr>" for k, v in stats.items())
            sections.append(
                f'<section class="{badge}"><h2>{html.escape(feature["name"])} '
                f'<span class="badge">{html.escape(badge)}</span></h2>'
                f'<div class="row">{chart}<table>{rows}</table></div></section>'
            )
        body = "".join(sections)
    performance = report.get("performance") or []
    if performance:
        body += "<h2>Performance from labels</h2><pre>" + html.escape(json.dumps(performance, indent=1)) + "</pre>"
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "section{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;margin:1em 0}"
        "section.alert{border-color:#c0392b;background:#fdf2f1}section.drift{border-color:#e67e22}"
        ".row{display:flex;gap:2em;align-items:flex-start}.badge{font-size:.7em;padding:.1em .5em;"
        "border-radius:1em;background:#eee}table{border-collapse:collapse}th{text-align:left;padding-right:1em}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{head}{body}</body></html>"
    )
