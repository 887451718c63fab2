"""Second-order interaction maps: ours against the authors' exclip 1.1, side by side in one run.

    python benchmarks/bench_interact.py [--models ViT-B-32 ViT-B-16 ViT-L-14] [--exclip-models ViT-B-32]
                                        [--steps 10] [--repeats 3] [--long-tokens 77] [--exclip-long-tokens 32]

Random-init weights, a random input image, the states entering the last block of both towers, steps = 10, and
captions of exactly 11 tokens (start and end included) and of `--long-tokens` tokens. Time: ours is the median
of `--repeats` calls after a warm-up (in this process); exclip's `OpenClipExplainer.explain` is timed once in a
process of its own. Memory: every figure is the peak RSS of one call in a fresh process, minus the RSS of the
loaded model ("+MB"). exclip builds `(S * text width) x (P * image width)` matrices (several of them at once), so
its long caption is capped at `--exclip-long-tokens`: 77 tokens would need tens of GB. Both results agree (the
largest difference relative to the largest score is printed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.memory import reset_peak, status_mb  # noqa: E402
from interpret.interact import interaction_map  # noqa: E402
from interpret.models import load_model  # noqa: E402

WORDS = ("a photo of a red circle and a blue square next to a green triangle on a wooden table in the garden "
         "with some yellow flowers and a small dog sleeping under a big tree while two children play").split()


def caption_of(model, tokens: int) -> str:
    """A caption of exactly `tokens` tokens, start and end included (one token per word here)."""
    words = [WORDS[i % len(WORDS)] for i in range(tokens - 2)]
    caption = " ".join(words)
    assert len(model.token_strings(caption)) == tokens, (caption, model.token_strings(caption))
    return caption


def inputs(name: str, tokens: int):
    model = load_model(name)
    image = torch.randn(1, 3, *model.geometry.image_size, generator=torch.Generator().manual_seed(0))
    return model, image, caption_of(model, tokens)


def run_exclip(model, image: torch.Tensor, caption: str, steps: int) -> torch.Tensor:
    from exclip.explanation import OpenClipExplainer

    explainer = OpenClipExplainer(model.model, image_dim=image.shape[-1],
                                  text_seq_len=model.geometry.context_length, device=torch.device("cpu"))
    layers = len(model.visual.transformer.resblocks) - 1, len(model.model.transformer.resblocks) - 1
    try:
        return explainer.explain(model.tokenize(caption).tokens, image, image_layer=layers[0],
                                 text_layer=layers[1], N=steps)
    finally:
        explainer.reset_attribution()


def child(name: str, tokens: int, method: str, steps: int) -> dict:
    """One call in this (fresh) process: its time, its peak memory and its scores (saved for comparison)."""
    model, image, caption = inputs(name, tokens)
    loaded = reset_peak()
    start = time.perf_counter()
    if method == "exclip":
        scores = run_exclip(model, image, caption, steps)
    else:
        scores = interaction_map(model, image, caption, steps=steps, rule="right").scores  # exclip's points
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    path = Path(f"/tmp/bench_interact_{name}_{tokens}_{method}.pt")
    torch.save(scores, path)
    return {"seconds": seconds, "extra_mb": peak - loaded, "scores": str(path)}


def in_child(name: str, tokens: int, method: str, steps: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", name, str(tokens), method, "--steps", str(steps)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_ours(name: str, tokens: int, steps: int, repeats: int) -> float:
    model, image, caption = inputs(name, tokens)
    interaction_map(model, image, caption, steps=steps)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interaction_map(model, image, caption, steps=steps, rule="right")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16", "ViT-L-14"])
    parser.add_argument("--exclip-models", nargs="*", default=["ViT-B-32"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-tokens", type=int, default=77)
    parser.add_argument("--exclip-long-tokens", type=int, default=32)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "TOKENS", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2], args.steps)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; random-init weights; steps = {args.steps}")
    print("| model | caption tokens | ours s (median) | ours +MB | exclip s | exclip +MB | speed-up | rel. difference |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for tokens in (11, args.long_tokens):
            ours_s = time_ours(name, tokens, args.steps, args.repeats)
            ours = in_child(name, tokens, "ours", args.steps)
            compare = name in args.exclip_models and (tokens == 11 or args.exclip_long_tokens >= tokens)
            theirs = in_child(name, tokens, "exclip", args.steps) if compare else {}
            print_row(name, tokens, f"{ours_s:.3f}", ours_s, ours, theirs)
        if name in args.exclip_models and args.exclip_long_tokens not in (11, args.long_tokens):
            tokens = args.exclip_long_tokens
            ours, theirs = in_child(name, tokens, "ours", args.steps), in_child(name, tokens, "exclip", args.steps)
            print_row(name, tokens, f"{ours['seconds']:.3f} (one call)", ours["seconds"], ours, theirs)


def print_row(name: str, tokens: int, ours_time: str, ours_s: float, ours: dict, theirs: dict) -> None:
    """One table row: our time and memory, and exclip's with the speed-up and the difference, when run."""
    cells = ["-"] * 4
    if "error" in theirs:
        cells = [theirs["error"][:60], "-", "-", "-"]
    elif theirs:
        a, b = torch.load(ours["scores"]), torch.load(theirs["scores"])
        cells = [f"{theirs['seconds']:.1f}", f"{theirs['extra_mb']:.0f}", f"{theirs['seconds'] / ours_s:.0f}x",
                 f"{float((a - b).abs().max() / b.abs().max()):.1e}"]
    print(f"| {name} | {tokens} | {ours_time} | {ours.get('extra_mb', float('nan')):.0f} | " + " | ".join(cells)
          + " |", flush=True)


if __name__ == "__main__":
    main()
