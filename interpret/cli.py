"""Command line: `python -m interpret COMMAND ...` (also installed as `interpret`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InterpretError
from .parts import DEFAULT_PARTS, MAP_PARTS
from .paths import is_toy


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="ViT-B-32",
                        help="open_clip architecture (ViT-B-32, ViT-B-16, ViT-L-14, ...) or 'toy' (default: ViT-B-32)")
    parser.add_argument("--pretrained", default=None,
                        help="pretrained tag (openai, laion2b_s34b_b88k, ...) or a checkpoint file; "
                             "omit for random weights")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _random_weights(model) -> bool:
    """A random-init architecture (no pretrained tag, not the toy model): its figures describe no trained model."""
    return not is_toy(model.name) and model.pretrained is None


def _load(args: argparse.Namespace):
    """The model the command line names; a random-init architecture is said to be one, on stderr."""
    from .models import load_model

    model = load_model(args.model, args.pretrained, args.device)
    if _random_weights(model):
        print(f"note: {model.label}: random weights (no --pretrained), so the results describe no trained model; "
              f"use --pretrained openai (needs the hub once) or --model toy (offline)", file=sys.stderr)
    return model


def _heads(args: argparse.Namespace) -> None:
    from .decompose import explain_caption

    model = _load(args)
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


def _topic(args: argparse.Namespace) -> None:
    from .render import map_overlay
    from .segment import ImageMaps, parse_heads

    model = _load(args)
    choice = parse_heads(args.heads)
    maps = ImageMaps(model, args.image)
    spatial = maps.topic(args.text, **choice, relative_to=args.relative_to, parts=args.parts)
    print(f"{model.label}, {spatial.heads}: '{spatial.text}'")
    print(spatial.summary())
    if args.save:
        map_overlay(maps.picture, spatial.image, args.opacity, f"'{spatial.text}' ({spatial.heads})",
                    bound=spatial.bound).save(args.save)
        print(f"saved the map to {args.save}")


def _interact(args: argparse.Namespace) -> None:
    from .interact import interaction_map, parse_box, parse_tokens
    from .render import map_overlay, token_strip

    model = _load(args)
    model.tokenize(args.caption)  # an unusable caption, span or box gets its message before any work
    tokens, box = parse_tokens(args.tokens, len(model.token_strings(args.caption))), parse_box(args.box)
    result = interaction_map(model, args.image, args.caption, args.image_layer, args.text_layer, args.steps,
                             args.rule)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    region = result.span_to_region(tokens)
    per_token = result.region_to_span(box)
    print(f"{model.label}, {result.layers_name}, {result.steps} steps ({result.rule}): cosine {result.cosine:+.4f}; "
          f"interactions sum to {result.total:+.5f} of the {result.explained:+.5f} they explain "
          f"(residual {result.residual:+.2e})")
    where = "the whole image" if box is None else f"the box {tuple(round(v) for v in box)}"
    print(f"\ntoken interactions summed over {where}:")
    print(f"{'index':>5}  {'token':<16} {'interaction':>12}")
    for index, (token, value) in enumerate(zip(result.tokens, per_token.tolist())):
        print(f"{index:>5}  {token:<16} {value:>+12.5f}")
    row, column = region.peak
    print(f"\n'{region.text}' matches the image most at patch row {row}, column {column} "
          f"({float(region.grid.max()):+.5f}; the span's interactions sum to {float(region.grid.sum()):+.5f})")
    if args.save:
        map_overlay(result.picture, region.image, 0.6, f"'{region.text}' ({result.layers_name})",
                    label="interaction with the span", box=box, bound=region.bound).save(args.save)
        print(f"saved the span's map to {args.save}")
    if args.save_tokens:
        token_strip(result.tokens, per_token.numpy(), f"tokens x {where}", result.token_indices(tokens)) \
            .save(args.save_tokens)
        print(f"saved the coloured tokens to {args.save_tokens}")


def _model_spec(text: str) -> tuple[str, str | None]:
    """'ViT-B-32:openai' -> ('ViT-B-32', 'openai'); 'toy' -> ('toy', None)."""
    name, _, pretrained = text.partition(":")
    return name, pretrained or None


def _write_csv(path: str, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def _labels_for(model, images: list[str] | None):
    """The model's head labels: from its folder or bundle, else described now (toy scenes and the toy bank for
    the toy model, else `images` with the general bank) and saved where describe-heads saves them."""
    from .banks import general_bank, toy_bank
    from .folders import model_folder
    from .index import load_head_labels
    from .textspan import describe_heads

    try:
        return load_head_labels(model, model_folder(model))
    except InterpretError:
        pass
    if is_toy(model.name):
        from .toy.train import toy_images

        images, bank = toy_images(1000), toy_bank()
    elif images:
        bank = general_bank()
    else:
        raise InterpretError(f"No head labels for {model.label}: give --images DIR to describe its heads with.")
    return describe_heads(model, images, bank, out_path=model.index_dir / "head_labels.json")


def _evaluation_set(model, args: argparse.Namespace):
    """(images, class indices, unit class texts, what they are): the folder's class sub-folders with the
    template, or, for the toy model without --images, single-object toy scenes and its 24 colour x shape
    classes."""
    from .images import list_images

    if args.images:
        folder = Path(args.images)
        classes = sorted(path.name for path in folder.iterdir() if path.is_dir())
        if len(classes) < 2:
            raise InterpretError(f"{folder} needs at least two sub-folders, one per class (named by the class).")
        samples = [(str(path), index) for index, name in enumerate(classes) for path in list_images(folder / name)]
        samples = samples[: args.limit] if args.limit else samples
        readable = set(readable_images([path for path, _ in samples]))
        samples = [(path, label) for path, label in samples if path in readable]  # an unreadable one, with its label
        images, labels = [path for path, _ in samples], [label for _, label in samples]
        prompts = [args.template.format(name.replace("_", " ")) for name in classes]
        return images, labels, model.encode_texts(prompts), f"{len(images)} images of {len(classes)} classes"
    if not is_toy(model.name):
        raise InterpretError("--images DIR is needed (sub-folders named by class) for models other than the toy.")
    from .toy.evaluate import COLOUR_SHAPE_PAIRS, COLOUR_SHAPE_PROMPTS
    from .toy.train import toy_scene

    scenes = [toy_scene(30_000 + i, count=1) for i in range(args.limit or 300)]
    labels = [COLOUR_SHAPE_PAIRS.index((s.objects[0].colour, s.objects[0].shape)) for s in scenes]
    return ([s.image for s in scenes], labels, model.encode_texts(list(COLOUR_SHAPE_PROMPTS)),
            f"{len(scenes)} toy scenes, 24 colour x shape classes")


def _score_models(args: argparse.Namespace) -> None:
    from .limits import check_template
    from .models import load_model
    from .quantify import pruning_curves, score_heads

    check_template(args.template)
    rows, plots = [], []
    for text in args.models:
        model = load_model(*_model_spec(text), device=args.device)
        print(f"{model.label}:", flush=True)
        if _random_weights(model):
            print("  note: random weights: these scores describe no trained model (they only show that the "
                  "command runs)")
        images, labels, class_texts, what = _evaluation_set(model, args)
        scores = score_heads(_labels_for(model, images if args.images else None))
        removed = args.remove or max(1, scores.heads // 4)
        curves = pruning_curves(model, images, labels, class_texts, scores, counts=[0, removed // 2, removed],
                                seeds=args.seeds)
        n = curves.counts[-1]
        row = {"model": model.label, "heads scored": scores.heads,
               **{f"CCS@{c}": count for c, count in scores.by_consistency.items()},
               "high": len(scores.high), "moderate": len(scores.moderate), "low": len(scores.low),
               "association": round(scores.association, 4), "entanglement": round(scores.entanglement, 4),
               "evaluated on": what, "heads removed": n,
               "accuracy": round(curves.curves["direct"]["high"][0], 4)}
        for effect in ("direct", "zero", "mean"):
            for name in ("high", "random", "low"):
                row[f"{effect}: without {n} {name}"] = round(curves.curves[effect][name][-1], 4)
        rows.append(row)
        plots.append((model.label, curves))
        print(f"  consistency 5..0: {list(scores.by_consistency.values())}; high {len(scores.high)}, moderate "
              f"{len(scores.moderate)}, low {len(scores.low)}; association {scores.association:.3f}, "
              f"entanglement {scores.entanglement:.3f}")
        print(f"  zero-shot accuracy {row['accuracy']:.3f} ({what}); without the {n} most / {n} random / {n} least "
              "consistent heads:")
        for effect in ("direct", "zero", "mean"):
            print(f"    {effect:<6} " + " / ".join(f"{row[f'{effect}: without {n} {name}']:.3f}"
                                                for name in ("high", "random", "low")))
    _write_csv(args.out, rows)
    if args.plot:
        from .render import pruning_plot

        pruning_plot(plots).save(args.plot)
        print(f"saved the plot to {args.plot}")


def _mutual(args: argparse.Namespace) -> None:
    import numpy as np
    from tqdm import tqdm

    from .models import load_model
    from .mutual import accuracy_on_auc, evaluate_model, load_classes, load_descriptors
    from .render import figure_to_image

    if args.descriptors:
        classes = load_classes(args.classes) if args.classes else None
        descriptors = load_descriptors(args.descriptors, classes, args.template)
    elif not args.images:
        from .toy.evaluate import toy_descriptors

        descriptors = toy_descriptors()
    else:
        raise InterpretError("--descriptors FILE is needed (JSON: class -> list of descriptions).")
    samples = _mutual_samples(args, descriptors)
    rows, table = [], []
    for text in args.models:
        model = load_model(*_model_spec(text), device=args.device)
        bar = tqdm(total=len(samples), desc=f"{model.label}: classes", unit="class")
        result = evaluate_model(model, samples, descriptors, parts=args.parts, per_class=args.per_class,
                                progress=lambda _: bar.update())
        bar.close()
        rows.append(result)
        table.append({"model": result.model, "images": result.images, "classes": result.classes,
                      "top-1": round(result.accuracy, 4), "MI (bits)": round(result.mutual_information, 4),
                      "MI AUC": round(result.mi_auc, 4), "deletion AUC": round(result.deletion_auc, 4),
                      "descriptor-boosted top-1": round(result.boosted_accuracy, 4)})
        print(f"{result.model}{' (random weights: its figures are meaningless)' if _random_weights(model) else ''}: "
              f"top-1 {result.accuracy:.3f} over {result.images} images; MI {result.mutual_information:.3f} bits, "
              f"MI AUC {result.mi_auc:.3f}, deletion AUC {result.deletion_auc:.3f} (means over {result.classes} "
              f"classes); with the shared descriptors in the prompts: top-1 {result.boosted_accuracy:.3f}")
    fit = accuracy_on_auc(rows)
    if fit is not None:
        print(f"top-1 = {fit[0]:.3f} x MI AUC + {fit[1]:.3f} (Pearson r {fit[2]:.2f}, {len(rows)} models)")
    _write_csv(args.out, table)
    if args.plot:
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(rows), 3.6))
        names = [row.model for row in rows]
        axes[0].bar(names, [row.mi_auc for row in rows], color="#4363d8")
        axes[0].set_title("MI dynamics AUC (bits)", fontsize=10)
        for position, (name, measure) in enumerate((("top-1", "accuracy"), ("boosted", "boosted_accuracy"))):
            axes[1].bar(np.arange(len(rows)) + (position - 0.5) * 0.4, [getattr(row, measure) for row in rows], 0.4,
                        label=name)
        axes[1].set_xticks(range(len(rows)), names)
        axes[1].set_ylim(0, 1.05)
        axes[1].legend(fontsize=9)
        axes[1].set_title("zero-shot top-1", fontsize=10)
        for axis in axes:
            axis.tick_params(axis="x", labelsize=8, rotation=15)
        figure_to_image(figure).save(args.plot)
        print(f"saved the plot to {args.plot}")


def _mutual_samples(args: argparse.Namespace, descriptors) -> dict[str, list]:
    """Images by their class: --images DIR's sub-folders named by the descriptors' classes (at most --per-class
    each), or single-object toy scenes of the toy world's classes."""
    from .images import list_images

    if not args.images:
        from .toy.evaluate import toy_class_samples

        return toy_class_samples(args.per_class)
    folder = Path(args.images)
    samples = {}
    for name in descriptors.classes:
        if (folder / name).is_dir():
            samples[name] = readable_images(list_images(folder / name)[: args.per_class])
    if not samples:
        raise InterpretError(f"{folder} has no sub-folder named by a class of the descriptors (e.g. "
                             f"{descriptors.classes[0]!r}).")
    return samples


def _train_toy(args: argparse.Namespace) -> None:
    import time

    from .paths import TOY_DIR, TOY_POOLED_DIR

    from .toy.train import train

    started = time.monotonic()
    out = args.out or str(TOY_POOLED_DIR if args.pooling == "attention" else TOY_DIR)
    train(Path(out), steps=args.steps, batch_size=args.batch_size, scenes=args.scenes, seed=args.seed,
          pooling=args.pooling)
    print(f"saved the toy model to {out} in {(time.monotonic() - started) / 60:.1f} minutes")


def readable_images(paths: list) -> list[str]:
    """The paths that decode as images; the others are listed on stderr and skipped."""
    from .images import readable_images as readable

    kept, skipped = readable(paths)
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    return kept


def _describe_heads(args: argparse.Namespace) -> None:
    from .banks import bank_named, default_bank
    from .images import list_images
    from .textspan import describe_heads

    model = _load(args)
    if args.images:
        images = readable_images(list_images(args.images)[: args.limit])
    elif is_toy(model.name):
        from .toy.train import toy_images

        images = toy_images(args.limit or 2000)
    else:
        raise InterpretError("--images DIR is needed (a folder of images to describe the heads with).")
    bank_name = args.bank or default_bank(model.name)
    bank = bank_named(bank_name)
    out = Path(args.out) if args.out else model.index_dir / "head_labels.json"
    atlas = describe_heads(model, images, bank, k=args.k, rank=args.rank, layers=args.layers, out_path=out,
                           engine=_engine(args) if args.images else None)
    counts = {}
    for label in atlas.labels.values():
        counts[label.property] = counts.get(label.property, 0) + 1
    print(f"described {len(atlas.labels)} heads of {model.label} with {len(images)} images and the "
          f"{bank.name} bank ({len(bank)} texts); labels: "
          + ", ".join(f"{prop} {n}" for prop, n in sorted(counts.items(), key=lambda item: -item[1])))
    print(f"wrote {out}")


def _build_index(args: argparse.Namespace) -> None:
    from .index import build_index

    model = _load(args)
    if args.images:
        report = build_index(model, args.images, args.out, layers=args.layers, batch_size=args.batch_size,
                             index=args.index, overwrite=args.overwrite, engine=_engine(args))
    elif is_toy(model.name):
        from .toy.examples import build_toy_index

        report = build_toy_index(model, args.out, progress=True, layers=args.layers, batch_size=args.batch_size,
                                 index=args.index)
    else:
        raise InterpretError("--images DIR is needed (a folder of images, searched recursively).")
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{model.label}: {report.summary()}")


def _bundle(args: argparse.Namespace) -> None:
    from .banks import default_bank
    from .bundles import build_bundle, publish

    if args.publish:
        if not args.source:
            raise InterpretError("--publish needs --from DIR (a bundle, or a folder of bundles).")
        uploaded = publish(args.source, args.publish)
        print(f"published {', '.join(uploaded)} to {args.publish}")
        return
    if not args.images or not args.out:
        raise InterpretError("bundle needs --images DIR and --out DIR (or --publish hf://datasets/ORG/REPO --from DIR).")
    model = _load(args)
    folder = build_bundle(model, args.images, args.out, bank=args.bank or default_bank(model.name),
                          layers=args.layers, batch_size=args.batch_size, engine=_engine(args),
                          neuron_layers=args.neuron_layers, feature_layers=args.feature_layers or (),
                          transcoder_layers=args.transcoder_layers or ())
    print(f"{model.label}: bundle in {folder}")


def _neurons(args: argparse.Namespace) -> None:
    from .neurons import TOP_IMAGES, default_neuron_layer

    model = _load(args)
    layer = default_neuron_layer(model) if args.layer is None else args.layer
    if args.top is None:
        args.top = TOP_IMAGES if args.action == "directions" else 10
    {"directions": _neuron_directions, "image": _neurons_of_image, "show": _show_neuron}[args.action](args, model,
                                                                                                   layer)


def _neuron_directions(args: argparse.Namespace, model, layer: int) -> None:
    from .banks import bank_named, default_bank
    from .folders import model_folder
    from .neurons import describe_neurons, neuron_directions, neurons_folder
    from .toy.examples import draw_toy_database

    if args.images:
        images = Path(args.images)
    elif is_toy(model.name):
        images = draw_toy_database(Path(args.out or model.index_dir) / "images")
    else:
        raise InterpretError("Give the images to compute the directions over: --images DIR.")
    found = neuron_directions(model, images, layer, top=args.top, batch_size=args.batch_size, engine=_engine(args))
    bank = bank_named(args.bank or default_bank(model.name))
    describe_neurons(model, found, bank)
    folder = found.save(neurons_folder(args.out or model_folder(model), found.layer))
    labels: dict[str, int] = {}
    for name, _ in found.labels:
        labels[name] = labels.get(name, 0) + 1
    print(f"{model.label}: the {found.directions.shape[0]} neurons of layer {found.layer} over {found.count} images "
          f"(top {args.top}), described with the {bank.name} bank -> {folder}")
    print("labels: " + ", ".join(f"{name} {count}" for name, count in sorted(labels.items(), key=lambda x: -x[1])))


def _neurons_of_image(args: argparse.Namespace, model, layer: int) -> None:
    from .neurons import explain_neurons

    if not args.image or args.caption is None:
        raise InterpretError("neurons image needs an IMAGE and a --caption.")
    report = explain_neurons(model, args.image, args.caption, layer, top=args.top)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{model.label}: cosine score {report.cosine:+.4f} for '{report.caption}'; the neurons of layer "
          f"{report.layer} through the later heads: {report.total:+.4f} in all")
    print(f"\n{'rank':>4}  {'neuron':>6}  {'part':>9}  {'carried by (head: part)':<34}  words")
    for rank, neuron in enumerate(report.neurons):
        heads = ", ".join(f"{l}.{h}: {share:+.4f}" for l, h, share in report.carriers(rank, 2))
        words = "; ".join(text for text, _ in report.descriptions[rank][:3]) if report.descriptions else ""
        label = f" [{report.labels[rank][0]}]" if report.labels else ""
        print(f"{rank + 1:>4}  {neuron:>6}  {float(report.contributions[rank]):>+9.5f}  {heads:<34}  {words}{label}")


def _show_neuron(args: argparse.Namespace, model, layer: int) -> None:
    from .neurons import stored_directions

    if args.neuron is None:
        raise InterpretError("neurons show needs --neuron N.")
    directions = stored_directions(model, layer, progress=True)
    neuron = int(args.neuron)
    if not 0 <= neuron < directions.directions.shape[0]:
        raise InterpretError(f"Layer {layer} has neurons 0 to {directions.directions.shape[0] - 1}.")
    label = directions.labels[neuron] if directions.labels else ("untagged", 0.0)
    print(f"{model.label}, layer {layer}, neuron {neuron}: {label[0]} ({label[1]:.0%}); its direction explains "
          f"{float(directions.variance[neuron]):.0%} of its top images' effects; significant above "
          f"{float(directions.thresholds[neuron]):.4f}")
    for text, weight in (directions.descriptions[neuron] if directions.descriptions else []):
        print(f"  {weight:+.4f}  {text}")
    print(f"top images (of {directions.count} below {directions.root}):")
    for row, norm in zip(directions.top_rows[neuron][: args.top].tolist(),
                         directions.top_norms[neuron][: args.top].tolist()):
        print(f"  {norm:.4f}  {directions.names[row]}")


def _features(args: argparse.Namespace) -> None:
    from .dictionaries import default_layer

    model = _load(args)
    layer = default_layer(model) if args.layer is None else args.layer
    {"train": _train_features, "load": _load_features, "describe": _describe_features, "top": _features_of_image,
     "show": _show_feature, "export": _export_features}[args.action](args, model, layer)


def _feature_images(args: argparse.Namespace, model) -> Path:
    """The images to describe features over: --images, or the toy model's database scenes."""
    from .toy.examples import draw_toy_database

    if args.images:
        return Path(args.images)
    if is_toy(model.name):
        return draw_toy_database(model.index_dir / "images")
    raise InterpretError("Give the images: --images DIR.")


def _train_features(args: argparse.Namespace, model, layer: int) -> None:
    from .dictionaries import MIN_EXPLAINED_VARIANCE, train_dictionaries_of

    if args.layers:
        layers = [int(value) for value in args.layers.split(",") if value.strip()]
    else:
        layers = list(range(model.geometry.layers)) if args.kind == "transcoder" and args.layer is None else [layer]
    results = train_dictionaries_of(model, args.kind, layers, images=args.images, tokens=args.tokens, k=args.k,
                                    features=args.features, activation=args.activation, skip=args.skip,
                                    bank=args.bank, out=args.out, engine=_engine(args), replace=args.replace)
    what = "an SAE on the stream after block" if args.kind == "sae" else "a transcoder of the MLP of block"
    for trained, (report, folder) in results.items():
        poor = (f" (poor: below {MIN_EXPLAINED_VARIANCE} of the variance explained; train on more tokens)"
                if report.explained_variance < MIN_EXPLAINED_VARIANCE else "")
        print(f"{model.label}: {what} {trained}: {report.line()} -> {folder}{poor}")


def _load_features(args: argparse.Namespace, model, layer: int) -> None:
    from .dictionaries import dictionary_folder, load_pretrained
    from .folders import model_folder

    if not args.source:
        raise InterpretError("features load needs the dictionary's folder or hf://ORG/REPO[/SUBFOLDER] (--source).")
    dictionary = load_pretrained(args.source, model, args.layer)
    config = dictionary.config
    folder = dictionary.save(dictionary_folder(args.out or model_folder(model), config.kind, config.layer),
                             model=model.label, weights_sha256=model.weights_hash, source=str(args.source))
    print(f"{model.label}: a {config.source} {config.name} ({config.features} features, {config.activation}) -> "
          f"{folder}; describe it with: python -m interpret features describe --kind {config.kind} --layer "
          f"{config.layer}")


def _describe_features(args: argparse.Namespace, model, layer: int) -> None:
    from .banks import bank_named, default_bank
    from .dictionaries import describe_features, dictionary_folder, stored_dictionary
    from .folders import model_folder

    dictionary, _ = stored_dictionary(model, args.kind, layer, args.out)
    atlas = describe_features(model, dictionary, _feature_images(args, model), bank_named(args.bank or default_bank(
        model.name)), engine=_engine(args))
    folder = atlas.save(dictionary_folder(args.out or model_folder(model), args.kind, dictionary.config.layer))
    named = sum(1 for text, _, _ in atlas.labels if text)
    print(f"{model.label}: {dictionary.config.features} features of the {dictionary.config.name} over {atlas.count} "
          f"images, {named} named -> {folder}")


def _features_of_image(args: argparse.Namespace, model, layer: int) -> None:
    from .dictionaries import explain_features, stored_dictionary

    if not args.image:
        raise InterpretError("features top needs an IMAGE.")
    dictionary, atlas = stored_dictionary(model, args.kind, layer, args.out)
    report = explain_features(model, args.image, args.caption, layer, top=args.top, dictionary=dictionary,
                              atlas=atlas)
    print(f"{model.label}: features of the {dictionary.config.name} on {args.image}"
          + (f", and the score of '{report.caption}' ({report.cosine:+.4f}) without each" if report.caption else ""))
    print(f"\n{'feature':>7}  {'peak':>7}  {'patches':>7}  {'score change':>12}  name")
    for index, feature in enumerate(report.features):
        change = f"{float(report.changes[index]):+12.5f}" if report.changes is not None else " " * 12
        print(f"{feature:>7}  {float(report.peaks[index]):7.3f}  {int(report.patches[index]):>7}  {change}  "
              f"{report.names[index] if report.names else ''}")


def _show_feature(args: argparse.Namespace, model, layer: int) -> None:
    from .dictionaries import stored_dictionary

    if args.feature is None:
        raise InterpretError("features show needs --feature F.")
    dictionary, atlas = stored_dictionary(model, args.kind, layer, args.out)
    if not 0 <= args.feature < dictionary.config.features:
        raise InterpretError(f"The {dictionary.config.name} has features 0 to {dictionary.config.features - 1}.")
    if atlas is None:
        raise InterpretError(f"The {dictionary.config.name} has no atlas yet: python -m interpret features describe "
                             f"--kind {args.kind} --layer {layer}.")
    name = atlas.labels[args.feature] if atlas.labels else ("", "", 0.0)
    print(f"{model.label}, {dictionary.config.name}, feature {args.feature}: '{name[0]}' ({name[1]}, {name[2]:+.3f}); "
          f"fires on {float(atlas.frequency[args.feature]):.2%} of tokens, "
          f"{float(atlas.mean_activation[args.feature]):.3f} where it fires")
    for row, value in zip(atlas.top_rows[args.feature].tolist(), atlas.top_values[args.feature].tolist()):
        if row >= 0:
            print(f"  {value:8.3f}  {atlas.names[row]}")


def _export_features(args: argparse.Namespace, model, layer: int) -> None:
    from .dictionaries import save_saelens, stored_dictionary

    if not args.to:
        raise InterpretError("features export needs the folder to write to (--to).")
    dictionary, _ = stored_dictionary(model, args.kind, layer, args.out)
    folder = save_saelens(dictionary, args.to, model)
    print(f"{model.label}: the {dictionary.config.name} in SAELens's format -> {folder} (sae_lens.SAE.load_from_disk)")


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the images are decomposed")
    group.add_argument("--engine", default="local", choices=("local", "ray"),
                       help="'local' (default: this process) or 'ray' (a Ray cluster; pip install -r "
                            "requirements-ray.txt); both write the same bytes")
    group.add_argument("--address", help="Ray: 'auto' (the cluster this machine is in), 'ray://HOST:PORT', or "
                                         "none to start Ray here")
    group.add_argument("--workers", type=int, default=1, help="Ray: decomposing actors, each loads the model once "
                                                              "(default: 1)")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per actor (default: 0, CPU)")


def _engine(args: argparse.Namespace):
    from .engines import make_engine

    if args.engine == "local" and (args.address or args.workers != 1 or args.gpus_per_worker):
        raise InterpretError("--address, --workers and --gpus-per-worker are for --engine ray.")
    return make_engine(args.engine, args.address, args.workers, args.gpus_per_worker)


def _parse_head(text: str) -> tuple[int, int]:
    try:
        layer, head = (int(part) for part in text.split("."))
        return layer, head
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER.HEAD such as 11.4, got {text!r}") from None


def _head_name(head: tuple[int, int]) -> str:
    return f"{head[0]}.{head[1]}"


def _neighbours(args: argparse.Namespace) -> None:
    from .index import ImageIndex

    model = _load(args) if args.model else None
    database = ImageIndex.open(args.index, model)
    if args.text is not None:
        if args.head is None:
            raise InterpretError("--text needs --head LAYER.HEAD.")
        results, what = database.text_neighbours(args.text, *args.head, k=args.k), f"'{args.text}', head {_head_name(args.head)}"
    elif args.image is None:
        raise InterpretError("Give an image (IMAGE) or a text (--text).")
    elif args.head is not None:
        results, what = database.image_neighbours(args.image, *args.head, k=args.k), f"head {_head_name(args.head)}"
    elif args.property:
        results, what = database.property_neighbours(args.image, args.property, k=args.k), args.property
    else:
        results, what = database.neighbours(args.image, k=args.k), "whole embedding"
    print(f"{database.model.label}, {database.count} images; neighbours by {what}:")
    for rank, (path, score) in enumerate(results, start=1):
        print(f"{rank:>4}  {score:+.4f}  {path}")


def _eval_seg(args: argparse.Namespace) -> None:
    import numpy as np

    from .images import list_images, load_image
    from .mutual import load_classes
    from .segment import evaluate_segmentation

    model = _load(args)
    if args.images:
        if not (args.masks and args.classes):
            raise InterpretError("--images needs --masks DIR (same file names, nonzero = foreground) and "
                                 "--classes FILE (one class prompt a line).")
        classes = load_classes(args.classes)
        masks = {path.stem: path for path in list_images(args.masks)}
        pairs = [(path, masks[path.stem]) for path in list_images(args.images)[: args.limit] if path.stem in masks]
        if not pairs:
            raise InterpretError(f"No image in {args.images} has a mask of the same name in {args.masks}.")
        samples = ((path, np.asarray(load_image(mask).convert("L")) > 0) for path, mask in pairs)
        source = f"{len(pairs)} images of {args.images}"
    elif is_toy(model.name):
        from .toy.evaluate import COLOUR_SHAPE_PROMPTS
        from .toy.train import toy_scene

        classes = list(COLOUR_SHAPE_PROMPTS)
        count = args.limit or 200
        samples = ((scene.image, scene.masks[0]) for scene in (toy_scene(80_000 + i, count=1) for i in range(count)))
        source = f"{count} single-object toy scenes, {len(classes)} classes 'a {{colour}} {{shape}}'"
    else:
        raise InterpretError("--images DIR, --masks DIR and --classes FILE are needed (the toy model has its own).")
    metrics = evaluate_segmentation(model, samples, classes)
    print(f"{model.label}, {source}: zero-shot segmentation (all heads, predicted class minus the class mean, "
          "thresholded at its mean)")
    print(f"pixel accuracy {metrics['pixel accuracy']:.3f}   mIoU {metrics['mIoU']:.3f}   mAP {metrics['mAP']:.3f}")


def _faithfulness(args: argparse.Namespace) -> None:
    import math

    from .explanations import METHODS
    from .faithfulness import evaluate_maps, folder_samples, read_class_names, toy_samples
    from .models import load_model

    methods = list(METHODS) if args.methods == ["all"] else args.methods
    rows = []
    for spec in args.models:
        model = load_model(*_model_spec(spec), args.device)
        if _random_weights(model):
            print(f"{model.label}: random weights: these scores describe no trained model", file=sys.stderr)
        if args.images:
            if not args.masks:
                raise InterpretError("--images needs --masks DIR (masks/<class>/<name>.png beside "
                                     "images/<class>/<name>.*; a pixel that is not 0 is the object).")
            samples = list(folder_samples(args.images, args.masks, args.template, args.limit,
                                          read_class_names(args.names)))
            source = f"{len(samples)} images of {args.images}"
        elif is_toy(model.name):
            samples = toy_samples(args.count, args.count)
            source = f"{args.count} single-object and {args.count} multi-object toy scenes"
        else:
            raise InterpretError(f"--images DIR and --masks DIR are needed for {model.label} (toy models draw "
                                 "their own scenes).")
        table = evaluate_maps(model, samples, methods, steps=args.steps, progress=True)
        print(f"\n{model.label}, {source}:")
        scores = [key for key in next(iter(table.values())) if key != "images"  # a score no sample could have
                  and not all(math.isnan(row[key]) for row in table.values())]  # (multi-object, on a folder)
        print("| method | " + " | ".join(scores) + " |\n|---|" + "---|" * len(scores))
        for method, row in table.items():
            print(f"| {method} | " + " | ".join(f"{row[key]:.3f}" for key in scores) + " |")
            rows.append({"model": model.label, "method": method, **row})
    _write_csv(args.out, rows)
    if args.plot:
        from .render import faithfulness_plot

        faithfulness_plot(rows).save(args.plot)
        print(f"saved the plot to {args.plot}")


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
    _add_engine_arguments(describe)
    describe.set_defaults(run=_describe_heads)

    index = commands.add_parser("build-index", help="embed a folder of images into a searchable database",
                                description="Store every image's per-head contributions (chosen layers, "
                                            "float16) and embedding in FAISS indexes. Reruns resume an "
                                            "interrupted build and add or drop changed files only.")
    _add_model_arguments(index)
    index.add_argument("--images", help="folder of images (recursive; JPEG, PNG, WebP, ...); the toy model "
                                        "draws toy scenes when omitted")
    index.add_argument("--layers", type=int, nargs="+", help="layers whose heads to store (default: the last 4)")
    index.add_argument("--out", help="database folder (default: indexes/<model>)")
    index.add_argument("--batch-size", type=int, default=32)
    index.add_argument("--index", choices=("flat", "ivf-sq8", "ivf-pq", "hnsw"),
                       help="search index kind: 'flat' (exact; the default below 100,000 images), 'ivf-pq' (the "
                            "default above), 'ivf-sq8' or 'hnsw'; compressed kinds re-rank their candidates exactly")
    index.add_argument("--overwrite", action="store_true",
                       help="replace a database of another model (or other weights) at --out")
    _add_engine_arguments(index)
    index.set_defaults(run=_build_index)

    search = commands.add_parser("neighbours", help="nearest images in a database, by head, property or text",
                                 description="Search a database built by build-index.")
    search.add_argument("image", nargs="?", help="query image")
    search.add_argument("--index", required=True, help="database folder (indexes/<model>)")
    search.add_argument("--head", type=_parse_head, metavar="LAYER.HEAD", help="compare this head only")
    search.add_argument("--property", help="compare the heads labelled with this property (colour, shape, ...)")
    search.add_argument("--text", help="a text to match against --head's contributions")
    search.add_argument("--k", type=int, default=10, help="how many neighbours (default: 10)")
    search.add_argument("--model", help="the model (default: the one the database names)")
    search.add_argument("--pretrained", default=None, help="its pretrained tag or checkpoint")
    search.add_argument("--device", default="cpu")
    search.set_defaults(run=_neighbours)

    topic = commands.add_parser("topic", help="where in an image the tower finds a text (topic / contrastive map)",
                                description="Each patch's contribution to the image-text score, summed over the "
                                            "chosen parts (--parts) and heads; with --relative-to, minus the mean map of other texts "
                                            "(one text: a contrastive map).")
    topic.add_argument("image", help="image file")
    topic.add_argument("--text", required=True, help="what to look for, e.g. 'a dog'")
    topic.add_argument("--relative-to", nargs="+", metavar="TEXT",
                       help="texts whose mean map is taken away, e.g. 'a cat' or the other class prompts")
    topic.add_argument("--heads", default="all", help="'all' (default), a layer '11', a head '11.4' or heads "
                                                      "'11.4, 10.2'")
    topic.add_argument("--parts", choices=tuple(MAP_PARTS), default=DEFAULT_PARTS,
                       help=f"what to map (default: {DEFAULT_PARTS}): " +
                            "; ".join(f"{key}: {text}" for key, text in MAP_PARTS.items()))
    topic.add_argument("--save", metavar="PNG", help="save the map over the image")
    topic.add_argument("--opacity", type=float, default=0.6, help="the map's opacity in the PNG (default: 0.6)")
    _add_model_arguments(topic)
    topic.set_defaults(run=_topic)

    seg = commands.add_parser("eval-seg", help="evaluate zero-shot segmentation over images with masks",
                              description="The TextSpan paper's protocol: all heads, the predicted class's map minus "
                                          "the mean over classes, thresholded at its mean; pixel accuracy, mIoU, mAP.")
    _add_model_arguments(seg)
    seg.add_argument("--images", help="folder of images; the toy model uses toy scenes when omitted")
    seg.add_argument("--masks", help="folder of masks with the images' file names (nonzero = foreground)")
    seg.add_argument("--classes", help="text file, one class prompt a line")
    seg.add_argument("--limit", type=int, help="evaluate at most this many images")
    seg.set_defaults(run=_eval_seg)

    faith = commands.add_parser("faithfulness", help="score explanation methods' maps against known truth",
                                description="Every explanation method's map (interpret/explanations.py) scored: "
                                            "pointing game, multi-object pointing, mIoU and pixel accuracy "
                                            "against masks, deletion and insertion AUC (interpret/faithfulness.py).")
    faith.add_argument("--models", nargs="+", required=True, metavar="NAME[:TAG]",
                       help="e.g. toy toy-pooled ViT-B-16:openai (no tag: random weights)")
    faith.add_argument("--methods", nargs="+", default=["all"], help="method names (default: all)")
    faith.add_argument("--images", help="images/<class>/<name>.* (toy models draw their own scenes when omitted)")
    faith.add_argument("--masks", help="masks/<class>/<name>.png, the same names (not 0: the object)")
    faith.add_argument("--template", default="a photo of a {}", help="the text for a class (default: 'a photo "
                                                                      "of a {}')")
    faith.add_argument("--names", help="lines 'folder class name' (ImageNet-S: wnid and name; default: the "
                                       "sub-folders' names are the classes)")
    faith.add_argument("--limit", type=int, help="at most this many images of --images")
    faith.add_argument("--count", type=int, default=200, help="toy scenes of each kind (default: 200)")
    faith.add_argument("--steps", type=int, default=16, help="deletion / insertion steps (default: 16)")
    faith.add_argument("--out", default="faithfulness.csv", help="CSV table (default: faithfulness.csv)")
    faith.add_argument("--plot", metavar="PNG", help="save a plot of the table")
    faith.add_argument("--device", default="cpu")
    faith.set_defaults(run=_faithfulness)

    interact = commands.add_parser("interact", help="second-order caption-token x image-patch interactions",
                                   description="Which caption tokens match which image patches (Moeller et al.): "
                                               "a span's map on the image and a box's score per token.")
    interact.add_argument("image", help="image file")
    interact.add_argument("--caption", required=True)
    interact.add_argument("--tokens", help="the span to map: token numbers such as 5, 5,6 or 5-7 (0 is the start "
                                           "token; default: all words)")
    interact.add_argument("--box", help="the region to score tokens on: left,top,right,bottom in image pixels "
                                        "(default: the whole image)")
    interact.add_argument("--image-layer", type=int, default=-1,
                          help="interpolate the states entering this image block (default: -1, the last)")
    interact.add_argument("--text-layer", type=int, default=-1, help="the same for the text tower (default: -1)")
    interact.add_argument("--steps", type=int, default=10, help="interpolation steps (default: 10)")
    interact.add_argument("--rule", default="midpoint", choices=("midpoint", "right"),
                          help="interpolation points: 'midpoint' (default: complete to 1/steps^2) or 'right' (the "
                               "paper's and exclip's, 1/steps)")
    interact.add_argument("--save", metavar="PNG", help="save the span's map over the image")
    interact.add_argument("--save-tokens", metavar="PNG", help="save the tokens coloured by their box interactions")
    _add_model_arguments(interact)
    interact.set_defaults(run=_interact)

    mutual = commands.add_parser("mutual", help="mutual knowledge of the vision and text sides, per model",
                                 description="Explain zero-shot classification by the concepts both encoders share "
                                             "(Sammani & Deligiannis): for each model, top-1, the class-level mutual "
                                             "information and its dynamics AUC, and top-1 with the shared "
                                             "descriptors added to the class prompts; one CSV row per model.")
    mutual.add_argument("--models", nargs="+", required=True, metavar="NAME[:TAG]",
                        help="models, e.g. ViT-B-32:openai ViT-B-16:openai toy (no tag: random weights)")
    mutual.add_argument("--images", help="folder with one sub-folder of images per class, named as in the "
                                         "descriptors (default: single-object toy scenes of the toy world's 24 "
                                         "classes, with its descriptors)")
    mutual.add_argument("--classes", help="text file, one class a line (default: every class of --descriptors)")
    mutual.add_argument("--descriptors", help='JSON file {"class": ["description", ...]} (default without '
                                              "--images: the toy world's colour and shape descriptors)")
    mutual.add_argument("--template", default="{}", help="class prompt, e.g. 'a photo of a {}' (default: {})")
    mutual.add_argument("--parts", type=int, default=5, help="visual concepts L (default: 5)")
    mutual.add_argument("--per-class", type=int, default=10, help="images per class (default: 10)")
    mutual.add_argument("--out", default="mutual.csv", help="CSV table (default: mutual.csv)")
    mutual.add_argument("--plot", metavar="PNG", help="save a plot of the table")
    mutual.add_argument("--device", default="cpu")
    mutual.set_defaults(run=_mutual)

    from .paths import TOY_DIR, TOY_POOLED_DIR
    from .toy.defaults import TRAINING_DEFAULTS as DEFAULTS

    train_toy = commands.add_parser("train-toy", help="train a bundled toy CLIP on the toy world (CPU, ~14 min)",
                                    description="Train the toy CLIP contrastively on freshly drawn toy scenes.")
    train_toy.add_argument("--pooling", choices=("class-token", "attention"), default="class-token",
                           help="the image tower's readout: the class token (the bundled 'toy') or SigLIP's "
                                "attention pooler ('toy-pooled')")
    train_toy.add_argument("--out", help=f"output folder (default: {TOY_DIR} or {TOY_POOLED_DIR})")
    train_toy.add_argument("--steps", type=int, help="optimiser steps (default: 1600 for the class-token toy, 3200 for "
                                                     "the attention-pooled one)")
    train_toy.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    train_toy.add_argument("--scenes", type=int, default=DEFAULTS["scenes"], help="distinct training scenes")
    train_toy.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    train_toy.set_defaults(run=_train_toy)

    scores = commands.add_parser("score-models", help="how interpretable models are: head consistency, association, "
                                                      "entanglement, and accuracy as heads are removed",
                                 description="Score each model's heads (consistency of their TextSpan descriptions "
                                             "with their label) and measure zero-shot accuracy without the most, "
                                             "random and least consistent heads (see interpret/quantify.py).")
    scores.add_argument("--models", nargs="+", required=True, metavar="NAME[:TAG]",
                        help="e.g. toy ViT-B-32:openai ViT-B-16 (no tag: random weights)")
    scores.add_argument("--images", help="folder with one sub-folder of images per class (the toy model: toy "
                                         "scenes when omitted); also describes heads that have no labels yet")
    scores.add_argument("--template", default="a photo of a {}", help="class prompt (default: 'a photo of a {}')")
    scores.add_argument("--remove", type=int, help="heads to remove at most (default: a quarter of them)")
    scores.add_argument("--seeds", type=int, default=3, help="random head sets to average (default: 3)")
    scores.add_argument("--limit", type=int, help="at most this many images")
    scores.add_argument("--device", default="cpu")
    scores.add_argument("--out", default="scores.csv", help="CSV table (default: scores.csv)")
    scores.add_argument("--plot", help="PNG of the pruning curves")
    scores.set_defaults(run=_score_models)

    bundle = commands.add_parser("bundle", help="everything a model's tabs need in one folder (labels, database, "
                                                "thumbnails), or publish bundles to the Hugging Face hub",
                                 description="Build DIR/<model folder>/: head labels, image database, thumbnails and a "
                                             "hashed manifest; or upload built bundles with --publish.")
    _add_model_arguments(bundle)
    bundle.add_argument("--images", help="folder of images (recursive): the database, and the head labels' images")
    bundle.add_argument("--bank", help="'general' (default), 'toy' (default for the toy model) or a text file")
    bundle.add_argument("--layers", type=int, nargs="+", help="layers whose heads the database stores (default: "
                                                              "the last 4)")
    bundle.add_argument("--neuron-layers", type=int, nargs="*", help="MLP layers whose neuron directions to store "
                                                                    "(default: the three before the last)")
    bundle.add_argument("--feature-layers", type=int, nargs="*", help="blocks to train an SAE on (default: none)")
    bundle.add_argument("--transcoder-layers", type=int, nargs="*",
                        help="blocks whose MLPs get a transcoder, all from one pass (default: none)")
    bundle.add_argument("--batch-size", type=int, default=32)
    bundle.add_argument("--out", help="folder of bundles: the bundle goes to OUT/<model folder>")
    bundle.add_argument("--publish", metavar="hf://datasets/ORG/REPO", help="upload bundles (needs a token)")
    bundle.add_argument("--from", dest="source", metavar="DIR", help="with --publish: a bundle or a folder of them")
    _add_engine_arguments(bundle)
    bundle.set_defaults(run=_bundle)

    neurons = commands.add_parser(
        "neurons", help="MLP neurons' second-order effects: directions over images, an image's neurons, one neuron",
        description="directions: each neuron's direction, top images and text description over a folder of images "
                    "(two streaming passes; stored in the model's folder). image: the neurons that move an image-"
                    "caption score most through the later heads. show: one neuron's description and top images.")
    neurons.add_argument("action", choices=("directions", "image", "show"))
    neurons.add_argument("image", nargs="?", help="image (for 'image')")
    _add_model_arguments(neurons)
    neurons.add_argument("--layer", type=int, help="the MLP layer (default: the third from the end)")
    neurons.add_argument("--caption", help="caption (for 'image')")
    neurons.add_argument("--neuron", type=int, help="the neuron (for 'show')")
    neurons.add_argument("--top", type=int, help="neurons to list (image; default 10), top images to list (show; "
                                                 "default 10), or top images to fit each direction on (directions; "
                                                 "default 100, the paper's)")
    neurons.add_argument("--images", help="folder of images (for 'directions'; the toy model: its database scenes)")
    neurons.add_argument("--bank", help="text bank to describe the neurons with: 'general', 'toy' (the toy's "
                                        "default) or a text file")
    neurons.add_argument("--batch-size", type=int, default=16)
    neurons.add_argument("--out", help="model folder to store the directions in (default: indexes/<model>)")
    _add_engine_arguments(neurons)
    neurons.set_defaults(run=_neurons)

    features = commands.add_parser(
        "features", help="dictionaries (SAEs and transcoders): train, load or export one, describe its features",
        description="train: SAEs of the stream after a block, or transcoders of the MLPs (--kind transcoder: every "
                    "block from one pass over the images unless --layers), on token states (toy scenes, or "
                    "--images), then their atlases (top images, frequency, names). load: SAELens's, ViT-Prisma's or "
                    "saev's dictionary (--source). export: a stored one in SAELens's format (--to). describe: the "
                    "atlas of a stored one. top: an image's features (and, with --caption, the score without each). "
                    "show: a feature.")
    features.add_argument("action", choices=("train", "load", "describe", "top", "show", "export"))
    features.add_argument("image", nargs="?", help="image (for 'top')")
    _add_model_arguments(features)
    features.add_argument("--kind", choices=("sae", "transcoder"), default="sae",
                          help="sae (of the stream after a block, default) or transcoder (of a block's MLP)")
    features.add_argument("--layer", type=int, help="the block whose output stream (SAE) or MLP (transcoder) it "
                                                    "reads (default: the middle)")
    features.add_argument("--layers", help="train: blocks, comma-separated, trained together from one pass "
                                           "(default: --layer; transcoders: every block)")
    features.add_argument("--caption", help="caption (for 'top')")
    features.add_argument("--feature", type=int, help="the feature (for 'show')")
    features.add_argument("--top", type=int, default=10, help="features to list (top)")
    features.add_argument("--images", help="folder of images (train, describe; the toy model: toy scenes)")
    features.add_argument("--tokens", type=int, help="tokens to train on (default: 1,000,000 on the toy, else every "
                                                     "token of the images once)")
    features.add_argument("--k", type=int, default=32, help="TopK's k (default 32, saev's)")
    features.add_argument("--features", type=int, help="features (default: 16 x the width)")
    features.add_argument("--activation", choices=("topk", "relu", "jumprelu"), default="topk",
                          help="topk (with AuxK, default), relu (with L1) or jumprelu (with L0, Gemma Scope's)")
    features.add_argument("--skip", action="store_true", help="train: a transcoder with a linear skip connection")
    features.add_argument("--bank", help="text bank to name the features with ('general', 'toy' or a file)")
    features.add_argument("--source", help="load: a dictionary's folder or hf://ORG/REPO[/SUBFOLDER]")
    features.add_argument("--to", help="export: the folder to write the SAELens files to")
    features.add_argument("--out", help="the model folder dictionaries are stored in and read from (default: "
                                        "indexes/<model>, or its bundle)")
    features.add_argument("--replace", action="store_true", help="train: replace a dictionary stored there already")
    _add_engine_arguments(features)
    features.set_defaults(run=_features)

    circuits = commands.add_parser(
        "circuits", help="an image-caption score as an attribution graph through the MLPs' transcoders",
        description="The local replacement model of IMAGE (attention and norms fixed, each MLP its transcoder's "
                    "features and an error per token) and its attribution graph of the caption's score, pruned as "
                    "circuit-tracer prunes; its replacement and completeness scores, the most influential nodes, "
                    "and with --out the graph in circuit-tracer's JSON schema.")
    circuits.add_argument("image")
    _add_model_arguments(circuits)
    circuits.add_argument("--caption", required=True)
    circuits.add_argument("--contrast", help="score the caption rather than this text")
    circuits.add_argument("--max-features", type=int, default=1000, help="features kept, by total effect (1000)")
    circuits.add_argument("--node-threshold", type=float, default=0.8, help="influence share of nodes kept (0.8)")
    circuits.add_argument("--edge-threshold", type=float, default=0.98, help="influence share of edges kept (0.98)")
    circuits.add_argument("--top", type=int, default=10, help="nodes to list")
    circuits.add_argument("--out", help="write the graph as JSON (circuit-tracer's schema) here")
    circuits.set_defaults(run=_circuits)

    limits = commands.add_parser("limits", help="print the limits on what a request may ask (markdown table)",
                                 description="Every size, count and length a user controls (interpret/limits.py).")
    limits.set_defaults(run=_limits)
    return parser


def _circuits(args: argparse.Namespace) -> None:
    import json

    from .circuits import attribution_graph, to_json

    model = _load(args)
    graph = attribution_graph(model, args.image, args.caption, args.contrast, max_feature_nodes=args.max_features,
                              node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    scores = graph.scores
    print(f"{model.label}: the score of '{args.caption}'" + (f" rather than '{args.contrast}'" if args.contrast else "")
          + f" on {args.image}: {graph.score:+.4f}; transcoders of MLPs {graph.transcoder_layers or 'none'}; "
          f"{scores['features active']} features active, {scores['features kept']} kept; {scores['nodes kept']} "
          f"nodes and {scores['edges kept']} edges after pruning; replacement score {scores['replacement']:.3f}, "
          f"completeness {scores['completeness']:.3f}")
    kept = [i for i, node in enumerate(graph.nodes) if graph.node_mask[i] and node.kind != "score"]
    direct = graph.adjacency[graph.score_index]
    print(f"\n{'node':<28} {'cumulative influence':>20} {'edge to the score':>17}")
    for index in sorted(kept, key=lambda i: graph.nodes[i].influence)[: args.top]:
        node = graph.nodes[index]
        what = {"feature": f"feature {node.feature} of MLP {node.layer}", "error": f"MLP {node.layer} error",
                "embedding": "embedding"}[node.kind]
        print(f"{what + ' @ ' + graph.tokens[node.token]:<28} {node.influence:20.3f} {float(direct[index]):+17.5f}")
    if args.out:
        Path(args.out).write_text(json.dumps(to_json(graph, model)))
        print(f"\n-> {args.out}")


def _limits(args: argparse.Namespace) -> None:
    from .limits import limits_table

    print(limits_table())


OUTPUTS = ("save", "save_tokens", "plot", "out")  # the options that name a file or folder a command writes


def _make_output_folders(args: argparse.Namespace) -> None:
    """The folder each output goes into, made first (`--save out/map.png` works in a fresh checkout)."""
    for option in OUTPUTS:
        value = getattr(args, option, None)
        if isinstance(value, str) and value and "://" not in value:
            Path(value).parent.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _make_output_folders(args)
        args.run(args)
    except InterpretError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
