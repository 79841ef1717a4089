#!/usr/bin/env python3
"""Draws bench/autoscale.sh's samples as an SVG: p95 latency (and the target) on a log scale, and
replicas and clients, over time. No plotting library: the SVG is written by hand.

    python bench/plot_autoscale.py samples.csv out.svg TARGET_MS
"""
import csv
import math
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
out, target = sys.argv[2], float(sys.argv[3])
W, H, L, R, T, B = 900, 420, 70, 70, 30, 50
t_max = max(float(r["seconds"]) for r in rows) if rows else 1.0
p95s = [float(r["p95_ms"]) for r in rows if r["p95_ms"]]
p_lo, p_hi = 1.0, max(p95s + [target * 2])
rep_hi = max([int(r["replicas"]) for r in rows] + [1]) + 1


def x(t):
    return L + (W - L - R) * t / t_max


def y_ms(ms):
    v = (math.log10(max(ms, p_lo)) - math.log10(p_lo)) / (math.log10(p_hi) - math.log10(p_lo))
    return H - B - (H - T - B) * v


def y_rep(n):
    return H - B - (H - T - B) * n / rep_hi


def path(points, color, width=2, dash=""):
    d = " ".join(("M" if i == 0 else "L") + f"{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}"{extra}/>'


def steps(values):
    """Points of a step line through (t, value) samples."""
    pts = []
    for i, (t, v) in enumerate(values):
        if i:
            pts.append((x(t), pts[-1][1]))
        pts.append((x(t), v))
    return pts


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
# Clients as shaded bands, labelled.
prev, start = None, 0.0
bands = []
for r in rows + [{"seconds": str(t_max), "clients": None}]:
    if r["clients"] != prev:
        if prev not in (None, "0"):
            bands.append((start, float(r["seconds"]), prev))
        prev, start = r["clients"], float(r["seconds"])
for i, (a, b, c) in enumerate(bands):
    svg.append(f'<rect x="{x(a):.1f}" y="{T}" width="{x(b) - x(a):.1f}" height="{H - T - B}" fill="{"#f2f2f2" if i % 2 else "#e6eef7"}"/>')
    svg.append(f'<text x="{(x(a) + x(b)) / 2:.1f}" y="{T + 14}" text-anchor="middle" fill="#555">{c} clients</text>')
# Axes and grid.
svg.append(f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>')
for ms in [1, 10, 100, 1000, 10000]:
    if p_lo <= ms <= p_hi:
        svg.append(f'<line x1="{L}" y1="{y_ms(ms):.1f}" x2="{W - R}" y2="{y_ms(ms):.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{L - 6}" y="{y_ms(ms) + 4:.1f}" text-anchor="end">{ms} ms</text>')
for n in range(0, rep_hi + 1):
    svg.append(f'<text x="{W - R + 6}" y="{y_rep(n) + 4:.1f}" fill="#c0392b">{n}</text>')
for t in range(0, int(t_max) + 1, 10):
    svg.append(f'<text x="{x(t):.1f}" y="{H - B + 16}" text-anchor="middle">{t} s</text>')
svg.append(path([(x(0), y_ms(target)), (x(t_max), y_ms(target))], "#27ae60", 1.5, "6,4"))
svg.append(f'<text x="{W - R - 4}" y="{y_ms(target) - 5:.1f}" text-anchor="end" fill="#27ae60">target_latency {target:g} ms</text>')
svg.append(path([(x(float(r["seconds"])), y_ms(float(r["p95_ms"]))) for r in rows if r["p95_ms"]], "#2c3e50"))
svg.append(path(steps([(float(r["seconds"]), y_rep(int(r["replicas"]))) for r in rows]), "#c0392b", 2.5))
svg.append(f'<text x="{L}" y="{H - 12}" fill="#2c3e50">p95 latency (log scale, left)</text>')
svg.append(f'<text x="{L + 230}" y="{H - 12}" fill="#c0392b">replicas (right)</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg))
print(out)
