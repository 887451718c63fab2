"""Head labels: voting, the describe-heads pipeline (resumable), and the JSON it writes."""
import torch

from interpret import textspan as textspan_module
from interpret.banks import TextBank
from interpret.textspan import HeadAtlas, TextSpanResult, describe_heads, label_head


def test_label_votes_with_explained_variance():
    result = TextSpanResult(indices=torch.tensor([2, 0, 1]), explained=torch.tensor([0.5, 0.6, 0.8]),
                            mean=torch.zeros(4), directions=torch.zeros(3, 4))
    label = label_head(3, 1, result, ["red", "round", "blue"], ["colour", "shape", "colour"])
    assert label.descriptions == ["blue", "red", "round"] and label.tags == ["colour", "colour", "shape"]
    assert [round(g, 6) for g in label.gains] == [0.5, 0.1, 0.2]
    assert label.property == "colour" and abs(label.confidence - 0.75) < 1e-6 and abs(label.explained - 0.8) < 1e-6


def test_untagged_descriptions_do_not_vote():
    result = TextSpanResult(indices=torch.tensor([0, 1]), explained=torch.tensor([0.7, 0.8]),
                            mean=torch.zeros(2), directions=torch.zeros(2, 2))
    label = label_head(0, 0, result, ["a", "b"], ["untagged", "shape"])
    assert label.property == "shape" and label.confidence == 1.0


def bank_of(model_size: int) -> TextBank:
    texts = tuple(f"description number {i}" for i in range(model_size))
    tags = tuple(("colour", "shape", "untagged")[i % 3] for i in range(model_size))
    return TextBank("test", texts, tags)


def test_describe_heads_writes_and_resumes(tiny_model, tmp_path, monkeypatch):
    images = torch.randn(24, 3, *tiny_model.geometry.image_size)
    out = tmp_path / "labels.json"
    first = describe_heads(tiny_model, images, bank_of(30), k=4, rank=8, layers=[0], out_path=out, progress=False)
    assert set(first.labels) == {(0, h) for h in range(3)}

    calls = []
    original = textspan_module.textspan
    monkeypatch.setattr(textspan_module, "textspan", lambda *a, **k: calls.append(1) or original(*a, **k))
    full = describe_heads(tiny_model, images, bank_of(30), k=4, rank=8, out_path=out, progress=False)
    assert len(calls) == 6  # layers 1 and 2 only: layer 0 came from the file
    assert set(full.labels) == {(l, h) for l in range(3) for h in range(3)}
    loaded = HeadAtlas.load(out)
    assert loaded.labels == full.labels and loaded.signature() == full.signature()
    label = loaded.get(2, 1)
    assert len(label.descriptions) == 4 and label.property in {"colour", "shape"}
    assert loaded.property_grid(3, 3)[2][1] == label.property


def test_changed_settings_start_again(tiny_model, tmp_path):
    images = torch.randn(12, 3, *tiny_model.geometry.image_size)
    out = tmp_path / "labels.json"
    describe_heads(tiny_model, images, bank_of(20), k=3, rank=8, layers=[0], out_path=out, progress=False)
    again = describe_heads(tiny_model, images, bank_of(20), k=5, rank=8, layers=[1], out_path=out, progress=False)
    assert set(again.labels) == {(1, h) for h in range(3)} and again.k == 5
