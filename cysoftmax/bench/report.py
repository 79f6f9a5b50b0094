"""The report: the goals, and the text and markdown tables of a run's results."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .floor import FLOOR_NAME
from .inputs import KINDS, LARGE
from .peers import PEERS

# --------------------------------------------------------------------------
# goals
# --------------------------------------------------------------------------


def _label(entry: Dict[str, Any]) -> str:
    n, c = entry["shape"]
    return f"{n}x{c} {entry['dtype']} t={entry['threads']}"


def evaluate_goals(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each goal: holds (True / False / None when not measured) and the worst case."""
    results = report["results"]

    def goal(name: str, entries: List[Dict[str, Any]], value: Callable[[Dict[str, Any]], float],
             limit: Callable[[Dict[str, Any]], float], unit: str,
             extra: Optional[Callable[[Dict[str, Any]], str]] = None) -> Dict[str, Any]:
        checked = [(e, value(e), limit(e)) for e in entries]
        checked = [c for c in checked if c[1] == c[1]]  # drop NaN (not measured)
        if not checked:
            return {"goal": name, "holds": None, "detail": "not measured in this run"}
        failing = [c for c in checked if c[1] > c[2]]
        worst = max(checked, key=lambda c: c[1] / c[2])
        detail = f"worst {_label(worst[0])}: {worst[1]:.3g}{unit} (limit {worst[2]:.3g}{unit})"
        if extra is not None:
            detail += extra(worst[0])
        if failing:
            detail += "; fails at " + ", ".join(_label(c[0]) for c in failing)
        return {"goal": name, "holds": not failing, "detail": detail,
                "checked": len(checked), "failed": len(failing)}

    def elems(e: Dict[str, Any]) -> int:
        return int(e["shape"][0] * e["shape"][1])

    lg = [e for e in results if e["kind"] == "loss+grad"]
    lo = [e for e in results if e["kind"] == "loss"]
    floor = lambda e: e["ratios"].get("floor", math.nan)  # noqa: E731
    return [
        goal("large shapes (>= 4M elements): loss+grad <= 1.5x the copy floor (float32), "
             "<= 1.3x (float64)", [e for e in lg if elems(e) >= LARGE], floor,
             lambda e: 1.5 if e["dtype"] == "float32" else 1.3, "x"),
        goal("every shape and dtype: loss+grad at least 2x faster than the fastest peer",
             lg, lambda e: e["ratios"].get("best_peer", math.nan), lambda e: 0.5, "x"),
        goal("300x3: loss+grad <= 3 us per call", [e for e in lg if e["shape"] == [300, 3]],
             lambda e: e["timings"]["cysoftmax"]["median_ns"] / 1e3, lambda e: 3.0, " us",
             lambda e: f", fastest sample {e['timings']['cysoftmax']['min_ns'] / 1e3:.3g} us"),
        goal("4096x10: loss+grad <= 5x the copy floor",
             [e for e in lg if e["shape"] == [4096, 10]], floor, lambda e: 5.0, "x"),
        goal("large shapes: loss only <= 1.5x the read-only floor",
             [e for e in lo if elems(e) >= LARGE], floor, lambda e: 1.5, "x"),
        goal("(also reported) every shape and dtype: loss only at least 2x faster than the "
             "fastest peer", lo, lambda e: e["ratios"].get("best_peer", math.nan),
             lambda e: 0.5, "x"),
    ]


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------


def fmt_time(ns: Optional[float]) -> str:
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{ns:.0f} ns"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """The lines of a table: the header, then the rows, right-aligned, two spaces apart."""
    table = [header, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table]


def _columns(report: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """Implementation columns (ours first, then extra targets, floor, peers) and peers."""
    keys: List[str] = []
    for entry in report["results"]:
        for k in entry["timings"]:
            if k not in keys:
                keys.append(k)
    ours = [k for k in keys if k.startswith("cysoftmax")]
    peers = [p for p in PEERS if p in keys]
    return ours + ["floor"] + peers, peers


def _table_rows(report: Dict[str, Any], kind: str) -> Tuple[List[str], List[List[str]]]:
    impls, peers = _columns(report)
    targets = report["settings"]["targets"]
    names = {"floor": FLOOR_NAME[kind]}
    if len(targets) > 1:
        names["cysoftmax"] = f"cysoftmax[{targets[0]}]"
    header = ["shape", "dtype", "threads"] + [names.get(k, k) for k in impls] + ["ours/floor"] + [f"ours/{p}" for p in peers] + ["ours/best peer"]
    rows = []
    for e in report["results"]:
        if e["kind"] != kind:
            continue
        t = e["timings"]
        threads = e["threads"] if e["threads"] != "all" else f"all ({e['num_threads']})"
        row = [f"{e['shape'][0]}x{e['shape'][1]}", e["dtype"], threads]
        row += [fmt_time(t[k]["median_ns"]) if k in t else "-" for k in impls]
        r = e["ratios"]
        row += [f"{r['floor']:.2f}"] + [f"{r[p]:.3f}" if p in r else "-" for p in peers]
        row += [f"{r['best_peer']:.3f} ({e['best_peer']})" if "best_peer" in r else "-"]
        rows.append(row)
    return header, rows


def _machine_lines(report: Dict[str, Any]) -> List[str]:
    m, b, v = report["machine"], report["build_info"], report["versions"]
    cpu = m.get("model", "?")
    if "family" in m:
        cpu += (f" (family {m['family']}, model {m.get('model_number')}, "
                f"stepping {m.get('stepping')})")
    if m.get("hypervisor"):
        cpu += ", virtualized"
    lines = [
        f"CPU: {cpu}; {m.get('logical_cpus')} logical CPUs ({m.get('usable_cpus', '?')} usable); "
        f"SIMD flags {', '.join(m.get('simd_flags', [])) or '?'}",
        f"platform: {m.get('platform')}; load average at start {m.get('loadavg_at_start')}, "
        f"at end {m.get('loadavg_at_end')}",
        f"cysoftmax {v['cysoftmax']}: SIMD target {b['target']} (supported "
        f"{', '.join(b['supported_targets'])}), OpenMP {'on' if b['openmp'] else 'off'}, "
        f"default threads {b['default_num_threads']}",
        "versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k] and k != "cysoftmax"),
    ]
    probe = report.get("cpu_probe")
    if probe:
        parts = [f"{name} loop {p['alone_s']:.2f} s alone, {p['two_at_once_s']:.2f} s each "
                 f"with two at once ({p['parallel_speed']:.2f}x speed)"
                 for name, p in probe.items() if isinstance(p, dict)]
        lines.append(f"CPU probe (two busy processes at once): {'; '.join(parts)} -> the CPUs "
                     f"deliver about {probe['cores_delivered']:.1f} cores")
    s = report["settings"]
    lines.append(
        f"timing: median of {s['repeats']} samples per measurement (~{s['budget_s']} s per "
        f"measurement, many calls per sample; the samples of one row are taken in turn); the "
        f"harness loop adds ~{report['harness_overhead_ns']:.0f} ns per call (not subtracted)")
    return lines


def _overhead_lines(report: Dict[str, Any]) -> List[str]:
    o = report.get("overhead")
    if not o:
        return []
    lines = [f"per-call cost at {o['shape'][0]}x{o['shape'][1]}, 1 thread (loss+grad):"]
    for dtype, t in o["timings"].items():
        line = f"  {dtype}: " + ", ".join(f"{k} {fmt_time(v)}" for k, v in t.items())
        if dtype in o["per_row_ns"]:
            line += f"; so about {o['per_row_ns'][dtype]:.1f} ns per further row"
        lines.append(line)
    return lines


def _casestudy_lines(report: Dict[str, Any]) -> List[str]:
    c = report.get("casestudy") or {}
    if "skipped" in c:
        return [f"case study: skipped ({c['skipped']})"]
    return [
        f"case study (spiral, {c['n_samples']} points, 2-layer net with {c['hidden_size']} "
        f"hidden units, {c['iterations']} iterations, median of {c['repeats']}): "
        f"cysoftmax.TwoLayerNet {c['cysoftmax_s']:.3g} s, the notes' NumPy loop "
        f"{c['numpy_s']:.3g} s, ratio {c['ratio']:.2f} (max loss difference "
        f"{c['max_loss_diff']:.1e})"
    ]


def _goal_lines(report: Dict[str, Any]) -> List[str]:
    lines = []
    for g in report["goals"]:
        status = {True: "HOLDS", False: "FAILS", None: "n/a"}[g["holds"]]
        lines.append(f"[{status}] {g['goal']}: {g['detail']}")
    return lines


TITLES = {
    "loss+grad": "loss + gradient: softmax_cross_entropy(scores, labels, out=grad, "
                 "num_threads=t), mean loss",
    "loss": "loss only: cross_entropy(scores, labels, num_threads=t), mean loss",
}
RATIO_NOTE = ("Times are medians per call. Ratios are ours / other: below 1 cysoftmax is "
              "faster (0.25 = 4x faster), above 1 it is slower.")


def format_text(report: Dict[str, Any]) -> str:
    out = ["cysoftmax benchmark", *_machine_lines(report), RATIO_NOTE, ""]
    for kind in KINDS:
        out.append(TITLES[kind])
        out.extend(text_table(*_table_rows(report, kind)))
        out.append("")
    out.extend(f"note: {n}" for n in report["notes"])
    out.extend(_overhead_lines(report))
    out.extend(_casestudy_lines(report))
    out.append("")
    out.append("goals:")
    out.extend(_goal_lines(report))
    out.append(f"total time {report['total_seconds']:.0f} s")
    return "\n".join(out)


def format_markdown(report: Dict[str, Any]) -> str:
    out = [f"- {line}" for line in _machine_lines(report)]
    out += ["", RATIO_NOTE, ""]
    for kind in KINDS:
        header, rows = _table_rows(report, kind)
        out.append(f"**{TITLES[kind]}**")
        out.append("")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
        out.extend("| " + " | ".join(r) + " |" for r in rows)
        out.append("")
    out.extend(f"- {n}" for n in report["notes"])
    out.extend(f"  - {line.strip()}" if line.startswith(" ") else f"- {line}"
               for line in _overhead_lines(report))
    out.extend(f"- {line}" for line in _casestudy_lines(report))
    out.append("")
    out.append("Goals:")
    out.append("")
    out.extend(f"- {line}" for line in _goal_lines(report))
    out.append("")
    out.append(f"Total bench time {report['total_seconds']:.0f} s.")
    return re.sub(r"(\d) us\b", "\\1 µs", "\n".join(out))
