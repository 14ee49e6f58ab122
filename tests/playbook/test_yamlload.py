from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from runner.playbook.yamlload import MAX_BYTES, YamlError, load_yaml, to_json


def _err(text: str) -> YamlError:
    with pytest.raises(YamlError) as info:
        load_yaml(text, "f.yaml")
    return info.value


def test_yaml11_booleans_stay_strings() -> None:
    value = load_yaml("a: ON\nb: NO\nc: Y\nd: yes\ne: off\nf: n\ng: true\nh: False\n").value
    assert value == {"a": "ON", "b": "NO", "c": "Y", "d": "yes", "e": "off", "f": "n", "g": True, "h": False}


def test_times_and_sexagesimal_stay_strings() -> None:
    value = load_yaml("a: 09:15\nb: 9:15\nc: 1:30:00\nd: 15:30:45\n").value
    assert value == {"a": "09:15", "b": "9:15", "c": "1:30:00", "d": "15:30:45"}


def test_numbers() -> None:
    value = load_yaml("a: 1.10\nb: 75\nc: -3\nd: 0.1\ne: 1e3\nf: 0123\ng: 0x1F\nh: .inf\ni: 1_000\n").value
    assert value["a"] == Decimal("1.10") and str(value["a"]) == "1.10"  # from the text, not a float
    assert type(value["b"]) is int and value["b"] == 75 and value["c"] == -3
    assert value["d"] == Decimal("0.1") and value["e"] == Decimal("1e3")
    assert value["f"] == "0123" and value["g"] == "0x1F" and value["h"] == ".inf" and value["i"] == "1_000"
    assert not any(isinstance(v, float) for v in value.values())


def test_dates_and_nulls() -> None:
    value = load_yaml("a: 2026-12-29\nb: '2026-12-29'\nc: ~\nd:\ne: 2026-12-29 09:15:00\n").value
    assert value == {
        "a": dt.date(2026, 12, 29),
        "b": "2026-12-29",
        "c": None,
        "d": None,
        "e": "2026-12-29 09:15:00",
    }
    assert to_json(value)["a"] == "2026-12-29"
    assert _err("a: 2026-02-30\n").errors == [(1, 4, "'2026-02-30' is not a valid date (YYYY-MM-DD)")]


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['true']\n",
        "a: !!python/name:os.system\n",
        "a: !custom 1\n",
        "a: !!binary aGk=\n",
        "a: !!set {x, y}\n",
    ],
)
def test_non_standard_tags_rejected(text: str) -> None:
    assert "not allowed" in _err(text).message


def test_complex_keys_rejected() -> None:
    assert "plain strings" in _err("? !!python/tuple [1, 2]\n: x\n").message
    assert "plain strings" in _err("? [a, b]\n: x\n").message


def test_standard_explicit_tags_allowed() -> None:
    assert load_yaml("a: !!str 09:15\nb: !!int '7'\nc: !!float '2.5'\n").value == {
        "a": "09:15",
        "b": 7,
        "c": Decimal("2.5"),
    }


def test_duplicate_keys_name_both_positions() -> None:
    err = _err("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    assert err.errors == [
        (4, 3, "duplicate key 'c' (first defined at 3:3)"),
        (5, 1, "duplicate key 'a' (first defined at 1:1)"),
    ]
    assert (err.line, err.col) == (4, 3) and str(err).startswith("f.yaml:4:3: ")


def test_billion_laughs_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    err = _err("\n".join(lines))
    assert "alias" in err.message  # refused after a bounded number of nodes, not expanded to 9**9


def test_recursive_alias_and_deep_nesting_refused() -> None:
    assert "nesting" in _err("a: &x [*x]\n").message
    assert "nesting" in _err("[" * 200 + "]" * 200).message
    deep = "".join(" " * i + f"k{i}:\n" for i in range(80)) + " " * 80 + "v: 1\n"
    assert "nesting" in _err(deep).message


def test_size_bound() -> None:
    assert "larger than" in _err("a: " + "x" * MAX_BYTES).message


def test_merge_keys_and_marks() -> None:
    loaded = load_yaml("base: &b\n  side: BUY\n  qty: 5\nleg:\n  <<: *b\n  qty: 7\nlist:\n  - x\n  - y: 1\n")
    assert loaded.value["leg"] == {"qty": 7, "side": "BUY"}
    assert loaded.mark(("leg", "qty")) == (6, 8)
    assert loaded.key_mark(("leg", "qty")) == (6, 3)
    assert loaded.mark(("leg", "side")) == (2, 9)  # merged: points at the anchor's source
    assert loaded.mark(("list", 1, "y")) == (9, 8)
    assert loaded.mark(("list", 5, "nope")) == (8, 3)  # nearest ancestor
    assert loaded.mark(()) == (1, 1)


def test_syntax_errors_have_positions_and_hints() -> None:
    err = _err("a:\n\tb: 1\n")
    assert (err.line, err.col) == (2, 1) and "tabs" in err.message
    err = _err("a: {b: ${x}}\n")
    assert '"${var}"' in err.message
    assert "another document" in _err("a: 1\n---\nb: 2\n").message


def test_empty_document() -> None:
    assert load_yaml("# only a comment\n").value is None
