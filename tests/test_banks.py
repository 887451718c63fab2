import pytest

from interpret.banks import PROPERTIES, UNTAGGED, general_bank, load_bank, toy_bank
from interpret.errors import InterpretError


def test_general_bank_is_large_tagged_and_unique():
    bank = general_bank()
    assert len(bank) >= 3000 and len(set(bank.texts)) == len(bank)
    required = {"colour", "shape", "texture", "location", "animal", "object", "person", "count", "text", "style",
                "light", "material"}
    assert required <= set(bank.tags) <= set(PROPERTIES)
    assert all(text and text == text.strip() and " a a" not in text for text in bank.texts)
    assert "an owl" in " ".join(bank.texts) and "a owl" not in bank.texts


def test_toy_bank_covers_the_toy_attributes():
    bank = toy_bank()
    assert set(bank.tags) == {"colour", "shape", "size", "position"}
    assert "something red" in bank.texts and "a circle" in bank.texts and "something on the left" in bank.texts


def test_user_bank_tagged_and_untagged(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my bank\ncolour\tsomething teal\na lighthouse\n\na lighthouse\nshape\t  a rhombus \n")
    bank = load_bank(path)
    assert bank.texts == ("something teal", "a lighthouse", "a rhombus")
    assert bank.tags == ("colour", UNTAGGED, "shape")


def test_unusable_banks(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InterpretError, match="holds no descriptions"):
        load_bank(empty)
    with pytest.raises(InterpretError, match="Could not read"):
        load_bank(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\xd8")
    with pytest.raises(InterpretError, match="Could not read"):
        load_bank(binary)
