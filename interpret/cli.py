"""Command line: `python -m interpret COMMAND ...` (also installed as `interpret`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InterpretError


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="ViT-B-32",
                        help="open_clip architecture (ViT-B-32, ViT-B-16, ViT-L-14, ...) or 'toy' (default: ViT-B-32)")
    parser.add_argument("--pretrained", default=None,
                        help="pretrained tag (openai, laion2b_s34b_b88k, ...) or a checkpoint file; "
                             "omit for random weights")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _heads(args: argparse.Namespace) -> None:
    from .decompose import explain_caption
    from .models import load_model

    model = load_model(args.model, args.pretrained, args.device)
    report = explain_caption(model, args.image, args.caption)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{model.label}: cosine score {report.cosine:+.4f} for '{args.caption}'")
    print(f"heads {float(report.heads.sum()):+.4f}, MLPs {float(report.mlps.sum()):+.4f}, rest {report.rest:+.4f}")
    print(f"\n{'rank':>4}  {'layer':>5}  {'head':>4}  {'contribution':>12}")
    for rank, (layer, head, value) in enumerate(report.top_heads(args.top), start=1):
        print(f"{rank:>4}  {layer:>5}  {head:>4}  {value:>+12.5f}")
    if args.save:
        from .render import head_grid

        head_grid(report.heads.numpy(), f"{model.label}: '{args.caption}'", mlps=report.mlps.numpy()).save(args.save)
        print(f"\nsaved the layer x head grid to {args.save}")


def _train_toy(args: argparse.Namespace) -> None:
    import time

    from .toy.train import train

    started = time.monotonic()
    train(Path(args.out), steps=args.steps, batch_size=args.batch_size, scenes=args.scenes, seed=args.seed)
    print(f"saved the toy model to {args.out} in {(time.monotonic() - started) / 60:.1f} minutes")


def readable_images(paths: list) -> list[str]:
    """The paths that decode as images; the others are listed on stderr and skipped."""
    from .errors import ImageError
    from .images import load_image

    readable = []
    for path in paths:
        try:
            load_image(path)
            readable.append(str(path))
        except ImageError as error:
            print(f"skipped: {error}", file=sys.stderr)
    if not readable:
        raise InterpretError("None of the images could be read.")
    return readable


def _describe_heads(args: argparse.Namespace) -> None:
    from .banks import general_bank, load_bank, toy_bank
    from .images import list_images
    from .models import load_model
    from .textspan import describe_heads

    model = load_model(args.model, args.pretrained, args.device)
    if args.images:
        images = readable_images(list_images(args.images)[: args.limit])
    elif model.name == "toy":
        from .toy.train import toy_images

        images = toy_images(args.limit or 2000)
    else:
        raise InterpretError("--images DIR is needed (a folder of images to describe the heads with).")
    bank_name = args.bank or ("toy" if model.name == "toy" else "general")
    bank = {"general": general_bank, "toy": toy_bank}.get(bank_name, lambda: load_bank(bank_name))()
    out = Path(args.out) if args.out else model.index_dir / "head_labels.json"
    atlas = describe_heads(model, images, bank, k=args.k, rank=args.rank, layers=args.layers, out_path=out)
    counts = {}
    for label in atlas.labels.values():
        counts[label.property] = counts.get(label.property, 0) + 1
    print(f"described {len(atlas.labels)} heads of {model.label} with {len(images)} images and the "
          f"{bank.name} bank ({len(bank)} texts); labels: "
          + ", ".join(f"{prop} {n}" for prop, n in sorted(counts.items(), key=lambda item: -item[1])))
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m interpret",
                                     description="Look inside CLIP models: which heads carry an image-caption score.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    heads = commands.add_parser("heads", help="top heads for an image and a caption",
                                description="Decompose an image-caption cosine score over layers and heads.")
    heads.add_argument("image", help="image file (JPEG, PNG, WebP, ...)")
    heads.add_argument("--caption", required=True, help="the caption to explain")
    heads.add_argument("--top", type=int, default=10, help="how many heads to list (default: 10)")
    heads.add_argument("--save", metavar="PNG", help="save the layer x head grid as a PNG")
    _add_model_arguments(heads)
    heads.set_defaults(run=_heads)

    describe = commands.add_parser("describe-heads", help="TextSpan descriptions and property labels of every head",
                                   description="Describe each head by the texts that span its outputs over a "
                                               "set of images (TextSpan), and label it with a property.")
    _add_model_arguments(describe)
    describe.add_argument("--images", help="folder of images (recursive); the toy model uses toy scenes")
    describe.add_argument("--limit", type=int, help="use at most this many images")
    describe.add_argument("--bank", help="'general' (default), 'toy' (default for the toy model) or a text file, "
                                         "one description a line, optionally 'property<TAB>description'")
    describe.add_argument("--k", type=int, default=20, help="descriptions per head (default: 20)")
    describe.add_argument("--rank", type=int, default=80, help="TextSpan rank (default: 80)")
    describe.add_argument("--layers", type=int, nargs="+", help="layers to describe (default: all)")
    describe.add_argument("--out", help="output JSON (default: indexes/<model>/head_labels.json)")
    describe.set_defaults(run=_describe_heads)

    from .models import TOY_DIR
    from .toy.train import DEFAULTS

    train_toy = commands.add_parser("train-toy", help="train the bundled toy CLIP on the toy world (CPU, ~12 min)",
                                    description="Train the toy CLIP contrastively on freshly drawn toy scenes.")
    train_toy.add_argument("--out", default=str(TOY_DIR), help=f"output folder (default: {TOY_DIR})")
    train_toy.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    train_toy.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    train_toy.add_argument("--scenes", type=int, default=DEFAULTS["scenes"], help="distinct training scenes")
    train_toy.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    train_toy.set_defaults(run=_train_toy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except InterpretError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
