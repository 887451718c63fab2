"""After a deploy: call every named endpoint of a running app once and print each one's latency and answer.

    python benchmarks/space_smoke.py URL [--model "ViT-B-32 / openai"] [--image photo.jpg] [--caption "a dog"]

URL: the app (http://127.0.0.1:7860/, or a Space: ORG/NAME or https://ORG-NAME.hf.space/). By default it asks
about the toy model with a bundled toy picture; name the Space's model with `--model`. Exits 1 when any endpoint
fails. The first call to a model on a fresh Space also loads it: run the script twice for warm latencies.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def calls(model: str, image, caption: str) -> list[tuple[str, tuple]]:
    toy_classes = "toy world: 24 classes 'a {colour} {shape}'"
    return [
        ("model_info", (model,)),
        ("heads", (model, image, caption, 5)),
        ("head_atlas", (model, -1, 0)),
        ("topic_segmentation", (model, image, caption, "all", 0.6, "")),
        ("contrastive_segmentation", (model, image, caption, "a photo", "all", 0.6)),
        ("interaction", (model, image, caption, -1, -1, 10, "midpoint", "", "", 0.6)),
        ("compare_explanations", (model, image, caption, ["decomposition-relative", "rollout", "legrad"], "blur",
                                  0.6)),
        ("mutual_knowledge", (model, image, toy_classes, None, "{}", 5)),
        ("property_neighbours", (model, image, "colour", 6)),
        ("image_neighbours", (model, image, -1, 0, 6)),
        ("text_neighbours", (model, caption, -1, 0, 6)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--model", default="toy (bundled)")
    parser.add_argument("--image", default=str(ROOT / "assets" / "examples" / "toy-1001.png"))
    parser.add_argument("--caption", default="a blue circle")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    client = Client(args.url, verbose=False)
    failures = 0
    print("| endpoint | seconds | answer |")
    print("|---|---|---|")
    for endpoint, arguments in calls(args.model, handle_file(args.image), args.caption):
        started = time.perf_counter()
        try:
            answer = client.predict(*arguments, api_name=f"/{endpoint}")
            shown = str(answer if isinstance(answer, str) else next((a for a in answer if isinstance(a, str)
                                                                      and not a.startswith("/")), "ok"))
        except Exception as error:  # a failed endpoint is reported, and the others still run
            failures += 1
            shown = f"FAILED: {type(error).__name__}: {error}"
        print(f"| /{endpoint} | {time.perf_counter() - started:.2f} | {shown.splitlines()[0][:100]} |", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
