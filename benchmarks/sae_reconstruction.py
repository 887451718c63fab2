"""How well SAEs trained here reconstruct a real architecture's token states: random-init ViT-B-32 on the shared
data's 1,000 ImageNet photos (or drawn pictures without it), an SAE (8 x 768 features, TopK k = 32 with AuxK:
half saev's size, to fit a CPU) on each chosen block's output, trained on 900 images' tokens (kept in memory here,
`--epochs` passes over them: 45,000 tokens are too few steps for one) and measured on the other 100: explained
variance, L0 and the features silent on them.

    python benchmarks/sae_reconstruction.py [--layers 2 5 8 11] [--images 1000] [--epochs 8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from interpret.engines import LocalEngine, run_blocks  # noqa: E402
from interpret.dictionaries import TokenStatesTask, evaluate, train_sae  # noqa: E402
from interpret.images import list_images  # noqa: E402
from interpret.models import load_model  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "images" / "imagenet-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 5, 8, 11])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--expansion", type=int, default=8, help="features per stream dimension")
    args = parser.parse_args()
    model = load_model("ViT-B-32", None)
    with tempfile.TemporaryDirectory() as scratch:
        root = PHOTOS if PHOTOS.is_dir() else Path(scratch)
        if root == Path(scratch):
            generator = torch.Generator().manual_seed(0)
            for index in range(args.images):
                pixels = (torch.rand(32, 32, 3, generator=generator) * 255).byte().numpy()
                Image.fromarray(pixels).resize((224, 224)).save(root / f"{index:05d}.png")
        names = [path.relative_to(root).as_posix() for path in list_images(root)][:args.images]
        held = max(1, len(names) // 10)
        print(f"{model.label}: SAEs ({args.expansion} x width features) on {len(names) - held} images' tokens of "
              f"{root.name} ({args.epochs} passes), measured on {held} others\n")
        print("block | explained variance | L0 | silent features (on the held-out tokens) | tokens | seconds")
        print("--- | --- | --- | --- | --- | ---")
        for layer in args.layers:
            def states(chosen):
                return (torch.from_numpy(block.arrays["states"]) for block in run_blocks(
                    LocalEngine(), model, root, chosen, TokenStatesTask(layer), 32, 128, progress=False))
            started = time.monotonic()
            kept = list(states(names[:-held]))
            passes = (block for _ in range(args.epochs) for block in kept)
            sae, report = train_sae(passes, model.geometry.width, layer, args.expansion * model.geometry.width,
                                    warmup=50, progress=False)
            measured = evaluate(sae, [block.reshape(-1, block.shape[-1]) for block in states(names[-held:])])
            print(f"{layer} | {measured.explained_variance:.3f} | {measured.l0:.1f} | {measured.dead} of "
                  f"{measured.features} | {report.tokens:,} | {time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
