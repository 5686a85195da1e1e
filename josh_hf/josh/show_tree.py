"""Pictures of one task's JOSH tree: self-contained HTML/SVG (hover for details) or PNG.

Nodes are laid out in columns by the step that created them (the root in column 0) and in rows
by leaf order (depth-first, first child first; a parent sits level with the middle of its
children). Colours: the golden path (``golden_path``) in gold, other successful nodes in green,
recorded nodes that reached nothing in red, nodes never recorded (explored after the last
collapse) in grey. A node's ring is dashed when its conversation ended on its own (the user hung
up, an error, the step budget).

HTML/SVG: every node is a ``<g class="node golden|successful|failed|unrecorded" data-id=...>``
with a ``<title>`` tooltip holding its marks, goals met, tool calls with results, and its
messages. Nothing external is loaded (no JS, CSS or fonts from the network).
PNG: the same picture drawn with matplotlib (an optional dependency), tool calls as labels.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .harvest import as_record, as_records

COLOURS: dict[str, str] = {
    "golden": "#e6a700",
    "successful": "#2e9d4a",
    "failed": "#d1453b",
    "unrecorded": "#9a9a9a",
}
"""Fill colour per node status."""
STATUS_LABELS: dict[str, str] = {
    "golden": "golden path",
    "successful": "successful (not golden)",
    "failed": "recorded, no goal met",
    "unrecorded": "not recorded",
}

_COL = 150  # px between step columns
_ROW = 56  # px between leaf rows
_RADIUS = 15
_LEFT, _TOP = 60, 70
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML 1.0


def node_status(node: Mapping[str, Any], golden_ids: Iterable[Any]) -> str:
    """``"golden"`` (on the golden path), ``"successful"``, ``"failed"`` (recorded, neither) or
    ``"unrecorded"``."""
    if node["id"] in set(golden_ids):
        return "golden"
    if node.get("successful"):
        return "successful"
    if node.get("recorded"):
        return "failed"
    return "unrecorded"


def tree_layout(record: Mapping[str, Any]) -> dict[Any, tuple[float, float]]:
    """``{node id: (column, row)}``: column = the node's step, row by leaf order."""
    nodes = list(record["nodes"])
    children: dict[Any, list[Any]] = {n["id"]: [] for n in nodes}
    roots = []
    for n in nodes:
        if n["parent"] is None or n["parent"] not in children:
            roots.append(n["id"])
        else:
            children[n["parent"]].append(n["id"])
    step = {n["id"]: n.get("step", 0) for n in nodes}
    rows: dict[Any, float] = {}
    next_row = 0.0

    # Iterative post-order (trees can be deep): leaves take the next row, parents centre.
    for root in roots:
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            nid, done = stack.pop()
            kids = children[nid]
            if not kids:
                rows[nid] = next_row
                next_row += 1
            elif done:
                rows[nid] = (rows[kids[0]] + rows[kids[-1]]) / 2
            else:
                stack.append((nid, True))
                stack.extend((k, False) for k in reversed(kids))
    return {nid: (float(step[nid]), rows[nid]) for nid in rows}


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message_line(message: Mapping[str, Any], limit: int = 240) -> str:
    role = message.get("role", "?")
    parts = []
    if message.get("content"):
        parts.append(_short(message["content"], limit))
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function", tc)
        parts.append(f"{fn.get('name')}({_short(fn.get('arguments'), limit)})")
    return f"{role}: " + (" ".join(parts) if parts else "(empty)")


def call_line(call: Mapping[str, Any], limit: int = 160) -> str:
    """``name(arguments) -> result``, shortened."""
    return f"{call.get('name')}({_short(call.get('arguments'), limit)}) -> {_short(call.get('result'), limit)}"


def node_tooltip(node: Mapping[str, Any], status: str) -> str:
    """The hover text of a node: marks, goals, tool calls with results, messages."""
    marks = [m for m in ("golden", "successful", "recorded") if node.get(m)]
    lines = [f"node {node['id']} (step {node.get('step', 0)}): {STATUS_LABELS[status]}",
             f"marks: {', '.join(marks) or 'none'}"]
    if node.get("goals_met"):
        lines.append(f"goals met: {', '.join(map(str, node['goals_met']))}")
    if node.get("ended"):
        lines.append(f"ended: {node['ended']}" + (f" ({node['error']})" if node.get("error") else ""))
    elif node.get("error"):
        lines.append(f"error: {node['error']}")
    if node.get("prompt_tokens") or node.get("completion_tokens"):
        lines.append(f"tokens: {node.get('prompt_tokens', 0)} prompt, {node.get('completion_tokens', 0)} completion")
    calls = node.get("turn_calls") or []
    if calls:
        lines.append("tool calls:")
        lines.extend(f"  {call_line(c)}" for c in calls)
    messages = node.get("messages") or []
    if messages:
        lines.append("messages:")
        lines.extend(f"  {_message_line(m)}" for m in messages)
    if node.get("closing_message"):
        lines.append(f"  user (closing): {_short(node['closing_message'], 240)}")
    return "\n".join(lines)


def _calls_label(node: Mapping[str, Any]) -> str:
    names = [str(c.get("name")) for c in node.get("turn_calls") or []]
    if not names:  # records without turn_calls: the native tool calls in the messages
        names = [str(tc.get("function", tc).get("name")) for m in node.get("messages") or []
                 for tc in m.get("tool_calls") or []]
    return ", ".join(names)


def _esc(text: Any) -> str:
    return html.escape(_CONTROL.sub("", str(text)), quote=True)


def record_summary(record: Mapping[str, Any]) -> str:
    """One line about the task: reward, success, goals, stop reason, main settings."""
    config = record.get("config") or {}
    goals = record.get("goal_calls") or []
    met = record.get("goals_met") or []
    parts = [f"task {record.get('task_id')}", f"seed {record.get('seed')}",
             f"JOSH reward {float(record.get('reward') or 0.0):.3f}",
             "success" if record.get("success") else "no success",
             f"goals met {len(met)}/{len(goals)}" + (f" ({', '.join(map(str, met))})" if met else ""),
             f"{len(record['nodes'])} nodes"]
    if record.get("stopped"):
        parts.append(f"stopped: {record['stopped']}")
    for key in ("agent_format", "beam_size", "max_steps"):
        if key in config:
            parts.append(f"{key} {config[key]}")
    return " · ".join(parts)


def render_svg(record: Any) -> str:
    """The tree as a standalone SVG document (string)."""
    record = as_record(record)
    layout = tree_layout(record)
    golden = list(record.get("golden_path") or [])
    nodes = {n["id"]: n for n in record["nodes"]}
    max_col = max((c for c, _ in layout.values()), default=0)
    max_row = max((r for _, r in layout.values()), default=0)
    width = int(_LEFT * 2 + max_col * _COL + 120)
    height = int(_TOP + max_row * _ROW + 110)

    def xy(nid: Any) -> tuple[float, float]:
        col, row = layout[nid]
        return _LEFT + col * _COL, _TOP + row * _ROW

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'),
           f"<title>{_esc(record_summary(record))}</title>",
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for col in range(int(max_col) + 1):
        out.append(f'<text x="{_LEFT + col * _COL}" y="24" text-anchor="middle" fill="#555555">step {col}</text>')
    golden_set = set(golden)
    for nid, n in nodes.items():  # edges first, under the nodes
        parent = n["parent"]
        if parent is None or parent not in layout or nid not in layout:
            continue
        (x1, y1), (x2, y2) = xy(parent), xy(nid)
        on_path = nid in golden_set and parent in golden_set
        colour, width_px = (COLOURS["golden"], 4) if on_path else ("#b5b5b5", 1.5)
        out.append(f'<line class="edge{" golden" if on_path else ""}" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" '
                   f'stroke="{colour}" stroke-width="{width_px}"/>')
    for nid in (i for i in nodes if i in layout):  # record order: readable source
        n = nodes[nid]
        status = node_status(n, golden_set)
        x, y = xy(nid)
        stroke = "#7a5a00" if status == "golden" else "#333333"
        dash = ' stroke-dasharray="3,2"' if n.get("ended") else ""
        out.append(f'<g class="node {status}" data-id="{_esc(nid)}" data-step="{_esc(n.get("step", 0))}">')
        out.append(f"<title>{_esc(node_tooltip(n, status))}</title>")
        out.append(f'<circle cx="{x}" cy="{y}" r="{_RADIUS}" fill="{COLOURS[status]}" stroke="{stroke}" '
                   f'stroke-width="{3 if status == "golden" else 1.5}"{dash}/>')
        out.append(f'<text x="{x}" y="{y + 4}" text-anchor="middle" fill="#ffffff" font-weight="bold">'
                   f"{_esc(nid)}</text>")
        label = _calls_label(n)
        if n.get("goals_met"):
            label = (label + " " if label else "") + "✓ " + ", ".join(map(str, n["goals_met"]))
        if label:
            out.append(f'<text x="{x}" y="{y + _RADIUS + 12}" text-anchor="middle" fill="#333333" font-size="9">'
                       f"{_esc(_short(label, 34))}</text>")
        out.append("</g>")
    ly = height - 22
    for i, (status, colour) in enumerate(COLOURS.items()):
        lx = _LEFT - 20 + i * 170
        out.append(f'<circle cx="{lx}" cy="{ly}" r="6" fill="{colour}"/>')
        out.append(f'<text x="{lx + 10}" y="{ly + 4}" fill="#333333">{_esc(STATUS_LABELS[status])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(record: Any) -> str:
    """A self-contained HTML page: a heading, the task summary and the SVG tree."""
    record = as_record(record)
    summary = record_summary(record)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>JOSH tree: task {_esc(record.get("task_id"))}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.node {{ cursor: help; }}
.node:hover circle {{ stroke: #000; stroke-width: 3; }}
</style>
</head>
<body>
<h1>JOSH tree: task {_esc(record.get("task_id"))}</h1>
<p>{_esc(summary)}</p>
<p>Hover over a node for its marks, tool calls, results and messages.</p>
{render_svg(record)}
</body>
</html>
"""


def render_png(record: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Draw the tree with matplotlib into ``path`` (PNG). Raises ``ImportError`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(
            "PNG output needs matplotlib: pip install matplotlib (or write .html / .svg, which need nothing)"
        ) from e
    record = as_record(record)
    layout = tree_layout(record)
    nodes = {n["id"]: n for n in record["nodes"]}
    golden = set(record.get("golden_path") or [])
    max_col = max((c for c, _ in layout.values()), default=0)
    max_row = max((r for _, r in layout.values()), default=0)
    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * max_col, 1.6 + 0.7 * max_row))
    try:
        for nid, n in nodes.items():
            parent = n["parent"]
            if parent is None or parent not in layout or nid not in layout:
                continue
            on_path = nid in golden and parent in golden
            (x1, y1), (x2, y2) = layout[parent], layout[nid]
            ax.plot([x1, x2], [y1, y2], color=COLOURS["golden"] if on_path else "#b5b5b5",
                    linewidth=3 if on_path else 1, zorder=1)
        for nid, (x, y) in layout.items():
            n = nodes[nid]
            status = node_status(n, golden)
            ax.scatter([x], [y], s=360, color=COLOURS[status], edgecolors="#333333", zorder=2,
                       linewidths=2.5 if status == "golden" else 1, linestyle="--" if n.get("ended") else "-")
            ax.text(x, y, str(nid), ha="center", va="center", color="white", fontsize=7, fontweight="bold", zorder=3)
            label = _calls_label(n)
            if n.get("goals_met"):
                label = (label + " " if label else "") + "[met " + ", ".join(map(str, n["goals_met"])) + "]"
            if label:
                ax.text(x, y + 0.32, _short(label, 40), ha="center", va="top", fontsize=6, zorder=3)
        for status, colour in COLOURS.items():
            ax.scatter([], [], color=colour, label=STATUS_LABELS[status])
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4, fontsize=7, frameon=False)
        ax.set_xticks(range(int(max_col) + 1), [f"step {i}" for i in range(int(max_col) + 1)])
        ax.xaxis.set_ticks_position("top")
        ax.set_yticks([])
        ax.set_xlim(-0.5, max_col + 0.5)
        ax.set_ylim(max_row + 0.8, -0.6)  # rows top to bottom, as in the SVG
        for side in ("left", "right", "bottom", "top"):
            ax.spines[side].set_visible(False)
        ax.set_title(record_summary(record), fontsize=8, pad=18)
        out = Path(path)
        fig.savefig(out, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return out


def find_record(records: Sequence[Any], task_id: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The record of ``task_id`` (and ``seed``); without ``task_id``, the only record.
    Raises ``KeyError`` naming the tasks present when there is no single match."""
    records = as_records(records)
    matches = [r for r in records
               if (task_id is None or str(r.get("task_id")) == str(task_id))
               and (seed is None or r.get("seed") == seed)]
    if len(matches) == 1:
        return matches[0]
    present = ", ".join(sorted({str(r.get("task_id")) for r in records})) or "none"
    if not matches:
        raise KeyError(f"no tree for task {task_id!r}" + (f" seed {seed}" if seed is not None else "")
                       + f"; tasks in the file: {present}")
    if task_id is None:
        raise KeyError(f"the file holds {len(records)} trees: choose one with --task ({present})")
    seeds = ", ".join(str(r.get("seed")) for r in matches)
    raise KeyError(f"task {task_id!r} has {len(matches)} trees (seeds {seeds}): choose one with --seed")


def save_tree(record: Any, output: str | Path) -> Path:
    """Write the picture of ``record`` to ``output``; the suffix picks the kind: ``.html``,
    ``.svg`` or ``.png`` (matplotlib)."""
    out = Path(output)
    suffix = out.suffix.lower()
    if suffix in (".html", ".htm"):
        out.write_text(render_html(record), encoding="utf-8")
    elif suffix == ".svg":
        out.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + render_svg(record), encoding="utf-8")
    elif suffix == ".png":
        render_png(record, out)
    else:
        raise ValueError(f"unknown picture type {out.suffix!r}: use .html, .svg or .png")
    return out


__all__ = [
    "COLOURS",
    "call_line",
    "find_record",
    "node_status",
    "node_tooltip",
    "record_summary",
    "render_html",
    "render_png",
    "render_svg",
    "save_tree",
    "tree_layout",
]
