"""Stage parameters: fields read from source, `--set` parsing and routing, types, layering.

Layers, lowest first: dataclass default, built-in profile (kernel-metadata), the
config file's profile, the config file's per-stage overrides, `--set`, and values a
chain takes from another stage; each resolved value carries the label of its layer.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kernelgen.errors import ConfigError, ParameterError, RenderError
from kernelgen.spec.config import Config
from kernelgen.spec.params import (
    ListOf,
    Override,
    ParamField,
    ParamValue,
    assign_overrides,
    check_values,
    coerce_value,
    parse_overrides,
    parse_text,
    read_param_fields,
    resolve_params,
)
from kernelgen.spec.pipeline import StageSpec
from kernelgen.spec.project import profile_layers


def module(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "stage9_x.py"
    path.write_text(
        "from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass Params:\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return path


# --- fields read by AST -------------------------------------------------------------------


def test_fields_types_and_defaults(tmp_path: Path) -> None:
    path = module(
        tmp_path,
        '''
        """Docstrings and methods are not fields."""

        epochs: int = 45
        lr: float = 5e-4
        ratio: float = 1
        flip: bool = True
        rule: str = "consistency"
        offset: int = -3

        def twice(self) -> int:
            return 2 * self.epochs
        ''',
    )
    fields = read_param_fields(path, 9)
    assert fields == [
        ParamField("epochs", int, 45),
        ParamField("lr", float, 5e-4),
        ParamField("ratio", float, 1.0),
        ParamField("flip", bool, True),
        ParamField("rule", str, "consistency"),
        ParamField("offset", int, -3),
    ]
    assert isinstance(fields[2].default, float)


def test_fields_are_read_without_importing(tmp_path: Path) -> None:
    path = tmp_path / "stage9_x.py"
    path.write_text("import module_that_does_not_exist\n\nclass Params:\n    epochs: int = 3\n")
    assert read_param_fields(path, 9) == [ParamField("epochs", int, 3)]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("epochs: int = 40 + 5\n", "must be a literal"),
        ("epochs: int = EPOCHS\n", "must be a literal"),
        ("sizes: list = [1, 2]\n", "has type list"),
        ("size: tuple[int, int] = (1, 2)\n", "has type tuple[int, int]"),
        ("sizes: tuple[list, ...] = ()\n", "has type tuple[list, ...]"),
        ("maybe: int | None = None\n", "has type int | None"),
        ("epochs: int\n", "needs a default"),
    ],
)
def test_fields_refused(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(RenderError, match="stage 9") as info:
        read_param_fields(module(tmp_path, body), 9)
    assert needle in str(info.value)


def test_default_of_the_wrong_type_refused(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="epochs must be int"):
        read_param_fields(module(tmp_path, "epochs: int = 4.5\n"), 9)
    with pytest.raises(ParameterError, match="flip must be bool"):
        read_param_fields(module(tmp_path, "flip: bool = 1\n"), 9)


def test_missing_module_named(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"stage 9: stage module .*nope\.py not found"):
        read_param_fields(tmp_path / "nope.py", 9)


def test_no_params_class(tmp_path: Path) -> None:
    path = tmp_path / "stage9_x.py"
    path.write_text("def run(params, layout):\n    pass\n")
    with pytest.raises(RenderError, match="no top-level 'class Params'"):
        read_param_fields(path, 9)


# --- --set parsing and routing ------------------------------------------------------------


def test_parse_overrides() -> None:
    assert parse_overrides(["epochs=3", "stage4.lr=0.1", "stage12.rule=a=b", "name="]) == [
        Override(None, "epochs", "3"),
        Override(4, "lr", "0.1"),
        Override(12, "rule", "a=b"),
        Override(None, "name", ""),
    ]


@pytest.mark.parametrize(
    "item",
    ["epochs", "=3", " =3", "stage.epochs=3", "stagex.epochs=3", "stage4.=3", "four.epochs=3"],
)
def test_parse_overrides_malformed(item: str) -> None:
    with pytest.raises(ParameterError, match="--set"):
        parse_overrides([item])


def test_routing() -> None:
    routed = assign_overrides(parse_overrides(["epochs=3"]), [4], [1, 2, 3, 4, 5])
    assert routed == {4: {"epochs": "3"}}
    routed = assign_overrides(
        parse_overrides(["stage4.epochs=3", "stage5.threshold=0.5"]), [4, 5], [1, 2, 3, 4, 5]
    )
    assert routed == {4: {"epochs": "3"}, 5: {"threshold": "0.5"}}


def test_unprefixed_name_with_several_stages_refused() -> None:
    with pytest.raises(ParameterError, match=r"stageN\.epochs"):
        assign_overrides(parse_overrides(["epochs=3"]), [4, 5], [1, 2, 3, 4, 5])


def test_prefixed_unknown_stage_refused() -> None:
    with pytest.raises(ParameterError, match="unknown stage 9"):
        assign_overrides(parse_overrides(["stage9.epochs=3"]), [4], [1, 2, 3, 4, 5])


# --- coercion ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("3", int, 3),
        ("-7", int, -7),
        ("0.25", float, 0.25),
        ("1e-3", float, 0.001),
        ("4", float, 4.0),
        ("true", bool, True),
        ("Yes", bool, True),
        ("1", bool, True),
        ("off", bool, False),
        ("0", bool, False),
        ("hello world", str, "hello world"),
        ("", str, ""),
    ],
)
def test_parse_text(text: str, kind: type, value: object) -> None:
    parsed = parse_text(text, kind, name="p", stage=4)
    assert parsed == value
    assert type(parsed) is kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("3.5", int),
        ("three", int),
        ("", int),
        ("nan", float),
        ("inf", float),
        ("-inf", float),
        ("x", float),
        ("maybe", bool),
        ("2", bool),
    ],
)
def test_parse_text_refused(text: str, kind: type) -> None:
    with pytest.raises(ParameterError, match=f"stage 4: p must be {kind.__name__}"):
        parse_text(text, kind, name="p", stage=4)


def test_coerce_value() -> None:
    assert coerce_value(3, float, name="p", stage=1) == 3.0
    assert isinstance(coerce_value(3, float, name="p", stage=1), float)
    assert coerce_value(False, bool, name="p", stage=1) is False
    for value, kind in [(True, int), (True, float), (1, bool), ("3", int), (3.0, int), (3, str)]:
        with pytest.raises(ParameterError):
            coerce_value(value, kind, name="p", stage=1)
    with pytest.raises(ParameterError, match="finite"):
        coerce_value(float("nan"), float, name="p", stage=1)
    with pytest.raises(ParameterError, match="finite"):
        coerce_value(float("inf"), float, name="p", stage=1)


# --- list parameters ----------------------------------------------------------------------


def test_list_fields_are_read_with_their_item_type(tmp_path: Path) -> None:
    path = module(
        tmp_path,
        """
        thresholds: tuple[float, ...] = (0.5, 1)
        sizes: tuple[int, ...] = ()
        names: tuple[str, ...] = ("a",)
        """,
    )
    assert read_param_fields(path, 9) == [
        ParamField("thresholds", ListOf(float), (0.5, 1.0)),
        ParamField("sizes", ListOf(int), ()),
        ParamField("names", ListOf(str), ("a",)),
    ]
    with pytest.raises(ParameterError, match=r"sizes\[1\] must be int"):
        read_param_fields(module(tmp_path, "sizes: tuple[int, ...] = (1, 2.5)\n"), 9)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("[0.5,0.6, 0.55,0.5]", ListOf(float), (0.5, 0.6, 0.55, 0.5)),
        ("[1, 2]", ListOf(float), (1.0, 2.0)),
        ("[]", ListOf(int), ()),
        (" [3, 4,] ", ListOf(int), (3, 4)),
        ("[true, off]", ListOf(bool), (True, False)),
        ('["a", "b c"]', ListOf(str), ("a", "b c")),
    ],
)
def test_parse_list_text(text: str, kind: ListOf, value: tuple) -> None:
    parsed = parse_text(text, kind, name="p", stage=4)
    assert parsed == value
    assert type(parsed) is tuple and all(type(item) is kind.item for item in parsed)


def test_a_comma_string_is_refused_in_one_line_showing_the_list_form() -> None:
    with pytest.raises(ParameterError) as caught:
        parse_text("0.55,0.7,0.53,0.5", ListOf(float), name="pixel_thresholds", stage=4)
    assert str(caught.value) == (
        "stage 4: pixel_thresholds takes a list of float in brackets: "
        "pixel_thresholds=[0.55, 0.7, 0.53, 0.5]; got '0.55,0.7,0.53,0.5'"
    )
    with pytest.raises(ParameterError) as caught:
        coerce_value("2,2,1,1.5", ListOf(float), name="pos_weight", stage=4)
    assert str(caught.value) == (
        "stage 4: pos_weight must be a list of float, written [2, 2, 1, 1.5], got '2,2,1,1.5'"
    )


@pytest.mark.parametrize("text", ["[0.5,,0.6]", "[x]", "(1, 2)", "[1", "[nan]", '["a"'])
def test_bad_list_text_refused(text: str) -> None:
    with pytest.raises(ParameterError, match="stage 4: p"):
        parse_text(text, ListOf(float) if '"' not in text else ListOf(str), name="p", stage=4)


def test_list_values_from_toml_and_json_become_tuples() -> None:
    assert coerce_value([1, 2.5], ListOf(float), name="p", stage=1) == (1.0, 2.5)
    assert coerce_value((), ListOf(str), name="p", stage=1) == ()
    for bad in ([1, "2"], [[1]], 3, {"a": 1}):
        with pytest.raises(ParameterError):
            coerce_value(bad, ListOf(int), name="p", stage=1)


def test_layers_set_and_chained_values_resolve_a_list_parameter() -> None:
    fields = [ParamField("t", ListOf(float), ())]
    resolved = resolve_params(fields, stage=4, layers=[("profile best", {"t": [0.5, 1]})])
    assert resolved == [ParamValue("t", (0.5, 1.0), "profile best")]
    resolved = resolve_params(fields, stage=4, texts={"t": "[0.25]"})
    assert resolved == [ParamValue("t", (0.25,), "--set")]
    chained = [ParamValue("t", [0.1, 0.2], "from stage 3")]
    assert resolve_params(fields, stage=4, extra=chained) == [ParamValue("t", (0.1, 0.2), "from stage 3")]


# --- resolution and layering -------------------------------------------------------------

FIELDS = [
    ParamField("a", int, 1),
    ParamField("b", int, 1),
    ParamField("c", int, 1),
    ParamField("d", int, 1),
    ParamField("e", int, 1),
    ParamField("f", int, 1),
]


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_params(FIELDS[:2], stage=4, texts={"epochz": "3"})
    message = str(info.value)
    assert "stage 4: unknown parameter 'epochz'" in message
    assert "(valid: a, b)" in message
    assert info.value.valid == ("a", "b")
    with pytest.raises(ParameterError, match=r"valid: a, b"):
        resolve_params(FIELDS[:2], stage=4, layers=[("profile smoke", {"zz": 1})])
    with pytest.raises(ParameterError, match=r"valid: a, b"):
        resolve_params(FIELDS[:2], stage=4, extra=[ParamValue("zz", 1, "from stage 3")])


def test_wrong_type_in_a_layer_refused() -> None:
    with pytest.raises(ParameterError, match="a must be int"):
        resolve_params(FIELDS[:1], stage=4, layers=[("kernelgen.toml", {"a": "3"})])
    with pytest.raises(ParameterError, match="a must be int"):
        resolve_params(FIELDS[:1], stage=4, texts={"a": "3.5"})


def test_layering_order_and_labels(tmp_path: Path) -> None:
    spec = StageSpec(
        number=4,
        module="stages.stage4_x",
        title="Stage four",
        source=tmp_path / "stage4.toml",
        profiles={"smoke": {"b": 2, "c": 2, "d": 2, "e": 2, "f": 2}},
    )
    config = Config(
        path=tmp_path / "kernelgen.toml",
        profiles={"smoke": {4: {"c": 3, "d": 3, "e": 3, "f": 3}}, "other": {5: {"a": 9}}},
        stages={4: {"d": 4, "e": 4, "f": 4}, 5: {"a": 9}},
    )
    layers = profile_layers(spec, config, "smoke")
    resolved = resolve_params(
        FIELDS,
        stage=4,
        layers=layers,
        texts={"e": "5", "f": "5"},
        extra=[ParamValue("b", 6, "from stage 3, version 2")],
    )
    assert [(p.name, p.value, p.source) for p in resolved] == [
        ("a", 1, "default"),
        ("b", 6, "from stage 3, version 2"),
        ("c", 3, "profile smoke in kernelgen.toml"),
        ("d", 4, "kernelgen.toml"),
        ("e", 5, "--set"),
        ("f", 5, "--set"),
    ]


def test_chain_value_beats_config_but_not_an_explicit_set() -> None:
    """A value from another stage outranks every file layer; an explicit --set outranks it."""
    fields = [ParamField("threshold", float, 0.947)]
    chained = [ParamValue("threshold", 0.919, "from stage 3")]
    resolved = resolve_params(
        fields, stage=5, layers=[("kernelgen.toml", {"threshold": 0.5})], extra=chained
    )
    assert resolved == [ParamValue("threshold", 0.919, "from stage 3")]
    resolved = resolve_params(fields, stage=5, texts={"threshold": "0.3"}, extra=chained)
    assert resolved == [ParamValue("threshold", 0.3, "--set")]


def test_profile_layers_skip_empty_and_refuse_unknown(tmp_path: Path) -> None:
    spec = StageSpec(
        number=4,
        module="stages.x",
        title="Stage four",
        source=tmp_path / "s.toml",
        profiles={"smoke": {}},
    )
    assert profile_layers(spec, Config(), "full") == []
    assert profile_layers(spec, Config(), "smoke") == []
    with pytest.raises(ConfigError, match="unknown profile 'fast'; known: best, full, smoke"):
        profile_layers(spec, Config(), "fast")
    config = Config(profiles={"fast": {4: {"a": 2}}})
    assert profile_layers(spec, config, "fast") == [("profile fast in config", {"a": 2})]


# --- values a stage's Params refuses fail at render ------------------------------------------

CHECKED_STAGE = '''
# %%
import math
from dataclasses import dataclass

import numpy as np  # never runs at render: only the standard library does

LIMIT = 10
RULES = ("a", "b")
COMPUTED = np.arange(3)


@dataclass(frozen=True)
class Params:
    size: int = 4
    rule: str = "a"
    rate: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.size <= LIMIT:
            raise ValueError(f"size must be in 1..{LIMIT}, got {self.size}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not math.isfinite(self.rate) or self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")


def run(params, layout):
    pass
'''


def checked_stage(tmp_path: Path, text: str = CHECKED_STAGE) -> Path:
    path = tmp_path / "stage.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"size": 0}, "stage 3: size must be in 1..10, got 0"),
        ({"size": 11}, "stage 3: size must be in 1..10, got 11"),
        ({"rule": "bogus"}, "stage 3: rule must be one of a, b, got 'bogus'"),
        ({"rate": -1.0}, "stage 3: rate must be positive, got -1.0"),
    ],
)
def test_check_values_refuses_what_params_refuses(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        check_values(checked_stage(tmp_path), values, 3)
    assert str(info.value) == message


def test_check_values_accepts_good_values_without_importing_the_module(tmp_path: Path) -> None:
    check_values(checked_stage(tmp_path), {"size": 10, "rule": "b", "rate": 2.0}, 3)


def test_params_leaning_on_module_code_is_named(tmp_path: Path) -> None:
    text = CHECKED_STAGE.replace("if not 0 < self.size <= LIMIT:", "if not 0 < self.size <= len(COMPUTED):")
    with pytest.raises(RenderError, match="Params may use only the standard library"):
        check_values(checked_stage(tmp_path, text), {"size": 2}, 3)
