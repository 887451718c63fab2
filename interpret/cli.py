"""Command line: `python -m interpret COMMAND ...` (also installed as `interpret`)."""
from __future__ import annotations

import argparse
import sys

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
