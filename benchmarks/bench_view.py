"""Benchmark of `action100m view`: page render time in headless Chromium for full binary trees of
2,001 and 10,001 nodes (text fields as long as the release's), against the card's static
matplotlib figure of the same tree.

    python benchmarks/bench_view.py [--nodes 2001 10001] [--runs 5] [--json out.json]

Per size: `render_tree_page` in Python (median time, peak traced memory, page bytes); in Chromium, the
page's own `window.__renderMs` (JSON parse + DOM + layout, `performance.now()`) and the wall time
of loading the file until the page is ready (median of --runs fresh loads), the JS heap and the
number of DOM elements; a click on a block until the caption panel is filled (median of 50);
baseline: `hub.plots.plot_example_tree` of the same tree. The official sample (917 nodes) is
measured too when present (`--sample`, default as the tests find it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from action100m_hf.data.schema import GPT_MIN_DURATION, tree_table  # noqa: E402
from action100m_hf.data.tree import TreeNode, flatten  # noqa: E402
from action100m_hf.data.view import render_tree_page  # noqa: E402
from action100m_hf.hub.plots import plot_example_tree  # noqa: E402
from action100m_hf.hub.stats import stats_from_batches  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WORDS = ("the person hand places a small red cup onto wooden table then slowly picks up knife and "
         "cuts onion into thin slices while camera shows close view of board").split()
#: Mean words per field in the official sample (plm_caption, llama3_caption, gpt texts).
FIELD_WORDS = {"plm_caption": 78, "llama3_caption": 182, "summary_brief": 22, "summary_detailed": 110,
               "action_brief": 3, "action_detailed": 16, "actor": 3, "plm_action": 5}
SECONDS_PER_LEAF = 2.5
DEFAULT_SAMPLE = Path(
    os.environ.get("ACTION100M_OFFICIAL_SAMPLE",
                   Path(__file__).resolve().parents[2] / "shared" / "data" / "official-sample" / "hySSAAw4t24.json")
)


def full_binary_tree_row(nodes: int, seed: int = 0) -> dict:
    """A balanced full binary tree of `nodes` (odd) nodes, leaves of 2.5 s, every field filled."""
    if nodes % 2 == 0:
        raise ValueError(f"a full binary tree has an odd number of nodes, not {nodes}")
    rng = random.Random(seed)

    def text(field: str) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(FIELD_WORDS[field]))

    def build(start: float, end: float, leaves: int) -> TreeNode:
        fields = {"plm_caption": text("plm_caption"), "plm_action": text("plm_action")}
        if leaves == 1:
            return TreeNode(start, end, fields={**fields, "llama3_caption": text("llama3_caption")})
        cut = round(start + (end - start) * (leaves // 2) / leaves, 2)
        children = [build(start, cut, leaves // 2), build(cut, end, leaves - leaves // 2)]
        if end - start >= GPT_MIN_DURATION:
            fields["gpt"] = {
                "summary": {"brief": text("summary_brief"), "detailed": text("summary_detailed")},
                "action": {"brief": "N/A" if rng.random() < 0.034 else text("action_brief"),
                           "detailed": text("action_detailed"), "actor": text("actor")},
            }
        return TreeNode(start, end, children, fields=fields)

    leaves = (nodes + 1) // 2
    uid = f"bench{nodes}"
    metadata = {"title": f"generated full binary tree of {nodes} nodes", "description": "", "view_count": 0,
                "like_count": 0, "duration": int(leaves * SECONDS_PER_LEAF), "upload_date": "20260101",
                "transcript": []}
    return {"video_uid": uid, "metadata": metadata,
            "nodes": flatten(uid, build(0.0, round(leaves * SECONDS_PER_LEAF, 2), leaves))}


def start_chromium(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000", "--enable-precise-memory-info", "--js-flags=--expose-gc",
                 f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def load(driver, url: str) -> tuple[float, float]:
    """(wall ms from navigation to ready, the page's own __renderMs)."""
    driver.get("about:blank")
    began = time.perf_counter()
    driver.get(url)  # returns after the load event; the page's script runs before it
    while not driver.execute_script("return document.body && document.body.dataset.ready === 'true'"):
        time.sleep(0.005)
    return 1000 * (time.perf_counter() - began), driver.execute_script("return window.__renderMs")


CLICK_JS = """
const blocks = document.querySelectorAll('.block'); const out = [];
for (let k = 0; k < 50; k++) {
  const b = blocks[(k * 7919) % blocks.length]; const t = performance.now();
  b.click(); void document.getElementById('panel').offsetHeight; out.push(performance.now() - t);
}
return out;
"""


def bench_row(driver, row: dict, runs: int, folder: Path) -> dict:
    nodes = len(row["nodes"])
    python_times = []
    for _ in range(runs):
        began = time.perf_counter()
        page = render_tree_page(row)
        python_times.append(1000 * (time.perf_counter() - began))
    python_ms = statistics.median(python_times)
    tracemalloc.start()  # a separate pass: tracing slows allocation several times over
    render_tree_page(row)
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    path = folder / f"tree{nodes}.html"
    path.write_text(page, encoding="utf-8")
    loads = [load(driver, path.as_uri()) for _ in range(runs)]
    heap, elements = driver.execute_script(  # live heap: after a full collection
        "window.gc(); return [performance.memory.usedJSHeapSize, document.getElementsByTagName('*').length]")
    clicks = driver.execute_script(CLICK_JS)

    example = stats_from_batches([tree_table([row])]).example
    began = time.perf_counter()
    plot_example_tree(example, folder / f"plot{nodes}.png")
    plot_ms = 1000 * (time.perf_counter() - began)
    wall = statistics.median(w for w, _ in loads)
    return {
        "video_uid": row["video_uid"],
        "nodes": nodes,
        "levels": max(n["level"] for n in row["nodes"]) + 1,
        "page_bytes": len(page.encode()),
        "python_render_ms": round(python_ms, 1),
        "python_peak_mib": round(python_peak / 2**20, 1),
        "browser_render_ms_median": round(statistics.median(r for _, r in loads), 1),
        "browser_render_ms_all": [round(r, 1) for _, r in loads],
        "browser_wall_ms_median": round(wall, 1),
        "js_heap_mib": round(heap / 2**20, 1),
        "dom_elements": elements,
        "click_to_panel_ms_median": round(statistics.median(clicks), 2),
        "baseline_matplotlib_plot_ms": round(plot_ms, 1),
        "page_total_ms_vs_plot": round((python_ms + wall) / plot_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2001, 10001])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE,
                        help="the official sample's JSON, also measured when present")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        driver = start_chromium(str(Path(tmp) / "profile"))
        try:
            version = driver.capabilities.get("browserVersion")
            rows = [full_binary_tree_row(n) for n in args.nodes]
            if args.sample.is_file():  # the release's own tree, as a real-world point
                columns = json.loads(args.sample.read_text())
                rows.append({name: values[0] for name, values in columns.items()})
            results = [bench_row(driver, row, args.runs, Path(tmp)) for row in rows]
        finally:
            driver.quit()
    report = {"machine": f"{platform.machine()}, {platform.python_version()}, Chromium {version}",
              "results": results}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
