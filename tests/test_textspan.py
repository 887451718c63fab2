"""TextSpan against a plain reference written from the definition, on random data."""
import numpy as np
import pytest
import torch

from interpret.textspan import textspan


def reference_textspan(outputs: np.ndarray, texts: np.ndarray, k: int, rank: int):
    """Obvious, slow TextSpan: explicit data deflation, one text at a time."""
    _, _, right = np.linalg.svd(outputs, full_matrices=False)
    basis = right[:rank]
    texts = texts @ basis.T @ basis
    data = outputs - outputs.mean(axis=0)
    total = (data ** 2).sum()
    chosen, explained = [], []
    for _ in range(k):
        spread = [np.std(data @ text) if j not in chosen else -1 for j, text in enumerate(texts)]
        best = int(np.argmax(spread))
        text = texts[best].copy()
        data = data - np.outer(data @ text / (text @ text), text)
        texts = texts - np.outer(texts @ text / (text @ text), text)
        chosen.append(best)
        explained.append(1 - (data ** 2).sum() / total)
    return chosen, explained


@pytest.mark.parametrize("seed, n, m, d, k, rank", [(0, 300, 60, 16, 6, 10), (1, 500, 120, 32, 12, 32),
                                                     (2, 80, 40, 24, 5, 5)])
def test_matches_the_reference(seed, n, m, d, k, rank):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * rng.uniform(0.1, 3.0, size=d)  # anisotropic outputs
    outputs = rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)
    texts = rng.normal(size=(m, d))
    indices, explained = reference_textspan(outputs, texts, k, rank)
    result = textspan(torch.tensor(outputs, dtype=torch.float32), torch.tensor(texts, dtype=torch.float32),
                      k=k, rank=rank)
    assert result.indices.tolist() == indices
    assert np.allclose(result.explained.numpy(), explained, atol=1e-4)
    assert np.all(np.diff(result.explained.numpy()) >= -1e-6) and result.explained[-1] <= 1 + 1e-6


def test_recovers_planted_directions():
    rng = np.random.default_rng(3)
    d = 20
    planted = np.eye(d)[:3] * np.array([[5.0], [3.0], [1.5]])  # three axes of decreasing spread
    outputs = rng.normal(size=(2000, 3)) @ planted + 0.05 * rng.normal(size=(2000, d))
    texts = np.concatenate([np.eye(d)[:3], rng.normal(size=(30, d)) * 0.2])
    result = textspan(torch.tensor(outputs), torch.tensor(texts), k=3, rank=d)
    assert result.indices.tolist() == [0, 1, 2]
    assert result.explained[-1] > 0.99
    reconstruction = result.reconstruct(torch.tensor(outputs))
    assert torch.allclose(reconstruction, torch.tensor(outputs, dtype=torch.float32), atol=0.3)


def test_stops_when_the_span_is_used_up():
    rng = np.random.default_rng(4)
    result = textspan(torch.tensor(rng.normal(size=(100, 12))), torch.tensor(rng.normal(size=(30, 12))), k=10, rank=4)
    assert len(result.indices) == 4 and result.directions.shape == (4, 12)


def test_bad_shapes():
    with pytest.raises(ValueError, match="Expected outputs"):
        textspan(torch.zeros(10, 4), torch.zeros(5, 3))


def test_textspan_is_callable_from_the_package():
    import interpret

    outputs, texts = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), torch.randn(30, 8)
    direct = textspan(outputs, texts, k=3, rank=8)
    called = interpret.textspan(outputs, texts, k=3, rank=8)
    assert torch.equal(torch.as_tensor(called.indices), torch.as_tensor(direct.indices))
    assert torch.allclose(torch.as_tensor(called.explained), torch.as_tensor(direct.explained))
    from interpret.textspan import describe_heads  # noqa: F401  (still a module)
