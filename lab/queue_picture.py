"""Runs the tutorial's experiment on the lab (make lab) and draws what
Prometheus recorded of it, as an SVG for the README: the jobs waiting climb
while the workers are stopped and drain when they start, with the rate the
workers report.

    python lab/queue_picture.py [--container gearman-lab] [--out docs/monitoring-experiment.svg]

Talks to the lab container with docker exec only; Prometheus' answers are
drawn as they are (its query_range API, one point every 2 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

WORKERS = ["gearman-worker-php@1", "gearman-worker-php@2", "gearman-worker-python@1"]
SERIES = [
    # (query, legend, colour, axis)
    ("sum(gearman_function_jobs_queued)", "jobs waiting (gearman_function_jobs_queued)", "#c0392b", "left"),
    ("sum(gearman_function_workers)", "workers registered (gearman_function_workers)", "#7f8c8d", "left"),
    ('sum(rate(gearman_worker_jobs_total{outcome="done"}[30s]))', "jobs done per second (gearman_worker_jobs_total)",
     "#2471a3", "right"),
]


def lab(container: str, *argv: str) -> str:
    return subprocess.run(["docker", "exec", container, *argv], check=True, capture_output=True, text=True).stdout


def query_range(container: str, expr: str, start: float, end: float) -> list[tuple[float, float]]:
    url = "http://127.0.0.1:9090/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": 2})
    answer = json.loads(lab(container, "python3", "-c",
                            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())", url))
    result = answer["data"]["result"]
    return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def svg(curves: list[tuple[str, str, str, list]], marks: list[tuple[float, str]], start: float, end: float) -> str:
    width, height, left, right, top, bottom = 760, 340, 60, 60, 20, 90
    plot_w, plot_h = width - left - right, height - top - bottom
    scale = {axis: max([v for _, _, a, points in curves if a == axis for _, v in points] + [1]) * 1.1
             for axis in ("left", "right")}

    def x(t):
        return left + (t - start) / (end - start) * plot_w

    def y(v, axis):
        return top + plot_h - v / scale[axis] * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for axis, anchor, pos in (("left", "end", left - 6), ("right", "start", width - right + 6)):
        for i in range(5):
            v = scale[axis] * i / 4
            out.append(f'<text x="{pos}" y="{y(v, axis) + 4:.1f}" text-anchor="{anchor}" fill="#555">{v:.0f}</text>')
    for t, label in marks:
        out.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + plot_h}" stroke="#bbb" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x(t) + 4:.1f}" y="{top + 14}" fill="#555">{label}</text>')
    for seconds in range(0, int(end - start) + 1, 30):
        out.append(f'<text x="{x(start + seconds):.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555">{seconds} s</text>')
    for n, (legend, colour, axis, points) in enumerate(curves):
        path = " ".join(f"{x(t):.1f},{y(v, axis):.1f}" for t, v in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + plot_h + 36 + n * 16
        out.append(f'<line x1="{left}" y1="{ly - 4}" x2="{left + 24}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + 30}" y="{ly}">{legend} ({"left" if axis == "left" else "right"} axis)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", default="gearman-lab")
    parser.add_argument("--out", type=Path, default=Path("docs/monitoring-experiment.svg"))
    args = parser.parse_args()
    c = args.container

    start = time.time()
    time.sleep(20)
    lab(c, "systemctl", "stop", *WORKERS)
    stopped = time.time()
    # The tutorial's client, a burst every few seconds while no worker runs.
    for _ in range(6):
        lab(c, "gearman-client.php", "--count", "40")
        time.sleep(5)
    time.sleep(10)
    lab(c, "systemctl", "start", *WORKERS)
    started = time.time()
    time.sleep(40)
    end = time.time()

    curves = [(legend, colour, axis, query_range(c, expr, start, end)) for expr, legend, colour, axis in SERIES]
    empty = [legend for legend, _, _, points in curves if not points]
    if empty:
        print(f"Prometheus returned nothing for: {', '.join(empty)}", file=sys.stderr)
        return 1
    marks = [(stopped, "workers stopped, client runs"), (started, "workers started")]
    args.out.write_text(svg(curves, marks, start, end))
    peak = max(v for _, v in curves[0][3])
    print(f"wrote {args.out}: {peak:.0f} jobs waiting at the peak, over {end - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
