"""Drive the real page in headless Chromium (Debian's package) with Playwright."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
from PIL import Image

from interpret.models import ModelSpec
from interpret.toy.examples import toy_examples
from interpret.ui import GROUPS
from tests.conftest import ROOT, in_ci
from tests.local_server import start_app, stop_app
from tests.markdown import shown

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("INTERPRET_SCREENSHOTS", tempfile.mkdtemp(prefix="interpret-screens-")))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        process, url = start_app(tmp_path_factory.mktemp("indexes"))  # the app builds the toy's labels there
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url
    stop_app(process)


def group_of(name: str) -> str:
    return next(group for group, tabs in GROUPS if name in [tab.TITLE for tab in tabs])


def open_tab(page, name: str) -> None:
    """Open a tab: first its group, then the tab itself (no tab sits in an overflow menu)."""
    page.get_by_role("tab", name=group_of(name), exact=True).click()
    tab = page.get_by_role("tab", name=name, exact=True)
    tab.click()
    page.wait_for_timeout(200)


def map_a_token(page, token: int, word: str) -> None:
    """On the Interactions tab (toy model: image layer 2, text layer 0), run and tick token `token` (`word`), and
    wait for its map and summary."""
    page.locator("#inter-image-layer input").fill("2")
    page.locator("#inter-text-layer input").fill("0")
    page.locator("#inter-run").click()
    page.wait_for_selector("#inter-map img", timeout=60_000)
    page.get_by_label(f"{token}: {word}").check()
    page.wait_for_function(f"document.querySelector('#inter-summary').innerText.includes(\"'{word}'\")",
                           timeout=30_000)


@pytest.fixture(scope="module")
def page(server):
    if not shutil.which(CHROMIUM):
        if in_ci():
            pytest.fail(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        page.wait_for_selector("#caption textarea", timeout=60_000)
        yield page
        browser.close()


def test_heads_tab_shows_the_grid_and_the_table(page):
    path, caption = toy_examples()[0]
    page.locator("#image input[type=file]").set_input_files(path)
    page.locator("#caption textarea").fill(caption)
    page.locator("#heads-run").click()
    page.wait_for_selector("#heads-grid img", timeout=60_000)
    # ten rows of (rank, layer, head, contribution): ten decimal numbers in the table's text
    page.wait_for_function(
        "(document.querySelector('#heads-table').innerText.match(/-?\\d+\\.\\d+/g) || []).length >= 10",
        timeout=30_000)
    assert "Cosine score" in page.locator("#heads-summary").inner_text()


def test_empty_caption_shows_a_message_and_the_page_keeps_working(page):
    page.locator("#caption textarea").fill("")
    page.locator("#heads-run").click()
    page.get_by_text("The caption is empty").first.wait_for(timeout=30_000)
    page.locator("#caption textarea").fill("a red circle")
    page.locator("#heads-run").click()
    page.wait_for_function(
        "document.querySelector('#heads-summary').innerText.includes('Cosine score')", timeout=30_000)


def test_head_atlas_tab_describes_a_head(page):
    open_tab(page, "Head atlas")
    page.locator("#atlas-layer input").fill("3")
    page.locator("#atlas-head input").fill("2")
    page.locator("#atlas-run").click()
    page.wait_for_selector("#atlas-grid img", timeout=120_000)
    summary = page.locator("#atlas-summary").inner_text()
    assert "Head 3.2" in summary and "property" in summary
    page.wait_for_function(
        "/something|circle|square|triangle|cross/.test(document.querySelector('#atlas-table').innerText)",
        timeout=30_000)


def test_named_api_endpoint_answers_gradio_client(server, photo):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    grid, table, summary = client.predict(ModelSpec("ViT-B-32", None).label, handle_file(str(photo)), "a dog", 4,
                                          api_name="/heads")
    assert os.path.isfile(grid) and len(table["data"]) == 4 and "Cosine score" in summary
    info = client.predict(ModelSpec("ViT-B-32", None).label, api_name="/model_info")
    assert "12 layers x 12 heads" in info


def test_api_reports_a_broken_upload_and_keeps_serving(server, tmp_path, photo):
    from gradio_client import Client, handle_file

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match="'broken.jpg' (is not an image|could not be decoded)"):
        client.predict(ModelSpec("ViT-B-32", None).label, handle_file(str(broken)), "a dog", 4, api_name="/heads")
    _, table, _ = client.predict(ModelSpec("ViT-B-32", None).label, handle_file(str(photo)), "a dog", 2,
                                 api_name="/heads")
    assert len(table["data"]) == 2


def test_property_neighbours_tab_shows_a_gallery(page):
    path, _ = toy_examples()[0]
    page.locator("#image input[type=file]").set_input_files(path)
    open_tab(page, "Property neighbours")
    page.locator("#property-run").click()
    page.wait_for_selector("#property-gallery img", timeout=120_000)
    assert "heads labelled so" in page.locator("#property-summary").inner_text()
    assert page.locator("#property-gallery").get_by_text("scene-").count() >= 1
    page.screenshot(path=str(SCREENSHOTS / "property-neighbours.png"), full_page=True)


def test_text_neighbours_tab_shows_a_gallery(page):
    open_tab(page, "Text neighbours per head")
    page.locator("#text-nn-text textarea").fill("something blue")
    page.locator("#text-nn-run").click()
    page.wait_for_selector("#text-nn-gallery img", timeout=120_000)
    assert "Head 3.0" in page.locator("#text-nn-summary").inner_text()


def test_hostile_text_shows_as_text_in_the_page(page):
    """A visitor's text that is HTML and Markdown is shown as typed: no element comes out of it."""
    attack = "<img src=x onerror=alert(1)> [link](javascript:alert(1)) **bold**"
    open_tab(page, "Text neighbours per head")
    page.locator("#text-nn-text textarea").fill(attack)
    page.locator("#text-nn-run").click()
    page.wait_for_function("document.querySelector('#text-nn-summary').innerText.includes('onerror')",
                           timeout=60_000)
    summary = page.locator("#text-nn-summary")
    assert attack in summary.inner_text()
    assert summary.locator("img, a, strong:has-text('bold')").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "hostile-text.png"), full_page=False)


def test_neighbour_endpoints_answer_gradio_client(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    path, _ = toy_examples()[2]
    toy = ModelSpec("toy", None).label
    gallery, summary = client.predict(toy, handle_file(path), 1, 2, 3, api_name="/image_neighbours")
    assert len(gallery) == 3 and "Head 1.2" in summary
    gallery, summary = client.predict(toy, "a circle", -1, 0, 2, api_name="/text_neighbours")
    assert len(gallery) == 2
    gallery, summary = client.predict(toy, handle_file(path), "shape", 4, api_name="/property_neighbours")
    assert len(gallery) == 4 and "shape" in summary


def test_topic_segmentation_tab_draws_a_map_with_a_download_button(page):
    path, _ = toy_examples()[0]
    page.locator("#image input[type=file]").set_input_files(path)
    open_tab(page, "Topic segmentation")
    page.locator("#topic-text textarea").fill("something red")
    page.locator("#topic-relative textarea").fill("something blue\nsomething green")
    page.locator("#topic-run").click()
    page.wait_for_selector("#topic-map img", timeout=60_000)
    summary = page.locator("#topic-summary").inner_text()
    assert "8x8 grid" in summary and "something red − mean(something blue, something green)" in summary
    assert page.locator("#topic-map").get_by_role("button", name="Download").count() + \
        page.locator("#topic-map a[download]").count() >= 1
    page.screenshot(path=str(SCREENSHOTS / "topic.png"), full_page=True)


def test_an_opacity_typed_and_entered_redraws_the_map(page):
    open_tab(page, "Topic segmentation")
    if not page.locator("#topic-map img").count():
        page.locator("#image input[type=file]").set_input_files(toy_examples()[0][0])
        page.locator("#topic-text textarea").fill("something red")
        page.locator("#topic-run").click()
        page.wait_for_selector("#topic-map img", timeout=60_000)
    before = page.locator("#topic-map img").get_attribute("src")
    box = page.locator("#topic-opacity input[type=number]")
    box.fill("0.15")
    box.press("Enter")
    page.wait_for_function(f"document.querySelector('#topic-map img').src !== {before!r}", timeout=30_000)


def test_topic_and_contrastive_endpoints_answer_gradio_client(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    path, _ = toy_examples()[1]
    picture, summary = client.predict(ModelSpec("toy", None).label, handle_file(path), "something red",
                                      "something blue", "all", 0.5, api_name="/contrastive_segmentation")
    assert os.path.isfile(picture) and picture.endswith(".png") and "something red − something blue" in shown(summary)
    picture, summary = client.predict(ModelSpec("toy", None).label, handle_file(path), "something red", "all", 0.5,
                                      "something blue\nsomething green", api_name="/topic_segmentation")
    assert os.path.isfile(picture) and "something red − mean(something blue, something green)" in shown(summary)


def test_interactions_tab_maps_a_ticked_token_and_a_clicked_box(page):
    path, _ = toy_examples()[0]
    page.locator("#image input[type=file]").set_input_files(path)
    page.locator("#caption textarea").fill("a red circle and a blue square")
    open_tab(page, "Interactions")
    map_a_token(page, 2, "red")
    picker = page.locator("#inter-picker img")
    picker.wait_for(timeout=30_000)
    size = picker.bounding_box()
    picker.click(position={"x": size["width"] * 0.1, "y": size["height"] * 0.1})
    page.wait_for_function("document.querySelector('#inter-box textarea, #inter-box input').value.split(',')"
                           ".length === 2", timeout=30_000)
    picker.click(position={"x": size["width"] * 0.6, "y": size["height"] * 0.6})
    page.wait_for_function("document.querySelector('#inter-summary').innerText.includes('the box (')",
                           timeout=30_000)
    page.wait_for_selector("#inter-span img", timeout=30_000)  # the tokens, on the map's colours, with a key
    page.screenshot(path=str(SCREENSHOTS / "interactions.png"), full_page=True)


def test_interaction_endpoint_answers_gradio_client(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    path, _ = toy_examples()[0]
    picture, strip, summary, scores = client.predict(ModelSpec("toy", None).label, handle_file(path),
                                                     "a red circle", -1, -1, 4, "midpoint", "2", "0, 0, 32, 32", 0.6,
                                                     api_name="/interaction")
    assert os.path.isfile(picture) and os.path.isfile(strip)
    assert "'red'" in summary and "the box (0, 0, 32, 32)" in summary
    assert [token for token, _ in scores] == ["<start>", "a", "red", "circle", "<end>"]


def test_mutual_knowledge_tab_shows_parts_concepts_and_curve(page):
    path, _ = toy_examples()[0]
    page.locator("#image input[type=file]").set_input_files(path)
    open_tab(page, "Mutual knowledge")
    page.locator("#mutual-run").click()
    for element in ("#mutual-parts-map img", "#mutual-venn img", "#mutual-curve img"):
        page.wait_for_selector(element, timeout=60_000)
    assert "Predicted" in page.locator("#mutual-summary").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "mutual.png"), full_page=True)


def test_mutual_knowledge_endpoint_answers_gradio_client(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    path, _ = toy_examples()[3]  # a purple square
    summary, parts, venn, curve = client.predict(ModelSpec("toy", None).label, handle_file(path),
                                                 "toy world: 24 classes 'a {colour} {shape}'", None, "{}", 5,
                                                 api_name="/mutual_knowledge")
    assert "Predicted **a purple square**" in summary and all(os.path.isfile(p) for p in (parts, venn, curve))


FORCED_ERRORS = {  # group -> (tab, how to cause an error there, the panel, what it must say)
    "Image and caption": ("Heads", lambda page: (page.locator("#caption textarea").fill(""),
                                                  page.locator("#heads-run").click()),
                          "#heads-error", "caption is empty"),
    "The model": ("Head atlas", lambda page: (page.locator("#atlas-layer input").fill("99"),
                                               page.locator("#atlas-run").click()),
                  "#atlas-error", "there is no layer 99"),
    "A database": ("Text neighbours per head", lambda page: (page.locator("#text-nn-text textarea").fill(""),
                                                              page.locator("#text-nn-run").click()),
                   "#text-nn-error", "Type a text to search"),
    "Zero-shot classes": ("Mutual knowledge", lambda page: (page.get_by_label("my descriptor file (JSON)").check(),
                                                            page.locator("#mutual-run").click()),
                          "#mutual-error", "Upload a JSON file"),
}


@pytest.mark.parametrize("group", [group for group, _ in GROUPS])
def test_each_group_shows_all_its_tabs_and_errors_in_the_panel(page, group, tmp_path):
    path, caption = toy_examples()[1]
    page.locator("#image input[type=file]").set_input_files(path)
    page.locator("#caption textarea").fill(caption)
    tab, cause, panel, message = FORCED_ERRORS[group]
    for width in (1280, 1400):
        page.set_viewport_size({"width": width, "height": 1000})
        page.get_by_role("tab", name=group, exact=True).click()
        titles = [module.TITLE for name, modules in GROUPS if name == group for module in modules]
        for title in titles:
            assert page.get_by_role("tab", name=title, exact=True).is_visible(), (width, title)
        assert not page.get_by_role("button", name="More tabs").is_visible()
    open_tab(page, tab)
    cause(page)
    page.wait_for_function(f"document.querySelector('{panel}') && "
                           f"document.querySelector('{panel}').innerText.includes({message!r})", timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / f"group-{group.split()[0].lower()}.png"))
    assert "Error" not in page.locator(".toast-body").all_inner_texts()  # the message is in the panel, not a toast


def test_a_model_that_cannot_be_loaded_leaves_the_previous_one_selected(page):
    page.get_by_role("tab", name="Image and caption", exact=True).click()
    toy = ModelSpec("toy", None).label
    picker = page.locator("#model input")
    picker.click()
    page.get_by_role("option", name="ViT-B-32 / openai", exact=True).click()  # offline: its weights cannot be had
    page.wait_for_function("document.querySelector('#model-error').innerText.includes('could not be loaded')",
                           timeout=60_000)
    page.wait_for_function(f"document.querySelector('#model input').value === {toy!r}", timeout=30_000)
    assert page.locator("#model-info").inner_text().startswith(toy)
    page.screenshot(path=str(SCREENSHOTS / "model-error.png"))


def test_the_space_smoke_script_calls_every_endpoint(server):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "space_smoke.py"), server], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("| /") == 11 and "FAILED" not in result.stdout


def test_a_visitor_builds_a_database_from_a_zip_in_the_page(page, tmp_path):
    import zipfile

    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path, _ in toy_examples():
            bundle.write(path, Path(path).name)
    open_tab(page, "Build a database")
    page.locator("#build-archive input[type=file]").set_input_files(str(archive))
    page.wait_for_timeout(500)
    page.locator("#build-run").click()
    page.wait_for_function("document.querySelector('#build-status').innerText.includes('now search them')",
                           timeout=120_000)
    page.screenshot(path=str(SCREENSHOTS / "build.png"))
    open_tab(page, "Image neighbours per head")
    page.locator("#image input[type=file]").set_input_files(toy_examples()[0][0])
    page.locator("#image-nn-run").click()
    page.wait_for_function("document.querySelector('#image-nn-summary').innerText.includes('of 6 images')",
                           timeout=60_000)


def test_bold_text_is_drawn_in_one_typeface(page):
    """Gradio's semi-bold Source Sans file holds a few glyphs only: bold text fell back to another typeface for
    the rest. The theme (common.THEME) uses the complete bold file for every heavier weight."""
    client = page.context.new_cdp_session(page)
    client.send("DOM.enable")
    client.send("CSS.enable")
    root = client.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    bold = client.send("DOM.querySelectorAll", {"nodeId": root, "selector": "strong, button"})["nodeIds"]
    assert bold
    for node in bold[:20]:
        fonts = client.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        assert len({font["familyName"] for font in fonts}) <= 1, fonts
    client.detach()


def test_the_models_tab_and_removing_heads_on_the_heads_tab(page):
    open_tab(page, "Models")
    page.locator("#models-run").click()
    page.wait_for_selector("#models-grid img", timeout=120_000)
    page.wait_for_selector("#models-curves img", timeout=120_000)
    assert "association" in page.locator("#models-summary").inner_text()
    page.locator("#models-grid").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "models.png"))
    path, caption = toy_examples()[1]
    page.locator("#image input[type=file]").set_input_files(path)
    page.locator("#caption textarea").fill(caption)
    open_tab(page, "Heads")
    page.locator("#heads-remove textarea, #heads-remove input").first.fill("3.*")
    page.locator("#heads-run").click()
    page.wait_for_function("document.querySelector('#heads-summary').innerText.includes('Without heads 3.*')",
                           timeout=60_000)


def test_a_link_opens_the_same_view_computed_again(server, page):
    """'Link to this view' gives the model, tab, caption, texts and example picture in the URL; opening it shows
    that view and computes it again. An upload is never in a link."""
    from interpret.ui.links import examples

    example = sorted(examples())[1]
    page.goto(server + "?" + urlencode({"model": ModelSpec("toy", None).label, "tab": "Topic segmentation",
                                        "example": example, "text": "something blue", "relative": "something red",
                                        "caption": "a blue circle", "opacity": "0.4"}))
    page.wait_for_selector("#topic-map img", timeout=120_000)  # computed again, without a click
    assert page.locator("#topic-text textarea").input_value() == "something blue"
    assert page.locator("#caption textarea").input_value() == "a blue circle"
    assert "something blue − something red" in page.locator("#topic-summary").inner_text()
    page.locator("#link-button").click()
    page.wait_for_function("document.querySelector('#link textarea').value.includes('example=')", timeout=30_000)
    link = page.locator("#link textarea").input_value()
    assert link.startswith(server) and "tab=Topic+segmentation" in link and f"example={example}" in link
    assert "text=something+blue" in link and "opacity=0.4" in link
    page.screenshot(path=str(SCREENSHOTS / "link.png"))
    page.goto(server + "?model=..%2F..%2Fetc&tab=%3Cscript%3E&example=..%2Fapp.py&layer=1e999")  # hostile: dropped
    page.wait_for_selector("#caption textarea", timeout=60_000)
    assert page.locator("#model input").input_value() == ModelSpec("toy", None).label
    page.goto(server)
    page.wait_for_selector("#caption textarea", timeout=60_000)


LINKED_VIEWS = [  # a tab, inputs that are not its defaults, and the summary that says the view was computed
    ("Interactions", {"image_layer": "2", "text_layer": "0", "steps": "6", "tokens": "2", "box": "0, 0, 32, 32"},
     "inter-summary", "image layer 2, text layer 0, 6 steps"),
    ("Contrastive segmentation", {"text_a": "something blue", "text_b": "something yellow", "heads": "3",
                                  "opacity": "0.3"}, "contrast-summary", "layer 3"),
    ("Text neighbours per head", {"text": "something yellow", "layer": "3", "head": "1", "k": "5"},
     "text-nn-summary", "Head 3.1"),
    ("Compare explanations", {"methods": ["rollout", "legrad"], "baseline": "blur"}, "compare-summary",
     "blurred copy"),
    ("Head atlas", {"layer": "2", "head": "5"}, "atlas-summary", "2.5"),
    ("Heads", {"top": "7", "remove": "3.1"}, "heads-summary", "3.1"),
]


@pytest.mark.parametrize("tab, values, summary, shows", LINKED_VIEWS, ids=[view[0] for view in LINKED_VIEWS])
def test_a_link_holds_the_whole_view_of_its_tab(server, page, tab, values, summary, shows):
    """Open a view with non-default inputs from a link, make its link, open that in a new page: the same inputs
    (the link made there is the same link) and the same summary; and the link names only that tab's inputs."""
    from interpret.ui.links import examples

    example = sorted(examples())[1]  # a blue circle and a yellow square
    query = urlencode({"model": ModelSpec("toy", None).label, "tab": tab, "example": example,
                       "caption": "a blue circle", **values}, doseq=True)

    def open_and_link(target) -> tuple[str, str]:
        target.goto(server + "?" + query if target is page else target.url)
        target.wait_for_function(f"document.querySelector('#{summary}')?.innerText.includes({shows!r})",
                                 timeout=120_000)
        said = target.locator(f"#{summary}").inner_text()
        target.locator("#link-button").click()
        target.wait_for_function("document.querySelector('#link textarea')?.value.includes('tab=')", timeout=30_000)
        return target.locator("#link textarea").input_value(), said

    link, said = open_and_link(page)
    for field, value in values.items():
        assert urlencode({field: value}, doseq=True) in link, (field, link)
    assert not {"text_a", "relative", "image_layer"} - set(values) & set(parse_qs(link.split("?", 1)[1]))
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        other.goto(link)
        again, said_again = open_and_link(other)
    finally:
        other.close()
    assert again == link and said_again == said


def test_the_link_box_empties_when_the_view_changes_and_says_an_upload_is_not_in_it(server, page, tmp_path):
    page.goto(server)
    page.wait_for_selector("#caption textarea", timeout=60_000)
    Image.new("RGB", (48, 40), (200, 30, 30)).save(tmp_path / "mine.png")
    page.locator("#image input[type=file]").set_input_files(str(tmp_path / "mine.png"))
    page.wait_for_timeout(500)
    page.locator("#link-button").click()
    page.wait_for_function("document.querySelector('#link textarea').value.includes('tab=')", timeout=30_000)
    assert "example=" not in page.locator("#link textarea").input_value()
    assert "is not in the link" in page.locator("#link-note").inner_text()
    open_tab(page, "Topic segmentation")
    page.wait_for_function("document.querySelector('#link textarea').value === ''", timeout=30_000)
    assert "is not in the link" not in page.locator("#link-note").inner_text()
    page.goto(server)
    page.wait_for_selector("#caption textarea", timeout=60_000)


def test_compare_explanations_shows_the_maps_and_its_errors_in_its_panel(page):
    path, _ = toy_examples()[1]
    page.locator("#image input[type=file]").set_input_files(path)
    page.locator("#caption textarea").fill("a blue circle")
    open_tab(page, "Compare explanations")
    for title in ("Attention rollout", "Grad-CAM", "LeGrad"):  # three maps, not nine: a quick check
        page.locator("#compare-methods").get_by_label(title).uncheck()
    page.locator("#compare-run").click()
    page.wait_for_selector("#compare-maps img", timeout=60_000)
    assert "Which method to trust" in page.locator("#compare-summary").inner_text()
    for box in page.locator("#compare-methods input[type=checkbox]").all():
        box.uncheck()
    page.locator("#compare-run").click()
    page.wait_for_function("document.querySelector('#compare-error').innerText.includes('Tick at least one')",
                           timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "compare-error.png"))
    assert "Error" not in page.locator(".toast-body").all_inner_texts()
    for box in page.locator("#compare-methods input[type=checkbox]").all():
        box.check()
