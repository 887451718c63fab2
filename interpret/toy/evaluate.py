"""How well a model sees the toy world: zero-shot accuracy per attribute and caption retrieval, on freshly drawn
evaluation scenes (seeds below the training range, every colour x shape pair allowed).

Tasks (prompt sets follow the caption grammar of `world.py`):
- `colour x shape`: single objects, 24-way over "a {colour} {shape}"; `held-out pairs`: the same on the pairs
  left out of training only;
- `colour`: 6-way over "something {colour}"; `shape`: 4-way over "a {shape}";
- `size`: 2-way over "a {size} {shape}" (true shape); `position`: 9-way over "a {shape} {position}" (true shape);
- `two-object retrieval`: image -> caption R@1 among the captions "a {c1} {s1} and a {c2} {s2}" of all scenes;
- `two-object binding`: the true caption against the one with the colours swapped between the objects.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..decompose import decompose_image
from ..models import ClipModel
from .world import COLOURS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES, ToyObject, with_article
from .train import HELD_OUT, toy_scene

# the zero-shot prompts of the toy world, in one place (index i of a prompt list is value i of its attribute)
COLOUR_PROMPTS = tuple(f"something {colour}" for colour in COLOURS)
SHAPE_PROMPTS = tuple(with_article(shape) for shape in SHAPES)
COLOUR_SHAPE_PAIRS = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
COLOUR_SHAPE_PROMPTS = tuple(with_article(f"{colour} {shape}") for colour, shape in COLOUR_SHAPE_PAIRS)


def _predict(model: ClipModel, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Index of the best prompt per image."""
    return (model.encode_images(images) @ model.encode_texts(prompts).T).argmax(dim=-1)


def _batch(model: ClipModel, scenes) -> torch.Tensor:
    return model.preprocess_images([scene.image for scene in scenes])


def zero_shot_accuracy(model: ClipModel, count: int = 300, seed: int = 0) -> dict[str, float]:
    """Accuracies on `count` single-object and `count // 2` two-object evaluation scenes."""
    singles = [toy_scene(seed + i, count=1) for i in range(count)]
    objects: list[ToyObject] = [scene.objects[0] for scene in singles]
    images = _batch(model, singles)
    results = {}

    predicted = _predict(model, images, list(COLOUR_SHAPE_PROMPTS))
    hits = [COLOUR_SHAPE_PAIRS[p] == (o.colour, o.shape) for p, o in zip(predicted.tolist(), objects)]
    results["colour x shape (24-way)"] = sum(hits) / len(hits)
    held = [hit for hit, o in zip(hits, objects) if (o.colour, o.shape) in HELD_OUT]
    results["held-out pairs (24-way)"] = sum(held) / max(len(held), 1)

    single_attribute = colour_and_shape_accuracy(model, model.encode_images(images), objects)
    results["colour (6-way)"], results["shape (4-way)"] = single_attribute["colour"], single_attribute["shape"]

    size_hits, position_hits = [], []
    for shape in SHAPES:  # prompts name the true shape: group the images by it
        index = [i for i, o in enumerate(objects) if o.shape == shape]
        if not index:
            continue
        sizes = list(SIZES)
        predicted = _predict(model, images[index], [f"a {size} {shape}" for size in sizes])
        size_hits += [sizes[p] == objects[i].size for p, i in zip(predicted.tolist(), index)]
        predicted = _predict(model, images[index], [f"a {shape} {phrase}" for phrase in POSITION_PHRASES])
        position_hits += [POSITIONS[p] == (objects[i].column, objects[i].row) for p, i in zip(predicted.tolist(), index)]
    results["size (2-way)"] = _mean(size_hits)
    results["position (9-way)"] = _mean(position_hits)

    doubles = [toy_scene(seed + count + i, count=2) for i in range(count // 2)]
    captions = [f"{a.phrase()} and {b.phrase()}" for a, b in (scene.objects for scene in doubles)]
    similarity = model.encode_images(_batch(model, doubles)) @ model.encode_texts(captions).T
    results["two-object retrieval R@1"] = _mean(
        captions[p] == captions[i] for i, p in enumerate(similarity.argmax(dim=-1).tolist()))
    binding = []
    for row, scene in enumerate(doubles):
        a, b = scene.objects
        if a.colour == b.colour or a.shape == b.shape:
            continue
        swapped = f"{ToyObject(b.colour, a.shape, a.size, a.column, a.row).phrase()} and " \
                  f"{ToyObject(a.colour, b.shape, b.size, b.column, b.row).phrase()}"
        scores = model.encode_images(scene.image) @ model.encode_texts([captions[row], swapped]).T
        binding.append(bool(scores[0, 0] > scores[0, 1]))
    results["two-object binding (true vs swapped)"] = _mean(binding)
    return results


def _mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)


def colour_and_shape_accuracy(model: ClipModel, embeddings: torch.Tensor, objects: list[ToyObject]) -> dict:
    """Zero-shot colour (6-way, "something {colour}") and shape (4-way, "a {shape}") accuracy of image
    embeddings `[N, D]` (normalised here)."""
    embeddings = F.normalize(embeddings, dim=-1)
    colours = list(COLOURS)
    colour = (embeddings @ model.encode_texts(list(COLOUR_PROMPTS)).T).argmax(dim=-1)
    shape = (embeddings @ model.encode_texts(list(SHAPE_PROMPTS)).T).argmax(dim=-1)
    return {"colour": _mean(colours[p] == o.colour for p, o in zip(colour.tolist(), objects)),
            "shape": _mean(SHAPES[p] == o.shape for p, o in zip(shape.tolist(), objects))}


def mean_ablation(model: ClipModel, atlas, properties=("colour", "shape"), count: int = 300,
                  seed: int = 20_000, forward: bool = False) -> list[dict]:
    """Replace the heads labelled with each property by their mean over other scenes, and measure colour and
    shape accuracy before and after (single-object evaluation scenes). Their direct contributions to the
    embedding (default), or, with `forward`, their outputs in the forward pass (what later blocks and a
    pooler's MLP read of them too: `quantify.ablated_embeddings`)."""
    from ..quantify import ablated_embeddings, head_means

    scenes = [toy_scene(seed + i, count=1) for i in range(count)]
    reference = [toy_scene(seed + count + i) for i in range(count)]
    objects = [scene.objects[0] for scene in scenes]
    parts = decompose_image(model, _batch(model, scenes), spatial=False)
    if forward:
        output_means = head_means(model, _batch(model, reference))
    else:
        heads = parts.head_totals()  # [N, L, H, D]
        means = decompose_image(model, _batch(model, reference), spatial=False).head_totals().mean(dim=0)

    def ablated(chosen: list) -> torch.Tensor:
        if forward:
            return ablated_embeddings(model, _batch(model, scenes), chosen, output_means)
        embedding = parts.embedding.clone()
        for layer, head in chosen:
            embedding += means[layer, head] - heads[:, layer, head]
        return embedding

    rows = [{"ablated": "nothing", "heads": [], **colour_and_shape_accuracy(model, parts.embedding, objects)}]
    for prop in properties:
        chosen = atlas.heads_with(prop)
        rows.append({"ablated": f"{prop} heads", "heads": chosen,
                     **colour_and_shape_accuracy(model, ablated(chosen), objects)})
    return rows


TWO_OBJECT_SEED = 60_000


def two_object_scenes(count: int, seed: int = TWO_OBJECT_SEED) -> list:
    """Evaluation scenes of two objects that differ in colour and in shape (the first `count` from `seed` on)."""
    found = []
    while len(found) < count:
        scene = toy_scene(seed, count=2)
        first, second = scene.objects
        if first.colour != second.colour and first.shape != second.shape:
            found.append(scene)
        seed += 1
    return found


def interaction_truth(model: ClipModel, scenes, image_layer: int = -1, text_layer: int = -1,
                      steps: int = 10) -> dict[str, float]:
    """Second-order interactions against the ground truth, on two-object scenes captioned
    "a {colour 1} {shape 1} and a {colour 2} {shape 2}", per object:

    - `colour pointing` / `words pointing`: the patch with the largest interaction with the object's colour word
      (with its colour and shape words) overlaps the object's box;
    - `colour ranking` / `shape ranking`: summed over the object's box, the object's colour (shape) word
      interacts more than the other object's; `red ranking`: the same for red objects only."""
    from ..interact import interaction_map

    counts = {"colour pointing": [], "words pointing": [], "colour ranking": [], "shape ranking": [],
              "red ranking": []}
    for scene in scenes:
        caption = " and ".join(with_article(f"{o.colour} {o.shape}") for o in scene.objects)
        result = interaction_map(model, scene.image, caption, image_layer, text_layer, steps)
        colour_at = [result.tokens.index(o.colour) for o in scene.objects]  # each shape word follows its colour
        for index, box in enumerate(scene.boxes):
            mine, other = colour_at[index], colour_at[1 - index]
            inside = result.patch_weights(tuple(box)) > 0
            for name, span in (("colour pointing", [mine]), ("words pointing", [mine, mine + 1])):
                counts[name].append(bool(inside.flatten()[result.span_to_region(span).grid.argmax()]))
            per_token = result.region_to_span(tuple(box))
            counts["colour ranking"].append(bool(per_token[mine] > per_token[other]))
            counts["shape ranking"].append(bool(per_token[mine + 1] > per_token[other + 1]))
            if scene.objects[index].colour == "red":
                counts["red ranking"].append(counts["colour ranking"][-1])
    return {name: _mean(values) for name, values in counts.items()} | {"objects": len(counts["colour ranking"])}


def _patch_cover(model: ClipModel, mask: np.ndarray) -> torch.Tensor:
    """`[grid_h, grid_w]`: the share of each patch that a toy scene's object mask `[64, 64]` covers."""
    return F.avg_pool2d(torch.from_numpy(mask).float()[None, None], model.geometry.patch_size)[0, 0]


def _grown(mask: np.ndarray) -> np.ndarray:
    """The mask and its 8 neighbours (a map's maximum on an object's edge pixel still counts)."""
    padded = np.pad(mask, 1)
    rows, columns = mask.shape
    return np.any([padded[dy:dy + rows, dx:dx + columns] for dy in range(3) for dx in range(3)], axis=0)


def _points_at(values: np.ndarray, mask: np.ndarray) -> bool:
    return bool(_grown(mask).flat[int(np.argmax(values))])


def segmentation_truth(model: ClipModel, scenes, selections: dict[str, dict] | None = None) -> dict[str, dict]:
    """Topic and contrastive maps against the ground truth, on two-object scenes whose objects differ in colour
    and in shape; per head selection (`{name: topic_map keyword arguments}`, default all heads) and per object:

    - `colour mIoU raw`: the map of the object's colour word ("something red") thresholded at its mean, against
      the object's mask: the segmentation protocol's mIoU (mean of background and foreground IoU, intersections
      and unions summed over the objects); `colour object IoU raw`: its foreground IoU alone;
    - `... relative`: the same for the word's map relative to all colour words (`relative_to`: minus their mean
      map), the TextSpan zero-shot protocol with the colour words as classes; `shape ...` likewise for "a circle";
    - `colour pointing`: the (raw) map's maximum lies on the object (its mask grown by one pixel);
    - `colour contrastive pointing`: the maximum of map(its colour word) − map(the other object's) lies on the
      object; `red − blue pointing`: the same over red objects beside a blue one; `shape ...` likewise.

    Two reference rows score masks that use no model: `perfect patch-level map` (the true mask averaged onto the
    patch grid, upsampled like a map and thresholded at its mean: the best a patch-level map can hope for) and
    `all background` (nothing predicted)."""
    from ..segment import ImageMaps, mean_iou, overlap, upsample

    selections = selections or {"all heads": {}}
    words = {"colour": list(COLOUR_PROMPTS), "shape": list(SHAPE_PROMPTS)}
    kinds = {"colour": list(COLOURS), "shape": list(SHAPES)}
    overlaps = {name: {} for name in [*selections, "perfect patch-level map", "all background"]}
    pointing = ("colour pointing", "colour contrastive pointing", "red − blue pointing", "shape pointing",
                "shape contrastive pointing")
    points = {name: {key: [] for key in pointing} for name in selections}

    def add(name: str, measure: str, predicted: np.ndarray, mask: np.ndarray) -> None:
        """Count the overlap towards `measure`, a name with {} for 'mIoU' / 'object IoU'."""
        overlaps[name][measure] = overlaps[name].get(measure, 0) + overlap(predicted, mask)

    for scene in scenes:
        maps = ImageMaps(model, scene.image)
        for index, (obj, mask) in enumerate(zip(scene.objects, scene.masks)):
            perfect = upsample(_patch_cover(model, mask), maps.picture.size, maps.box)
            add("perfect patch-level map", "{}", perfect > perfect.mean(), mask)
            add("all background", "{}", np.zeros_like(mask), mask)
            other = scene.objects[1 - index]
            for name, choice in selections.items():
                for kind in ("colour", "shape"):
                    word = words[kind][kinds[kind].index(getattr(obj, kind))]
                    rival = words[kind][kinds[kind].index(getattr(other, kind))]
                    raw = maps.topic(word, **choice).image
                    relative = maps.topic(word, **choice, relative_to=words[kind]).image
                    if kind == "colour":
                        add(name, "colour {} raw", raw > raw.mean(), mask)
                    add(name, f"{kind} {{}} relative", relative > relative.mean(), mask)
                    tally = points[name]
                    tally[f"{kind} pointing"].append(_points_at(raw, mask))
                    contrast = maps.contrastive(word, rival, **choice).image
                    tally[f"{kind} contrastive pointing"].append(_points_at(contrast, mask))
                    if (obj.colour, other.colour) == ("red", "blue") and kind == "colour":
                        tally["red − blue pointing"].append(tally["colour contrastive pointing"][-1])
    rows = {}
    for name, counts in overlaps.items():
        row = {}
        for measure, (intersection, union) in counts.items():
            row[measure.format("mIoU")] = mean_iou(intersection, union)
            row[measure.format("object IoU")] = float(intersection[1] / max(union[1], 1))
        rows[name] = row | {key: float(np.mean(values)) if values else float("nan")
                            for key, values in points.get(name, {}).items()}
    return rows


TOY_DESCRIPTOR_FORMS = ("grammar", "phrasings")


def toy_descriptors(form: str = "grammar"):
    """The toy world's descriptor sets, classes "a {colour} {shape}":

    - 'grammar': "something {colour}" and "a {shape}" (the caption grammar's one-attribute phrases);
    - 'phrasings': four a class, of other forms: the bare words "{colour}" and "{shape}", "something {colour}" and
      "a {shape} shape" (not in the grammar)."""
    from ..mutual import descriptor_set

    if form not in TOY_DESCRIPTOR_FORMS:
        raise ValueError(f"form: one of {TOY_DESCRIPTOR_FORMS}")
    if form == "grammar":
        return descriptor_set({with_article(f"{colour} {shape}"): [f"something {colour}", with_article(shape)]
                               for colour, shape in COLOUR_SHAPE_PAIRS})
    return descriptor_set({with_article(f"{colour} {shape}"): [colour, shape, f"something {colour}",
                                                               f"a {shape} shape"]
                           for colour, shape in COLOUR_SHAPE_PAIRS})


def mutual_truth(model: ClipModel, descriptors=None, count: int = 100, seed: int = 95_000) -> dict[str, float]:
    """Mutual knowledge (the paper's protocol, `mutual.mutual_knowledge`) against the ground truth on single-object
    scenes, classes "a {colour} {shape}":

    - `colour and shape shared`: the shared concepts name the object's colour and its shape (any phrasing: a
      shared descriptor holds the colour word, one holds the shape word);
    - `top concept on the object`: the most important visual concept lies on the object (its patches are on
      average more than 20% covered by the object's mask);
    - `accuracy`, `mean MI (bits)`, `mean MI AUC`, `mean deletion AUC`."""
    from ..mutual import mutual_knowledge

    descriptors = descriptors or toy_descriptors()
    counts = {"colour and shape shared": [], "top concept on the object": [], "accuracy": [], "mean MI (bits)": [],
              "mean MI AUC": [], "mean deletion AUC": []}
    for index in range(count):
        scene = toy_scene(seed + index, count=1)
        obj = scene.objects[0]
        result = mutual_knowledge(model, scene.image, descriptors)
        words = {word for descriptor in result.shared for word in descriptor.split()}
        counts["colour and shape shared"].append(obj.colour in words and obj.shape in words)
        top = int(np.argmax(result.importance))
        cover = _patch_cover(model, scene.masks[0])
        counts["top concept on the object"].append(float(cover[result.parts == top].mean()) > 0.2)
        counts["accuracy"].append(result.predicted == with_article(f"{obj.colour} {obj.shape}"))
        counts["mean MI (bits)"].append(result.mutual_information)
        counts["mean MI AUC"].append(result.mi_auc)
        counts["mean deletion AUC"].append(result.deletion_auc)
    return {name: _mean(values) for name, values in counts.items()} | {"images": count}


def toy_class_samples(per_class: int = 4, seed: int = 90_000) -> dict[str, list]:
    """Single-object toy scenes by their class "a {colour} {shape}": `per_class` of each of the 24 classes."""
    samples = {with_article(f"{colour} {shape}"): [] for colour, shape in COLOUR_SHAPE_PAIRS}
    index = seed
    while any(len(images) < per_class for images in samples.values()):
        scene = toy_scene(index, count=1)
        obj = scene.objects[0]
        images = samples[with_article(f"{obj.colour} {obj.shape}")]
        if len(images) < per_class:
            images.append(scene.image)
        index += 1
    return samples


# --- neurons: what their top images share, and what removing them costs --------------------------------------------

ATTRIBUTE_KINDS = ("colour", "shape", "size", "position")  # the toy bank's properties


def shared_attribute(scenes_objects: list[list[ToyObject]], reference: list[list[ToyObject]]) -> tuple[str, float]:
    """The attribute kind the scenes (their objects) have in common most beyond chance, and by how much: for each
    kind, the share of the scenes holding an object with its most common value among them, minus the share of the
    `reference` scenes (all of them) holding one with that value."""
    def holding(objects_list, kind, value) -> float:
        return _mean(any(_value(o, kind) == value for o in objects) for objects in objects_list)

    best = ("", -1.0)
    for kind in ATTRIBUTE_KINDS:
        counts: dict[str, int] = {}
        for objects in scenes_objects:
            for value in {_value(o, kind) for o in objects}:
                counts[value] = counts.get(value, 0) + 1
        value = max(counts, key=counts.get)
        lift = holding(scenes_objects, kind, value) - holding(reference, kind, value)
        best = max(best, (kind, lift), key=lambda pair: pair[1])
    return best


def _value(obj: ToyObject, kind: str) -> str:
    return obj.position if kind == "position" else getattr(obj, kind)


def neuron_label_agreement(directions, scene_objects: dict[str, list[ToyObject]], share: float = 0.25,
                           min_lift: float = 0.2) -> dict:
    """How often a described neuron's property label is the attribute its top images share (`shared_attribute`).
    Counted over the `share` of the layer's neurons with the largest effects (their significance thresholds) whose
    top images share an attribute by at least `min_lift` beyond chance; `scene_objects`: each database image's
    objects, by its name in `directions`. Returns {"neurons", "agree", "rate", "chance"} (chance: the rate a label
    drawn from the labels' own frequencies would reach)."""
    reference = [scene_objects[name] for name in directions.names]
    order = directions.thresholds.argsort(descending=True)[:max(1, int(share * len(directions.thresholds)))]
    pairs = []
    for neuron in order.tolist():
        kind, lift = shared_attribute([scene_objects[directions.names[row]]
                                       for row in directions.top_rows[neuron].tolist()], reference)
        if lift >= min_lift:
            pairs.append((directions.labels[neuron][0], kind))
    labels = [label for label, _ in pairs]
    kinds = [kind for _, kind in pairs]
    chance = sum((labels.count(k) / len(labels)) * (kinds.count(k) / len(kinds)) for k in set(kinds)) if pairs else 0
    agree = sum(label == kind for label, kind in pairs)
    return {"neurons": len(pairs), "agree": agree, "rate": agree / len(pairs) if pairs else 0.0, "chance": chance}


def colour_and_shape_margins(model: ClipModel, embeddings: torch.Tensor, objects: list[ToyObject]) -> dict:
    """The mean margin of the true colour's prompt ("something {colour}") over the best other colour's, in cosine
    score, and the same for shapes ("a {shape}"): what accuracy hides once it is 1."""
    embeddings = F.normalize(embeddings.float(), dim=-1)
    margins = {}
    for kind, prompts, values in (("colour", COLOUR_PROMPTS, list(COLOURS)), ("shape", SHAPE_PROMPTS, list(SHAPES))):
        scores = embeddings @ model.encode_texts(list(prompts)).T  # [N, classes]
        truth = torch.tensor([values.index(getattr(o, kind)) for o in objects])
        true = scores.gather(1, truth[:, None])[:, 0]
        others = scores.scatter(1, truth[:, None], float("-inf")).max(dim=1).values
        margins[kind] = float((true - others).mean())
    return margins


def neuron_ablation(model: ClipModel, labelled: dict[str, dict[int, list[int]]], count: int = 300,
                    seed: int = 20_000, draws: int = 3) -> list[dict]:
    """Mean-ablate in the forward pass the neurons labelled with each property (`labelled`: property -> {layer:
    neurons}), and as many random neurons of the same layers (`draws` draws, averaged), and measure colour and
    shape accuracy and margins (`colour_and_shape_margins`) on single-object evaluation scenes before and after."""
    import random

    from ..neurons import ablated_neuron_embeddings, neuron_means

    scenes = [toy_scene(seed + i, count=1) for i in range(count)]
    objects = [scene.objects[0] for scene in scenes]
    images = _batch(model, scenes)
    layers = sorted({layer for chosen in labelled.values() for layer in chosen})
    means = neuron_means(model, _batch(model, [toy_scene(seed + count + i) for i in range(count)]), layers)

    def measured(neurons: dict[int, list[int]]) -> dict:
        embeddings = ablated_neuron_embeddings(model, images, neurons, means)
        margins = colour_and_shape_margins(model, embeddings, objects)
        return {**colour_and_shape_accuracy(model, embeddings, objects),
                **{f"{kind} margin": value for kind, value in margins.items()}}

    rows = [{"ablated": "nothing", "neurons": 0, **measured({})}]
    rng = random.Random(seed)
    for prop, chosen in labelled.items():
        total = sum(len(neurons) for neurons in chosen.values())
        if not total:
            continue
        rows.append({"ablated": f"{prop} neurons", "neurons": total, **measured(chosen)})
        drawn = [measured({layer: rng.sample(range(means[layer].shape[1]), len(neurons))
                           for layer, neurons in chosen.items()}) for _ in range(draws)]
        rows.append({"ablated": f"{total} random neurons", "neurons": total,
                     **{name: _mean(row[name] for row in drawn) for name in drawn[0]}})
    return rows


# --- SAE features: the attributes they find, their names, what removing them costs --------------------------------

def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The area under the ROC curve of `scores` for boolean `labels` (ties counted half): Mann-Whitney's U."""
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties at their average rank
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def object_features(model: ClipModel, sae, scenes, aggregate: str = "mean") -> tuple[np.ndarray, list[ToyObject]]:
    """(`[objects, F]` each feature's mean (`aggregate` "mean") or largest ("max") activation over the patches an
    object covers at least half of, the objects) over toy `scenes`."""
    from ..dictionaries import image_features

    rows, objects = [], []
    for start in range(0, len(scenes), 32):
        chunk = scenes[start:start + 32]
        _, _, codes = image_features(model, sae, [scene.image for scene in chunk])
        patches = codes[:, model.geometry.prefix:]  # [B, P, F]
        for scene, code in zip(chunk, patches):
            for obj, mask in zip(scene.objects, scene.masks):
                covered = (_patch_cover(model, mask).flatten() >= 0.5).nonzero().flatten()
                if len(covered):
                    found = code[covered]
                    rows.append((found.mean(dim=0) if aggregate == "mean" else found.amax(dim=0)).numpy())
                    objects.append(obj)
    return np.stack(rows), objects


def probe_truth(model: ClipModel, layer: int, count: int = 300, seed: int = 4_100_000) -> dict[str, float]:
    """The ceiling of `feature_truth`'s AUROCs: for each colour and shape, a linear probe (least squares) on an
    object's mean token state over the patches it covers at least half of, fitted on `count` scenes, its AUROC
    on `count` others (the same scenes as `feature_truth`'s)."""
    from ..dictionaries import token_states

    def states(scenes):
        rows, objects = [], []
        for start in range(0, len(scenes), 64):
            chunk = scenes[start:start + 64]
            patches = token_states(model, [scene.image for scene in chunk], layer)[:, model.geometry.prefix:]
            for scene, state in zip(chunk, patches):
                for obj, mask in zip(scene.objects, scene.masks):
                    covered = (_patch_cover(model, mask).flatten() >= 0.5).nonzero().flatten()
                    if len(covered):
                        rows.append(np.append(state[covered].mean(dim=0).numpy(), 1.0))
                        objects.append(obj)
        return np.stack(rows), objects

    fit, fit_objects = states([toy_scene(seed + i) for i in range(count)])
    test, test_objects = states([toy_scene(seed + count + i) for i in range(count)])
    results = {}
    for kind, values in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        for value in values:
            weights = np.linalg.lstsq(fit, np.array([getattr(o, kind) == value for o in fit_objects], float),
                                      rcond=None)[0]
            results[value] = _auroc(test @ weights, np.array([getattr(o, kind) == value for o in test_objects]))
    return results


def feature_truth(model: ClipModel, sae, atlas=None, count: int = 300, seed: int = 4_100_000,
                  aggregate: str = "mean") -> dict:
    """For each colour and shape: the feature whose activation on an object's patches (their mean, or with
    `aggregate` "max" their largest) best tells that value apart (AUROC, chosen on `count` scenes), its AUROC on
    `count` other scenes, and (with `atlas`) whether its name from the toy bank names that value. Scenes from
    `seed` on: never trained on (the SAE's scenes start at 3,000,000)."""
    chosen_scenes = [toy_scene(seed + i) for i in range(count)]
    test_scenes = [toy_scene(seed + count + i) for i in range(count)]
    select, select_objects = object_features(model, sae, chosen_scenes, aggregate)
    test, test_objects = object_features(model, sae, test_scenes, aggregate)
    results = {}
    for kind, values in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        for value in values:
            labels = np.array([getattr(o, kind) == value for o in select_objects])
            firing = np.nonzero(select.max(axis=0) > 0)[0]
            scores = [(_auroc(select[:, f], labels), int(f)) for f in firing]
            best_auroc, feature = max(scores) if scores else (float("nan"), -1)
            held = _auroc(test[:, feature], np.array([getattr(o, kind) == value for o in test_objects])) \
                if feature >= 0 else float("nan")
            name = atlas.labels[feature][0] if atlas is not None and atlas.labels and feature >= 0 else ""
            results[value] = {"kind": kind, "feature": feature, "auroc": held, "selection auroc": best_auroc,
                              "name": name, "named": value in name.split()}
    return results


def readout_truth(model: ClipModel, dictionary, atlas=None, count: int = 300, seed: int = 4_500_000) -> dict:
    """For each colour and shape: the feature of a dictionary of the readout (one vector an image) whose activation
    best tells single-object scenes of that value apart (AUROC, chosen on `count` scenes), its AUROC on `count`
    other scenes, and (with `atlas`) whether its name names that value. Scenes from `seed` on: never trained on."""
    from ..dictionaries import image_features

    def activations(scenes) -> np.ndarray:
        return np.concatenate([image_features(model, dictionary, [scene.image for scene in scenes[start:start + 64]]
                                              )[2][:, 0].numpy() for start in range(0, len(scenes), 64)])

    chosen = [toy_scene(seed + i, count=1) for i in range(count)]
    others = [toy_scene(seed + count + i, count=1) for i in range(count)]
    select, test = activations(chosen), activations(others)
    results = {}
    for kind, values in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        for value in values:
            labels = np.array([getattr(scene.objects[0], kind) == value for scene in chosen])
            firing = np.nonzero(select.max(axis=0) > 0)[0]
            best_auroc, feature = max(((_auroc(select[:, f], labels), int(f)) for f in firing),
                                      default=(float("nan"), -1))
            held = _auroc(test[:, feature], np.array([getattr(scene.objects[0], kind) == value for scene in
                                                       others])) if feature >= 0 else float("nan")
            name = atlas.labels[feature][0] if atlas is not None and atlas.labels and feature >= 0 else ""
            results[value] = {"kind": kind, "feature": feature, "auroc": held, "selection auroc": best_auroc,
                              "name": name, "named": value in name.split()}
    return results


def feature_removal(model: ClipModel, sae, atlas, truth: dict, count: int = 100, seed: int = 4_300_000,
                    draws: int = 3) -> dict:
    """For each colour: the cosine score of 'something {colour}' on single-object scenes of that colour, and how
    much it drops when the colour's feature (`feature_truth`) is removed from every token where it fires, against
    removing a random feature of about the same frequency (the `draws` features nearest in frequency)."""
    import random

    from ..dictionaries import intervened_scores

    rng = random.Random(seed)
    results = {}
    order = atlas.frequency.argsort()
    rank = {int(f): i for i, f in enumerate(order.tolist())}
    for colour in COLOURS:
        feature = truth[colour]["feature"]
        if feature < 0:
            continue
        scenes, index = [], seed
        while len(scenes) < count // len(COLOURS) + 1:
            scene = toy_scene(index, count=1)
            if scene.objects[0].colour == colour:
                scenes.append(scene)
            index += 1
        text = model.encode_texts([f"something {colour}"])
        near = [int(order[i]) for i in range(max(0, rank[feature] - 10), min(len(order), rank[feature] + 11))
                if int(order[i]) != feature]
        others = rng.sample(near, min(draws, len(near)))
        base, changed = intervened_scores(model, sae, [s.image for s in scenes], text, [feature, *others])
        drops = (base[None, :, 0] - changed[:, :, 0]).mean(dim=1)  # [1 + draws]
        results[colour] = {"feature": feature, "score": float(base[:, 0].mean()), "drop": float(drops[0]),
                           "random drop": float(drops[1:].mean()) if len(others) else float("nan")}
    return results
