"""Take the README's screenshots again: the real page at 1400 x 1000 in Debian's Chromium, on the toy model.

    python benchmarks/readme_screenshots.py [--out assets]

Starts `python app.py` on 127.0.0.1 (toy model), runs the Heads, Head atlas, Neurons, Features (training the toy's
SAE there first: about 1.5 minutes), Contrastive segmentation, Interactions, Property neighbours and Mutual knowledge
tabs on toy examples, and saves each as `screenshot-<name>.png` (the visible part of the page, 1400 x 1000). Needs
Playwright and /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from interpret.toy.examples import toy_examples  # noqa: E402
from tests.local_server import start_app, stop_app  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, map_a_token, open_tab  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "assets"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    process, url = start_app(Path(tempfile.mkdtemp()) / "indexes")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#caption textarea", timeout=60_000)

            def show(path: str, caption: str = "") -> None:
                page.locator("#image input[type=file]").set_input_files(path)
                page.locator("#caption textarea").fill(caption)

            def shoot(name: str, selector: str, centre: str) -> None:
                """Wait for `selector`, put `centre` in the middle of the view, and save the view."""
                page.wait_for_selector(selector, timeout=120_000)
                page.wait_for_timeout(800)
                page.locator(centre).first.evaluate("element => element.scrollIntoView({block: 'center'})")
                page.wait_for_timeout(300)
                page.screenshot(path=str(out / f"screenshot-{name}.png"))

            examples = dict((caption, path) for path, caption in toy_examples())
            two = examples["a blue circle and a yellow square"]
            show(two, "a blue circle")
            open_tab(page, "Heads")
            page.locator("#heads-run").click()
            shoot("heads", "#heads-grid img", "#heads-grid")

            open_tab(page, "Head atlas")
            page.locator("#atlas-layer input").fill("3")
            page.locator("#atlas-head input").fill("1")
            page.locator("#atlas-run").click()
            shoot("atlas", "#atlas-grid img", "#atlas-table")

            open_tab(page, "Neurons")
            page.locator("#neurons-run").click()
            shoot("neurons", "#neurons-maps img", "#neurons-maps")

            open_tab(page, "Features")
            page.locator("#features-train").click()
            page.wait_for_function("document.querySelector('#features-summary').innerText.startsWith('Done')",
                                   timeout=600_000)
            page.locator("#features-run").click()
            shoot("features", "#features-maps img", "#features-maps")

            show(examples["a green cross, a red square and an orange square"])
            open_tab(page, "Contrastive segmentation")
            page.locator("#contrast-a textarea").fill("something red")
            page.locator("#contrast-b textarea").fill("something orange")
            page.locator("#contrast-run").click()
            shoot("contrastive", "#contrast-map img", "#contrast-map")

            show(two, "a blue circle and a yellow square")
            open_tab(page, "Interactions")
            map_a_token(page, 2, "blue")
            shoot("interactions", "#inter-map img", "#inter-span")

            open_tab(page, "Property neighbours")
            page.locator("#property-run").click()
            shoot("neighbours", "#property-gallery img", "#property-summary")

            open_tab(page, "Mutual knowledge")
            page.locator("#mutual-run").click()
            shoot("mutual", "#mutual-parts-map img", "#mutual-parts-map")
            browser.close()
    finally:
        stop_app(process)
    print(f"saved the screenshots in {out}")


if __name__ == "__main__":
    main()
