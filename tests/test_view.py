"""`action100m view`: the page's data and marks in Python, then the page itself in headless Chromium
(blocks per level, the caption panel, the keyboard, the player seeking a generated video).

The browser tests need Debian's `chromium` and `chromium-driver` (installed by `.ci/run`) and
selenium; without them they skip, except under CI (CI=true), where their absence is a failure.
`ACTION100M_UPDATE_DOCS=1` also copies the screenshot of the generated page to docs/tree_view.png.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from action100m_hf.cli import main as cli_main
from action100m_hf.data import tree
from action100m_hf.data.layout import write_config
from action100m_hf.data.schema import ERRORS_SCHEMA, GPT_MIN_DURATION, tree_table
from action100m_hf.data.tree import TreeNode
from action100m_hf.data.view import (
    MARK_BY_NAME,
    MARKS,
    TreePageError,
    errors_file,
    mark_of,
    node_mark,
    page_data,
    render_tree_page,
    video_url,
    write_tree_page,
)
from action100m_hf.errors import ShardReadError, TreeValidationError
from action100m_hf.hub.plots import example_tree_figure
from action100m_hf.hub.stats import compute_stats

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--window-size=1400,1000", "--hide-scrollbars",
)  # fmt: skip
DOCS_SCREENSHOT = REPO / "docs" / "tree_view.png"

# --- generated data: a card-making video, its scenes as the leaves of an uneven tree ----------

UID = "cardDemo_01"
FPS = 25.0
STEPS = [
    "pick up a sheet of card", "fold the card in half", "crease the fold with a bone folder",
    "measure a border", "cut a window in the front", "glue a photo behind the window",
    "press the photo flat", "ink a flower stamp", "stamp flowers around the window",
    "colour the flowers", "write a greeting inside", "sign the card", "cut a length of ribbon",
    "tie the ribbon round the spine", "put the card in an envelope", "show the finished card",
]
PHASES = ["prepare the card base", "frame the photo", "decorate the front", "finish and show the card"]


def _scenes() -> list[tuple[float, tuple[int, int, int]]]:
    rng = random.Random(7)
    colours = [(214, 93, 58), (62, 130, 178), (92, 160, 96), (196, 160, 60), (140, 92, 170), (60, 160, 160)]
    return [(rng.choice([2.0, 2.4, 2.8, 3.2, 3.6]), colours[i % len(colours)]) for i in range(len(STEPS))]


def _split_tree(leaves: list[TreeNode], rng: random.Random) -> TreeNode:
    """A full binary tree over consecutive leaves, cut at uneven points (as Ward merges are)."""
    if len(leaves) == 1:
        return leaves[0]
    cut = rng.randint(1, len(leaves) - 1) if len(leaves) > 2 else 1
    left, right = _split_tree(leaves[:cut], rng), _split_tree(leaves[cut:], rng)
    return TreeNode(left.start, right.end, [left, right])


def generated_row() -> dict:
    """The tree of the scene video the `generated` fixture encodes: one leaf per scene, every text
    field filled like the release, one "N/A" action, one internal node whose stage 3 failed and one
    leaf whose caption failed."""
    times = np.cumsum([0.0] + [s for s, _ in _scenes()])
    leaves = [TreeNode(round(a, 2), round(b, 2)) for a, b in zip(times[:-1], times[1:])]
    root = _split_tree(leaves, random.Random(3))
    step_of = {id(leaf): step for leaf, step in zip(leaves, STEPS)}
    for node, _, _ in root.walk_bfs():
        covered = [step_of[id(x)] for x, _, _ in node.walk_bfs() if not x.children]
        phase = PHASES[min(int((node.start + node.end) / 2 / times[-1] * len(PHASES)), len(PHASES) - 1)]
        if node is root:
            action = "make a photo greeting card"
        elif len(covered) > 3:
            action = phase
        else:
            action = covered[0] if len(covered) == 1 else f"{covered[0]}, then {covered[-1]}"
        node.fields = {
            "plm_action": action.capitalize(),
            "plm_caption": f"A person's hands {', then '.join(covered)} on a light wooden table.",
            "llama3_caption": None if node.children else
            f"The image shows hands at a wooden table, in the middle of the step: {covered[0]}.",
            "gpt": None,
        }
        if node.children and node.end - node.start >= GPT_MIN_DURATION:
            node.fields["gpt"] = {
                "summary": {"brief": f"The crafter {phase.split(' ', 1)[1]}.",
                            "detailed": "The crafter " + "; ".join(covered) + "."},
                "action": {"brief": action, "detailed": action.capitalize() + ".", "actor": "the crafter"},
            }
    nodes = tree.flatten(UID, root)
    annotated = [n for n in nodes if n["gpt"] is not None]
    annotated[-1]["gpt"]["action"] = {"brief": "N/A", "detailed": "N/A", "actor": "N/A"}
    annotated[-2]["gpt"] = None  # stage 3 failed there: see generated_errors
    leaves_out = [n for n in nodes if n["llama3_caption"] is not None]
    leaves_out[5]["plm_caption"] = None  # the captioner failed there
    metadata = {"title": "Make a photo greeting card", "description": "A generated video.",
                "view_count": 1234, "like_count": 56, "duration": int(times[-1]), "upload_date": "20250314",
                "transcript": [{"time": "0.5", "text": "today we make a card"},
                               {"time": "12.3", "text": "now the photo goes in"}]}
    return {"video_uid": UID, "metadata": metadata, "nodes": nodes}


def generated_errors(row: dict) -> list[dict]:
    """Error records as a build writes them: one per failed node, one for the whole video."""
    no_gpt = [n for n in tree.annotatable(row["nodes"]) if n["gpt"] is None]
    no_caption = [n for n in row["nodes"] if n["plm_caption"] is None]
    return [
        {"video_uid": UID, "stage": "aggregate", "node_id": no_gpt[0]["node_id"],
         "error": "AnnotationError: round 3 draft is not valid JSON"},
        {"video_uid": UID, "stage": "caption", "node_id": no_caption[0]["node_id"],
         "error": "AnnotationError: PerceptionLM returned an empty caption"},
        {"video_uid": UID, "stage": "caption", "node_id": None,
         "error": "middle frame of the last leaf clamped to the last frame"},
        {"video_uid": "another_vid", "stage": "segment", "node_id": None, "error": "not this video"},
    ]


def write_builder_output(folder: Path, rows: list[dict], errors: list[dict]) -> Path:
    """A builder output's layout: `tree/` shards and `build/errors.parquet`."""
    write_config([tree_table(rows)], folder, "tree")
    (folder / "build").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA), folder / "build" / "errors.parquet")
    return folder


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(builder output folder, row, errors, video folder): the generated video and its tree."""
    from action100m_hf.data.synthetic import make_scene_video

    base = tmp_path_factory.mktemp("view")
    row = generated_row()
    errors = generated_errors(row)
    videos = base / "videos"
    cuts = make_scene_video(videos / f"{UID}.mp4", _scenes(), fps=FPS, size=(160, 120), gop=25)
    kids = tree.children_map(row["nodes"])
    leaf_starts = sorted(tree.round_time(n["start"]) for n in row["nodes"] if not kids[n["node_id"]])
    assert cuts == pytest.approx(leaf_starts[1:], abs=1e-9)  # one scene per leaf
    return write_builder_output(base / "out", [row], errors), row, errors, videos


# --- marks and data (no browser) -------------------------------------------------------------


def test_mark_rules_error_wins_then_annotation_then_na():
    assert [m.name for m in MARKS] == ["annotated", "na", "error", "unannotated"]
    assert mark_of(True, "cut onion", False) == "annotated"
    assert mark_of(True, "N/A", False) == "na"
    assert mark_of(False, None, False) == "unannotated"
    assert mark_of(True, "cut onion", True) == mark_of(False, None, True) == "error"
    node = {"node_id": "a", "gpt": {"summary": None, "action": {"brief": "N/A"}}}
    assert node_mark(node) == "na"
    assert node_mark(node, {"a"}) == "error"
    assert node_mark({"node_id": "b", "gpt": None}, {"a"}) == "unannotated"


def test_page_data_marks_errors_and_statistics(generated):
    _, row, errors, _ = generated
    data = page_data(row, errors)
    nodes = row["nodes"]
    by_id = {n["node_id"]: i for i, n in enumerate(nodes)}
    marks = Counter(n["mark"] for n in data["nodes"])
    assert marks == {"annotated": 13, "na": 1, "error": 2, "unannotated": 15}
    failed = [(n["id"], n["errors"]) for n in data["nodes"] if n["errors"]]
    assert failed == sorted(
        [(e["node_id"], [{"stage": e["stage"], "error": e["error"]}]) for e in errors[:2]],
        key=lambda item: by_id[item[0]],
    )
    assert data["video_errors"] == [{"stage": "caption", "error": errors[2]["error"]}]  # not another video's
    assert data["stats"] == {
        "nodes": 31, "leaves": 16, "levels": 8, "annotated": 14, "annotatable": 15,
        "annotated_share": round(14 / 15, 4), "marks": dict(marks), "error_records": 3,
        "violations": 0,
    }
    for i, (n, out) in enumerate(zip(nodes, data["nodes"])):
        assert out["id"] == n["node_id"] and out["level"] == n["level"]
        assert out["parent"] == by_id.get(n["parent_id"])
        assert [nodes[c]["start"] for c in out["children"]] == sorted(nodes[c]["start"] for c in out["children"])
        assert out["no_gpt"] == (None if n["gpt"] else "leaf" if not out["children"]
                                 else "short" if n["end"] - n["start"] < GPT_MIN_DURATION else "missing")
    assert data["transcript"] == [[0.5, "today we make a card"], [12.3, "now the photo goes in"]]


def test_embedded_json_cannot_close_its_script_and_reads_back_exactly():
    row = generated_row()
    hostile = "</script><script>window.pwned = 1</script> <!-- & \u2028 <img src=x onerror=alert(1)>"
    row["nodes"][0]["plm_caption"] = hostile
    row["metadata"]["title"] = "A <b>title</b> with @TREE_JSON@ in it"
    page = render_tree_page(row)
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<title>A &lt;b&gt;title&lt;/b&gt; with @TREE_JSON@ in it - Tree-of-Captions</title>" in page
    embedded = re.search(r'<script type="application/json" id="tree-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in embedded and "\u2028" not in embedded
    assert json.loads(embedded) == json.loads(json.dumps(page_data(row)))
    assert json.loads(embedded)["nodes"][0]["plm_caption"] == hostile


def test_page_is_self_contained():
    page = render_tree_page(generated_row())
    assert "default-src 'none'" in page  # the browser itself refuses any fetch but the video
    assert not re.search(r"https?://|<link|\ssrc=|@import|url\(", page)
    assert "/*@" not in page and "@TREE_JSON@" not in page  # every marker filled


def test_errors_file_of_a_builder_output(generated, tmp_path):
    out, row, _, _ = generated
    table = out / "build" / "errors.parquet"
    shard = next((out / "tree").glob("*.parquet"))
    for source in (out, out / "tree", shard, str(out / "tree" / "*.parquet"), [str(shard)]):
        assert errors_file(source) == str(table)
    single = tmp_path / "trees.parquet"
    pq.write_table(tree_table([row]), single)
    assert errors_file(single) is None


def test_write_tree_page_reads_build_errors_and_finds_the_video(generated, tmp_path):
    out, row, errors, videos = generated
    page = write_tree_page(out, UID, tmp_path / "pages" / "tree.html", videos)
    src = os.path.relpath(videos / f"{UID}.mp4", tmp_path / "pages")
    assert (page.video_uid, page.nodes, page.video_src, page.video_note) == (UID, 31, src, None)
    assert page.errors_file == str(out / "build" / "errors.parquet")
    assert page.path.read_text() == render_tree_page(row, errors=errors[:3], video_src=src)
    assert [p.name for p in (tmp_path / "pages").iterdir()] == ["tree.html"]  # no temporary left
    missing = write_tree_page(out, None, tmp_path / "b.html", tmp_path / "no-videos")
    assert missing.video_src is None and missing.video_note.startswith(f"no video file for video_uid '{UID}'; tried: ")


def test_video_url_is_relative_and_percent_encoded(tmp_path):
    video = tmp_path / "v" / "a#b %c.mp4"
    assert video_url(video, tmp_path / "pages" / "p.html") == "../v/a%23b%20%25c.mp4"
    assert video_url(video, tmp_path / "p.html") == "v/a%23b%20%25c.mp4"


def test_unknown_video_names_it_and_its_error_records_and_keeps_the_old_page(generated, tmp_path):
    out, _, _, _ = generated
    old = tmp_path / "tree.html"
    old.write_text("previous page")
    with pytest.raises(TreePageError) as info:
        write_tree_page(out, "another_vid", old)
    assert str(info.value) == (
        f"video another_vid is not in {out}; its error records in {out / 'build' / 'errors.parquet'}: "
        "segment: not this video"
    )
    assert old.read_text() == "previous page"


def test_broken_tree_names_video_node_and_rule(generated, tmp_path):
    _, row, _, _ = generated
    broken = json.loads(json.dumps(row))
    orphan = broken["nodes"][3]
    orphan["parent_id"] = "nowhere"
    source = tmp_path / "broken.parquet"
    pq.write_table(tree_table([broken]), source)
    page = tmp_path / "tree.html"
    page.write_text("previous page")
    with pytest.raises(TreeValidationError, match=re.escape(
            f"video {UID}: cannot draw the tree: node {orphan['node_id']}: [unknown_parent] parent_id nowhere "
            "is not a node")):
        write_tree_page(source, UID, page)
    assert page.read_text() == "previous page"
    with pytest.raises(TreeValidationError, match=re.escape(f"video {UID}: cannot draw the tree: [root_count] the tree has no nodes")):
        render_tree_page({"video_uid": UID, "metadata": None, "nodes": []})


def test_bad_errors_table_names_the_file(generated, tmp_path):
    out, _, _, _ = generated
    bad = tmp_path / "errors.parquet"
    pq.write_table(pa.table({"video_uid": [UID], "message": ["x"]}), bad)
    with pytest.raises(TreePageError, match=re.escape(f"errors table {bad}: missing column(s) stage, node_id, error")):
        write_tree_page(out, UID, tmp_path / "p.html", errors=bad)
    bad.write_bytes(b"not parquet")
    with pytest.raises(ShardReadError, match=re.escape(f"errors table {bad}: not a readable Parquet file")):
        write_tree_page(out, UID, tmp_path / "p.html", errors=bad)


def test_cli_view(generated, tmp_path, capsys):
    out, row, errors, videos = generated
    page = tmp_path / "tree.html"
    assert cli_main(["view", str(out), UID, "--out", str(page), "--video-root", str(videos)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {page}: video {UID}, 31 nodes",
        f"error records from {out / 'build' / 'errors.parquet'}",
        f"player: {video_url(videos / f'{UID}.mp4', page)}",
    ]
    assert page.read_text() == render_tree_page(row, errors=errors[:3], video_src=video_url(videos / f"{UID}.mp4", page))
    assert cli_main(["view", str(out), "nope", "--out", str(page)]) == 1
    assert capsys.readouterr().err == f"action100m view: error: video nope is not in {out}\n"


def test_card_plot_draws_the_page_marks_and_levels(generated):
    out, row, errors, _ = generated
    example = compute_stats(out).example
    node_errors = {e["node_id"] for e in errors[:2]}
    assert example.marks == [node_mark(n, node_errors) for n in row["nodes"]]
    assert example.marks == [n["mark"] for n in page_data(row, errors)["nodes"]]
    axes = example_tree_figure(example).axes[0]
    drawn = sorted(
        (round(p.get_x(), 2), round(p.get_x() + p.get_width(), 2), round(p.get_y() + p.get_height() / 2),
         p.get_gid(), p.get_facecolor())
        for p in axes.patches
    )
    expected = sorted(
        (round(n["start"], 2), round(n["end"], 2), n["level"], m, mcolors.to_rgba(MARK_BY_NAME[m].color))
        for n, m in zip(row["nodes"], example.marks)
    )
    assert drawn == expected
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == ["annotated (gpt) (13)", 'action "N/A" (1)', "error record (2)", "not annotated (15)"]


# --- the page in headless Chromium -----------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
    driver.get_log("browser")  # start each page with an empty console


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def block(driver, index: int):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'.block[data-i="{index}"]')


def selected(driver) -> int:
    return int(driver.execute_script("return document.querySelector('.block.sel').dataset.i"))


def field(driver, name: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'#panel [data-field="{name}"]').get_attribute("textContent")


@pytest.mark.slow
def test_official_sample_in_chromium(browser, official_sample, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page = tmp_path / "sample.html"
    page.write_text(render_tree_page(official_sample))
    open_page(browser, page)
    nodes = official_sample["nodes"]
    per_level = browser.execute_script(
        "return Array.from(document.querySelectorAll('#rows .row')).map(r => [Number(r.dataset.level), r.children.length])")
    assert dict(per_level) == Counter(n["level"] for n in nodes)
    assert len(per_level) == 17
    marks = browser.execute_script(
        "return Array.from(document.querySelectorAll('.block')).map(b => [Number(b.dataset.i), b.className.match(/m-(\\w+)/)[1]])")
    assert dict(marks) == {i: node_mark(n) for i, n in enumerate(nodes)}
    assert browser.execute_script("return window.__renderMs") > 0
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched

    # The longest leaf with a middle-frame caption: click it, read the panel.
    kids = tree.children_map(nodes)
    i = max((k for k, n in enumerate(nodes) if not kids[n["node_id"]] and n["llama3_caption"]),
            key=lambda k: nodes[k]["end"] - nodes[k]["start"])
    leaf = nodes[i]
    block(browser, i).click()
    assert selected(browser) == i
    assert field(browser, "node_id") == leaf["node_id"]
    assert field(browser, "plm_caption") == leaf["plm_caption"]
    assert field(browser, "plm_action") == leaf["plm_action"]
    assert field(browser, "llama3_caption") == leaf["llama3_caption"]
    assert field(browser, "gpt").startswith("none: a leaf")
    start, end = tree.round_time(leaf["start"]), tree.round_time(leaf["end"])
    assert field(browser, "times").endswith(f"({end - start:.2f} s)")
    by_id = {n["node_id"]: k for k, n in enumerate(nodes)}
    path, at = [], leaf["parent_id"]
    while at is not None:
        path.insert(0, by_id[at])
        at = nodes[by_id[at]]["parent_id"]
    crumbs = browser.execute_script(
        "return Array.from(document.querySelectorAll('#panel .path .crumb')).map(c => Number(c.dataset.i))")
    assert crumbs == path + [i] and len(path) == leaf["level"]

    # An annotated "N/A" node: its gpt fields, each in its row.
    j = next(k for k, n in enumerate(nodes) if node_mark(n) == "na")
    browser.execute_script("arguments[0].click()", block(browser, j))
    gpt = nodes[j]["gpt"]
    assert field(browser, "mark") == 'action "N/A"'
    assert [field(browser, f"gpt.{a}.{b}") for a, b in
            [("summary", "brief"), ("summary", "detailed"), ("action", "brief"), ("action", "detailed"), ("action", "actor")]] == [
        gpt["summary"]["brief"], gpt["summary"]["detailed"], "N/A", gpt["action"]["detailed"], gpt["action"]["actor"]]

    # Hover shows the times and the action of a block.
    ActionChains(browser).move_to_element(block(browser, 1)).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed()
    assert tip.text.splitlines()[1] == nodes[1]["gpt"]["action"]["brief"]
    assert console_errors(browser) == []


@pytest.mark.slow
def test_keyboard_moves_between_siblings_parent_and_child(browser, generated, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    out, row, _, videos = generated
    page = write_tree_page(out, UID, tmp_path / "tree.html").path
    open_page(browser, page)
    data = page_data(row)["nodes"]
    root = next(i for i, n in enumerate(data) if n["parent"] is None)
    assert selected(browser) == root  # the page opens on the root
    a, b = data[root]["children"]
    a1, a2 = data[a]["children"]

    def press(*keys) -> int:
        chain = ActionChains(browser)
        for key in keys:
            if key.startswith("shift+"):
                chain.key_down(Keys.SHIFT).send_keys(key[6:]).key_up(Keys.SHIFT)
            else:
                chain.send_keys(key)
        chain.perform()
        return selected(browser)

    block(browser, a).click()
    assert selected(browser) == a
    assert press(Keys.ARROW_RIGHT) == b  # next sibling
    assert press(Keys.ARROW_RIGHT) == b  # no sibling after the last: stays
    assert press(Keys.ARROW_LEFT) == a
    assert press(Keys.ARROW_LEFT) == a
    assert press(Keys.ARROW_DOWN) == a1  # first child
    assert press(Keys.ARROW_RIGHT) == a2
    assert press(Keys.ARROW_UP) == a
    assert press(Keys.ARROW_DOWN) == a2  # back to the child we came from
    level = [i for i in range(len(data)) if data[i]["level"] == data[a2]["level"]]
    level.sort(key=lambda i: data[i]["start"])
    assert press("shift+" + Keys.ARROW_RIGHT) == level[level.index(a2) + 1]  # same level, across parents
    assert press("shift+" + Keys.ARROW_LEFT) == a2
    assert press(Keys.HOME) == root
    assert press(Keys.ARROW_UP) == root
    leaf = next(i for i, n in enumerate(data) if not n["children"])
    block(browser, leaf).click()
    assert press(Keys.ARROW_DOWN) == leaf  # a leaf has no child
    assert field(browser, "node_id") == data[leaf]["id"]
    assert browser.execute_script("return document.querySelectorAll('.block.sel').length") == 1
    ancestors = browser.execute_script(
        "return Array.from(document.querySelectorAll('.block.anc')).map(b => Number(b.dataset.i)).sort((x, y) => x - y)")
    chain, at = [], data[leaf]["parent"]
    while at is not None:
        chain.append(at)
        at = data[at]["parent"]
    assert ancestors == sorted(chain)

    # Zoom keeps the selection in view; the URL names the selected node and reopens it.
    width = browser.execute_script("return document.getElementById('canvas').offsetWidth")
    assert press("+") == leaf
    assert browser.execute_script("return document.getElementById('canvas').offsetWidth") == 2 * width
    assert browser.execute_script(
        "const b = document.querySelector('.block.sel').getBoundingClientRect(),"
        " s = document.getElementById('scroller').getBoundingClientRect();"
        " return b.left >= s.left && b.right <= s.right")
    scrolled, indent = browser.execute_script(  # the root's label moved into view
        "return [document.getElementById('scroller').scrollLeft,"
        f" parseFloat(document.querySelector('.block[data-i=\"{root}\"]').style.textIndent)]")
    assert scrolled > 0 and indent == pytest.approx(scrolled + 3, abs=0.5)
    assert press("0") == leaf
    assert browser.execute_script("return document.getElementById('canvas').offsetWidth") == width
    assert browser.execute_script("return location.hash") == "#" + data[leaf]["id"]
    browser.get(page.resolve().as_uri() + "#" + data[a2]["id"])
    assert selected(browser) == a2
    assert browser.execute_script("return document.getElementById('player-box').hidden")  # no --video-root
    assert console_errors(browser) == []


@pytest.mark.slow
def test_player_seeks_to_a_clicked_block_and_playback_highlights_its_blocks(browser, generated, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from action100m_hf.data.synthetic import decode_index

    out, row, errors, videos = generated
    page = write_tree_page(out, UID, tmp_path / "pages" / "tree.html", videos).path
    open_page(browser, page)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.execute_script("return document.getElementById('player').readyState >= 2"))
    data = page_data(row, errors)["nodes"]

    # A level-2 block that starts inside the video: the player seeks to its start.
    i = next(k for k, n in enumerate(data) if n["level"] == 2 and n["start"] > 0)
    start = data[i]["start"]
    assert start * FPS == round(start * FPS)  # on a frame: the frame shown is exact
    block(browser, i).click()
    wait.until(lambda d: d.execute_script(
        "const p = document.getElementById('player'); return !p.seeking && p.readyState >= 2"
        " && Math.abs(p.currentTime - arguments[0]) < 1e-6", start))
    browser.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    player = browser.find_element(By.ID, "player")
    shot = tmp_path / "player.png"
    shot.write_bytes(player.screenshot_as_png)
    frame = np.asarray(Image.open(shot).convert("RGB"))
    assert decode_index(frame, encoded_size=(160, 120)) == round(start * FPS)

    def playing() -> list[int]:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('.block.play')).map(b => Number(b.dataset.i)).sort((x, y) => x - y)")

    def containing(t: float) -> list[int]:
        return sorted(k for k, n in enumerate(data) if n["start"] <= t < n["end"])

    assert playing() == containing(start)
    browser.execute_script("const p = document.getElementById('player'); p.muted = true; p.play()")
    wait.until(lambda d: d.execute_script("return document.getElementById('player').currentTime") > start + 1.0)
    t = browser.execute_script("const p = document.getElementById('player'); p.pause(); return p.currentTime")
    wait.until(lambda d: playing() == containing(t))
    assert len(playing()) == len({data[k]["level"] for k in containing(t)})  # one block per level at most

    # The screenshot of the whole page (README's picture comes from here).
    j = next(k for k, n in enumerate(data) if n["mark"] == "error" and n["children"])
    block(browser, j).click()
    wait.until(lambda d: d.execute_script("return !document.getElementById('player').seeking"))
    browser.execute_script("window.scrollTo(0, 0)")
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "title")).perform()  # no tooltip
    page_shot = tmp_path / "tree_view.png"
    assert browser.save_screenshot(str(page_shot))
    assert list(Image.open(page_shot).size) == browser.execute_script("return [innerWidth, innerHeight]")
    if os.environ.get("ACTION100M_UPDATE_DOCS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(page_shot, DOCS_SCREENSHOT)
    assert field(browser, "errors") == "aggregate: AnnotationError: round 3 draft is not valid JSON"
    assert console_errors(browser) == []


@pytest.mark.slow
def test_page_marks_and_levels_are_the_card_plot_ones(browser, generated, tmp_path):
    from selenium.webdriver.common.by import By

    out, row, errors, _ = generated
    open_page(browser, write_tree_page(out, UID, tmp_path / "tree.html").path)
    drawn = browser.execute_script(
        "return Array.from(document.querySelectorAll('.block')).map(b => [Number(b.dataset.i),"
        " Number(b.parentElement.dataset.level), b.className.match(/m-(\\w+)/)[1]])")
    example = compute_stats(out).example
    assert sorted(drawn) == [[i, level, mark] for i, (level, mark) in enumerate(zip(example.levels, example.marks))]
    stats = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('[data-stat]')).map(e => [e.dataset.stat, e.textContent]))")
    assert stats == {"nodes": "31", "leaves": "16", "levels": "8", "annotated": "14 of 15 annotatable (93.3 %)",
                     "na": "1", "error_records": "3", "violations": "0"}
    assert browser.execute_script("return document.getElementById('video-errors').textContent") == (
        "caption: middle frame of the last leaf clamped to the last frame")
    legend = browser.find_element(By.CSS_SELECTOR, '#legend [data-mark="error"]')
    marked = [i for i, mark in enumerate(example.marks) if mark == "error"]
    assert [legend.click() or selected(browser) for _ in range(3)] == [*marked, marked[0]]  # steps, then wraps


@pytest.mark.slow
def test_captions_are_shown_as_text_in_chromium(browser, tmp_path):
    row = generated_row()
    hostile = "</script><script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> & \u2028"
    row["nodes"][0]["plm_caption"] = hostile
    page = tmp_path / "hostile.html"
    page.write_text(render_tree_page(row))
    open_page(browser, page)
    assert field(browser, "plm_caption") == hostile
    assert browser.execute_script("return [window.pwned, document.querySelectorAll('img').length]") == [None, 0]
