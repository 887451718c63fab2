"""Every image-tower family side by side, in one run: load time, the spatial decomposition's time as a ratio to the
plain `encode_image` (batch 1 and `--batch`), and an interaction map's time (last blocks, `--steps` steps), with
the decomposition's largest error relative to the embedding.

    python benchmarks/bench_families.py [--models ViT-B-16 EVA02-B-16 PE-Core-B-16 ViT-B-16-SigLIP2 coca_ViT-B-32]
                                        [--batch 32] [--repeats 3] [--steps 10] [--device cpu|cuda]

Random-init weights, random input. A model whose tokenizer needs the hub (SigLIP's) is loaded with CLIP's
tokenizer in its place (at the tower's context length); interaction maps are skipped where the text tower is
not read. Times are medians of `--repeats` after a warm-up, each pair (plain, decomposition) run
alternately; on CUDA the device is synchronised around every call.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from interpret.decompose import decompose_image  # noqa: E402
from interpret.errors import InterpretError, ModelLoadError  # noqa: E402
from interpret.interact import interaction_map  # noqa: E402
from interpret.models import ClipModel, tokenizer_of  # noqa: E402

MODELS = ("ViT-B-16", "EVA02-B-16", "PE-Core-B-16", "ViT-B-16-SigLIP2", "coca_ViT-B-32")


def load(name: str, device: str) -> tuple[ClipModel, float]:
    import open_clip

    started = time.perf_counter()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
    try:
        tokenizer = tokenizer_of(name)
    except ModelLoadError:  # a Hugging Face tokenizer, offline: CLIP's in its place, at the tower's context
        context = open_clip.get_model_config(name)["text_cfg"].get("context_length", 77)
        tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=context)
    clip = ClipModel(model, preprocess, tokenizer, name, None, device)
    return clip, time.perf_counter() - started


def timed(call, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    call()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    name_of_device = (torch.cuda.get_device_name() if args.device == "cuda"
                      else f"CPU, {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, {name_of_device}; random-init weights; median of {args.repeats}\n")
    print("| model | family | load s | batch | encode s | decompose s | ratio | max error | interaction s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model, load_seconds = load(name, args.device)
        family = type(model.tower).name
        try:
            seconds = timed(lambda: interaction_map(model, torch.randn(1, 3, *model.geometry.image_size,
                                                                        device=args.device),
                                                    "a red circle on a blue square", -1, -1, args.steps),
                            args.device)
            interaction = f"{seconds:.3f}"
        except InterpretError:
            interaction = "n/a (text tower)"
        for batch_size in (1, args.batch):
            batch = torch.randn(batch_size, 3, *model.geometry.image_size, device=args.device,
                                generator=torch.Generator(args.device).manual_seed(0))
            with torch.no_grad():
                reference = model.model.encode_image(batch, normalize=False)  # CoCa normalises by default
                decomposition = decompose_image(model, batch)
                error = float((decomposition.total() - reference).abs().max() / reference.norm(dim=-1).min())
                del decomposition
                plain, decomposed = [], []
                for _ in range(args.repeats):
                    plain.append(timed(lambda: model.model.encode_image(batch, normalize=False), args.device))
                    decomposed.append(timed(lambda: decompose_image(model, batch), args.device))
            plain_s, decomposed_s = statistics.median(plain), statistics.median(decomposed)
            print(f"| {name} | {family} | {load_seconds:.1f} | {batch_size} | {plain_s:.3f} | {decomposed_s:.3f} | "
                  f"{decomposed_s / plain_s:.2f} | {error:.1e} | {interaction if batch_size == 1 else ''} |",
                  flush=True)
        model = None  # noqa: F841 (its memory goes before the next model's)
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
