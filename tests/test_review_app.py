"""pipeline/review_app.py and review_queues.py: the teacher's page, driven in a real headless Chromium (the
system's /usr/bin/chromium, no browser download): judge a pair with the keyboard, undo, judge again, record a
correction, score a drawing; the files hold exactly one row per answer and the browser asks nothing of any
address but the page's own. With ARTRANK_SCREENSHOTS=FOLDER it writes a screenshot of each tab there (the
PNGs in docs/figures/ are made so)."""

import os
import shutil
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_run

from pipeline.comparisons import read_comparison_rows
from pipeline.corrections import read_correction_rows
from pipeline.review_queues import ReviewError, pending_pairs

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAIRS_HEADER = "image_a,image_b,tier_a,tier_b,split,p_a_better,spread,reason\n"
AUDIT_HEADER = "rank,file_name,image_id,artist,split,tier,oof_score,hint,p_S,p_A,p_B,p_C,doubt\n"


@pytest.fixture
def review(exported, tmp_path) -> dict:
    """A copy of the trained, exported run and of its data, with small queue files written by hand: three
    pairs, the second of them already judged, and two works to audit."""
    run = copy_run(exported, tmp_path, with_export=True)
    data = Path(shutil.copytree(exported["data"], tmp_path / "data"))
    train = pd.read_csv(run / "splits.csv").query("split == 'train'")
    names, tiers = list(train["file_name"]), dict(zip(train["file_name"], train["tier"]))
    pairs = [(names[0], names[1]), (names[2], names[3]), (names[4], names[5])]
    (run / "review").mkdir()
    (run / "review" / "next_pairs.csv").write_text(PAIRS_HEADER + "".join(
        f"{a},{b},{tiers[a]},{tiers[b]},train,0.5,0.2,the heads disagree\n" for a, b in pairs))
    (run / "review" / "label_audit.csv").write_text(AUDIT_HEADER + "".join(
        f"{rank},{name},{name},someone,train,{tiers[name]},0.1,B,,,,,0.9\n" for rank, name in enumerate(names[6:8], 1)))
    (data / "comparisons.csv").write_text(f"image_a,image_b,winner,rater\n{pairs[1][1]},{pairs[1][0]},a,earlier\n")
    return dict(run=run, data=data, pairs=pairs, audited=names[6:8], tiers=tiers)


def test_the_queue_leaves_out_pairs_already_judged_and_refuses_unknown_images(review):
    from pipeline.review_queues import DataFolder

    data = DataFolder(review["data"])
    assert [(p["image_a"], p["image_b"]) for p in pending_pairs(review["run"], data)] == [review["pairs"][0],
                                                                                          review["pairs"][2]]
    path = review["run"] / "review" / "next_pairs.csv"
    path.write_text(path.read_text() + "images/elsewhere.png,images/a00_00.png,S,A,train,0.5,0.2,x\n")
    with pytest.raises(ReviewError, match=rf"^{path}: line 5: unknown image 'images/elsewhere.png'"):
        pending_pairs(review["run"], data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows_of(data: Path) -> list[dict]:
    rows, problems = read_comparison_rows(data / "comparisons.csv")
    assert problems == []
    return [row for _, row in rows]


ADDRESSES = []  # every address this process looks up or connects to while a test listens (audit events)


def listen(event: str, args) -> None:
    if event in ("socket.getaddrinfo", "socket.connect") and ADDRESSES and ADDRESSES[0] == "listening":
        ADDRESSES.append(str(args[0] if event == "socket.getaddrinfo" else args[1]))


def shot(page, name: str) -> None:
    """A screenshot of the page into $ARTRANK_SCREENSHOTS, in 48 colours (the test's noise images would
    otherwise make each PNG half a megabyte)."""
    if folder := os.environ.get("ARTRANK_SCREENSHOTS"):
        from PIL import Image

        path = Path(folder) / f"review_{name}.png"
        page.screenshot(path=str(path), full_page=True)
        Image.open(path).convert("RGB").quantize(48).save(path, optimize=True)


@pytest.mark.slow
def test_a_teacher_judges_undoes_judges_again_and_corrects_in_a_real_browser(review, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run installs Debian's chromium")
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium chromium-driver)")
    from playwright.sync_api import expect, sync_playwright

    import artrank
    from pipeline.review_app import serve

    port = free_port()
    sys.addaudithook(listen)  # an audit hook stays for the process; it records only between the two markers
    ADDRESSES[:] = ["listening"]
    app = serve(review["run"], review["data"], port=port, load_ranker=lambda: artrank.load(review["run"]), block=False)
    url, asked = f"http://127.0.0.1:{port}", []
    assert app.server_name == "127.0.0.1" and not app.share  # this machine only, no share link
    first, second, third = review["pairs"]
    try:
        with sync_playwright() as playwright:
            # Playwright starts the browser on a fresh profile of its own (the --user-data-dir it refuses).
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: asked.append(request.url))
            page.goto(url)
            expect(page.locator("#judge-info")).to_contain_text("Pair 1: 2 left in the queue")
            page.keyboard.press("a")  # no name yet: nothing is written
            expect(page.locator("#judge-status")).to_contain_text("Type your name above first")
            assert rows_of(review["data"]) == [dict(image_a=second[1], image_b=second[0],
                                                    winner="a", rater="earlier")]
            page.locator("#rater textarea, #rater input").first.fill("Ms Kim")
            page.locator("body").click(position={"x": 5, "y": 5})  # out of the text field: keys judge again
            page.keyboard.press("a")
            expect(page.locator("#judge-status")).to_contain_text("Written to")
            assert rows_of(review["data"])[1:] == [dict(image_a=first[0], image_b=first[1], winner="a", rater="Ms Kim")]
            shot(page, "judge")
            page.keyboard.press("u")
            expect(page.locator("#judge-status")).to_contain_text("Undone")
            assert len(rows_of(review["data"])) == 1
            page.keyboard.press("b")  # the same pair again, judged otherwise
            expect(page.locator("#judge-status")).to_contain_text("Written to")
            page.keyboard.press("t")
            expect(page.locator("#judge-info")).to_contain_text("Every queued pair is judged")
            assert rows_of(review["data"])[1:] == [
                dict(image_a=first[0], image_b=first[1], winner="b", rater="Ms Kim"),
                dict(image_a=third[0], image_b=third[1], winner="tie", rater="Ms Kim")]

            page.get_by_role("tab", name="Audit labels").click()
            expect(page.locator("#audit-details")).to_contain_text("1 of 2")
            page.locator("#audit-tier").get_by_text("C", exact=True).click()
            page.locator("#audit-record").click()
            expect(page.locator("#audit-status")).to_contain_text("Written to")
            expect(page.locator("#audit-details")).to_contain_text("2 of 2")
            shot(page, "audit")
            name = review["audited"][0]
            assert read_correction_rows(review["data"] / "corrections.csv") == [
                (2, dict(file_name=name, tier=review["tiers"][name], corrected_tier="C", rater="Ms Kim"))]

            page.get_by_role("tab", name="Try drawings").click()
            page.locator("#try-a input[type=file]").set_input_files(str(review["data"] / first[0]))
            page.locator("#try-b input[type=file]").set_input_files(str(review["data"] / first[1]))
            page.locator("#try-score").click()
            expect(page.locator("#try-result")).to_contain_text("P(A better than B)", timeout=60_000)
            expect(page.locator("#try-result")).to_contain_text("score")
            shot(page, "try")
            browser.close()
    finally:
        app.close()
        ADDRESSES[0] = "done"
    # The server side: gradio reached no address but this machine's own (no analytics, no version check).
    local = ("127.0.0.1", "('127.0.0.1'", "localhost", "::1", "('::1'")
    assert all(address.startswith(local) for address in ADDRESSES[1:]), ADDRESSES
    assert asked and all(address.startswith(url) or address.startswith(("data:", "blob:")) for address in asked), [
        a for a in asked if not a.startswith(url)]


def test_the_page_s_port_is_a_config_key_and_the_rater_its_own_argument(capsys):
    from pipeline.arguments import parse_config
    from pipeline.config import REVIEW
    from pipeline.review_app import add_arguments

    cfg, args = parse_config("the page", ["--port", "8123", "--rater", "Ms Kim"], script=REVIEW,
                             add_arguments=add_arguments)
    assert (cfg.port, args.rater) == (8123, "Ms Kim")
    with pytest.raises(SystemExit):
        parse_config("the page", ["--port", "0"], script=REVIEW, add_arguments=add_arguments)
    assert "key 'port' must be from 1 to 65535, got 0" in capsys.readouterr().err


def test_the_page_refuses_a_data_source_that_is_not_a_folder_it_can_answer_into(review, tmp_path):
    from pipeline.review_app import Page

    (tmp_path / "table.parquet").write_bytes(b"")
    with pytest.raises(ReviewError, match=r"table.parquet: the review page answers into a data folder"):
        Page(review["run"], tmp_path / "table.parquet", load_ranker=None)


def test_a_port_in_use_is_refused_in_one_line(review):
    from pipeline.review_app import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ReviewError, match=rf"^127.0.0.1:{port}: cannot listen there \(.*\); choose another"):
            serve(review["run"], review["data"], port=port, load_ranker=None, block=False)


def test_a_tab_whose_file_is_missing_says_which_command_writes_it(review):
    from pipeline.review_app import Page, Session

    (review["run"] / "review" / "next_pairs.csv").unlink()
    page = Page(review["run"], review["data"], load_ranker=None)
    session = Session(page)
    missing = review["run"] / "review" / "next_pairs.csv"
    assert page.pair_view(session)[2] == (f"No {missing} yet: run `python review.py pairs --output_dir "
                                          f"{review['run']}` first, then reload this page.")
    assert page.judge("judge-a", "Ms Kim", session)[3] == "Nothing to judge."
    assert len(session.audit) == 2 and page.audit_view(session)[1].startswith("**1 of 2**")  # the other tab works
