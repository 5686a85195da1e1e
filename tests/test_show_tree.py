"""Tree pictures: the HTML/SVG marks exactly the golden path, shows every node, and its tooltips
carry the tool calls; PNG when matplotlib is installed, a clear error when it is not."""

from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET

import pytest

# The hand-built trees of the harvest tests (tests/ is on sys.path under pytest's rootdir import mode).
from test_harvest import tree_t1, tree_t3

from josh_hf.josh.show_tree import find_record, render_html, render_svg, save_tree, tree_layout
from josh_hf.toolwoz.tools import ERROR_NOT_ALLOWED

SVG = "{http://www.w3.org/2000/svg}"


def svg_nodes(svg_text: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg_text)  # well-formed XML, or this raises
    return {g.get("data-id"): g for g in root.iter(f"{SVG}g") if "node" in g.get("class", "").split()}


def classes(g: ET.Element) -> set[str]:
    return set(g.get("class").split()) - {"node"}


def test_layout_columns_are_steps_and_rows_follow_leaf_order():
    layout = tree_layout(tree_t1())
    # Leaves in depth-first order: c, d, a2, b1, b2; parents centred on their children.
    assert layout == {"c": (3.0, 0.0), "d": (3.0, 1.0), "a1": (2.0, 0.5), "a2": (2.0, 2.0), "a": (1.0, 1.25),
                      "b1": (2.0, 3.0), "b2": (2.0, 4.0), "b": (1.0, 3.5), "r": (0.0, 2.375)}


def test_html_marks_golden_path_and_tooltips_hold_tool_calls(tmp_path):
    record = tree_t1()
    out = save_tree(record, tmp_path / "tree.html")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # Self-contained: nothing fetched (the only URL is the SVG namespace).
    assert not re.search(r"<script|<link|src=|@import", page)
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]
    nodes = svg_nodes(page[page.index("<svg"):page.index("</svg>") + len("</svg>")])
    assert len(nodes) == len(record["nodes"]) == 9
    assert {i for i, g in nodes.items() if "golden" in classes(g)} == {"r", "a", "a1", "d"}
    assert {i: classes(g) for i, g in nodes.items() if "golden" not in classes(g)} == {
        "b": {"failed"}, "a2": {"failed"}, "b1": {"failed"}, "b2": {"failed"}, "c": {"failed"}}
    golden_fill = {g.find(f"{SVG}circle").get("fill") for i, g in nodes.items() if i in {"r", "a", "a1", "d"}}
    other_fill = {g.find(f"{SVG}circle").get("fill") for i, g in nodes.items() if i not in {"r", "a", "a1", "d"}}
    assert golden_fill == {"#e6a700"} and "#e6a700" not in other_fill
    # Golden edges: r-a, a-a1, a1-d.
    root = ET.fromstring(render_svg(record))
    golden_edges = [e for e in root.iter(f"{SVG}line") if "golden" in e.get("class").split()]
    assert len(golden_edges) == 3
    # Tooltips: turn_calls with their results, goals met, the messages.
    a1 = nodes["a1"].find(f"{SVG}title").text
    assert a1.splitlines()[:4] == [
        "node a1 (step 2): golden path",
        "marks: golden, successful, recorded",
        "goals met: book_restaurant",
        "tool calls:",
    ]
    assert ('  book_restaurant({"name": "pizza hut city centre"}) -> {"success": true, "return": {"ref": "R1"}}'
            in a1.splitlines())
    b1 = nodes["b1"].find(f"{SVG}title").text
    assert f'  book_restaurant({{"restaurant": "pizza hut"}}) -> {ERROR_NOT_ALLOWED}' in b1.splitlines()
    assert "  assistant: Sorry, something went wrong." in b1.splitlines()


def test_svg_react_tree_unrecorded_nodes_and_endings(tmp_path):
    out = save_tree(tree_t3(), tmp_path / "tree.svg")
    nodes = svg_nodes(out.read_text(encoding="utf-8"))
    assert {i: classes(g) for i, g in nodes.items()} == {
        "r": {"golden"}, "p": {"golden"}, "q": {"failed"}, "p1": {"unrecorded"}, "p2": {"unrecorded"}}
    # Nodes whose conversation ended on its own get a dashed ring.
    dashed = {i for i, g in nodes.items() if g.find(f"{SVG}circle").get("stroke-dasharray")}
    assert dashed == {"p1", "p2"}
    assert "ended: user" in nodes["p1"].find(f"{SVG}title").text


def test_find_record_and_errors(tmp_path):
    records = [tree_t1(), tree_t3(), {**tree_t1(), "seed": 1}]
    assert find_record(records, "T3")["task_id"] == "T3"
    assert find_record(records, "T1", seed=1)["seed"] == 1
    with pytest.raises(KeyError, match="seeds 0, 1"):
        find_record(records, "T1")
    with pytest.raises(KeyError, match="tasks in the file: T1, T3"):
        find_record(records, "T9")
    assert find_record([tree_t3()])["task_id"] == "T3"
    with pytest.raises(ValueError, match="use .html, .svg or .png"):
        save_tree(tree_t1(), tmp_path / "tree.pdf")


def test_cli_module(tmp_path, capsys):
    import argparse

    from josh_hf.commands import show_tree

    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(tree_t1()) + "\n" + json.dumps(tree_t3()) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    show_tree.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["show-tree", str(path), "--task", "T1", "--output", str(tmp_path / "t1.html")])
    assert args.func(args) == 0
    assert capsys.readouterr().out == (
        f"wrote {tmp_path / 't1.html'}: task T1, 9 nodes, JOSH reward 1.000, golden path r -> a -> a1 -> d\n")
    assert len(svg_nodes(render_svg(tree_t1()))) == 9


HAS_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib not installed")
def test_png(tmp_path):
    out = save_tree(tree_t1(), tmp_path / "tree.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.skipif(HAS_MPL, reason="matplotlib is installed")
def test_png_without_matplotlib_says_what_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install matplotlib"):
        save_tree(tree_t1(), tmp_path / "tree.png")
    assert not (tmp_path / "tree.png").exists()


def test_html_escapes_model_text():
    record = tree_t1()
    record["nodes"][4]["messages"] = [{"role": "assistant", "content": "<script>alert('x')</script> & \x07bell"}]
    page = render_html(record)
    assert "<script>" not in page
    nodes = svg_nodes(page[page.index("<svg"):page.index("</svg>") + len("</svg>")])
    assert "  assistant: <script>alert('x')</script> & bell" in nodes["a2"].find(f"{SVG}title").text.splitlines()
