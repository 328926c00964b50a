"""The project configuration and where the Kaggle username comes from.

HOME is a fresh temporary folder in every test (tests/conftest.py), so
`~/.kaggle/kaggle.json` here is always a file the test wrote itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernelgen.errors import ConfigError
from kernelgen.spec.config import Config, kaggle_config_dir, load_config, resolve_username

FULL = """
username = "me"
competition = "severstal-steel-defect-detection"
profile = "quick"
data = "data/severstal"

[profiles.quick.stage4]
epochs = 3

[profiles.smoke.stage1]
batch = 2

[stages.stage4]
epochs = 30
"""


def test_no_config_gives_defaults(tmp_path: Path) -> None:
    config = load_config(start=tmp_path)
    assert config == Config()
    assert config.profile == "full"
    assert config.label == "config"


def test_kernelgen_toml(tmp_path: Path) -> None:
    (tmp_path / "kernelgen.toml").write_text(FULL)
    config = load_config(start=tmp_path)
    assert config.path == tmp_path / "kernelgen.toml"
    assert config.label == "kernelgen.toml"
    assert config.username == "me"
    assert config.competition == "severstal-steel-defect-detection"
    assert config.profile == "quick"
    assert config.data == tmp_path / "data" / "severstal"
    assert config.profiles == {"quick": {4: {"epochs": 3}}, "smoke": {1: {"batch": 2}}}
    assert config.stages == {4: {"epochs": 30}}


def test_kernelgen_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "kernelgen.toml").write_text('username = "from-kernelgen"\n')
    (tmp_path / "pyproject.toml").write_text('[tool.kernelgen]\nusername = "from-pyproject"\n')
    assert load_config(start=tmp_path).username == "from-kernelgen"


def test_pyproject_section(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n'
        '[tool.kernelgen]\nusername = "me"\nprofile = "smoke"\ndata = "d"\n\n'
        "[tool.kernelgen.profiles.quick.stage4]\nepochs = 3\n\n"
        "[tool.kernelgen.stages.stage4]\nepochs = 30\n"
    )
    config = load_config(start=tmp_path)
    assert config.path == tmp_path / "pyproject.toml"
    assert config.label == "pyproject.toml"
    assert (config.username, config.profile, config.data) == ("me", "smoke", tmp_path / "d")
    assert config.profiles == {"quick": {4: {"epochs": 3}}}
    assert config.stages == {4: {"epochs": 30}}


def test_pyproject_without_section_is_no_config(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_config(start=tmp_path) == Config()


def test_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('username = "explicit"\n')
    (tmp_path / "kernelgen.toml").write_text('username = "found"\n')
    assert load_config(path, start=tmp_path).username == "explicit"
    pyproject = tmp_path / "sub" / "pyproject.toml"
    pyproject.parent.mkdir()
    pyproject.write_text('[tool.kernelgen]\nusername = "py"\n')
    assert load_config(pyproject).username == "py"


def test_explicit_path_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('usrname = "me"\n', "unknown key 'usrname'"),
        ("username = 3\n", "'username' must be a non-empty string"),
        ('username = ""\n', "'username' must be a non-empty string"),
        ("profile = true\n", "'profile' must be a non-empty string"),
        ("data = []\n", "'data' must be a non-empty string"),
        ('profile = "fast"\n', "profile 'fast' is not defined"),
        ("profiles = 3\n", "[profiles] must be a table"),
        ("[profiles]\nquick = 3\n", "[profiles.quick] must be a table"),
        (
            "[profiles.quick.four]\nepochs = 3\n",
            "[profiles.quick.four] must be a table named stageN",
        ),
        ("[stages]\nstage4 = 3\n", "[stages.stage4] must be a table named stageN"),
        ("[stages.s4]\nepochs = 3\n", "[stages.s4]"),
        ("username = = 1\n", "invalid TOML"),
    ],
)
def test_invalid_config_refused(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "kernelgen.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(start=tmp_path)
    assert needle in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "kernelgen.toml"))


def test_unknown_key_lists_known_ones(tmp_path: Path) -> None:
    (tmp_path / "kernelgen.toml").write_text('usrname = "me"\n')
    with pytest.raises(
        ConfigError, match="known: competition, data, pipeline, profile, profiles, stages, username"
    ):
        load_config(start=tmp_path)


def test_own_profile_may_be_the_default(tmp_path: Path) -> None:
    (tmp_path / "kernelgen.toml").write_text(
        'profile = "mine"\n[profiles.mine.stage5]\nthreshold = 0.9\n'
    )
    config = load_config(start=tmp_path)
    assert config.profile == "mine"
    assert config.profiles == {"mine": {5: {"threshold": 0.9}}}


# --- the username ------------------------------------------------------------------------


def write_token(folder: Path, body: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def test_username_order(monkeypatch: pytest.MonkeyPatch) -> None:
    write_token(Path.home() / ".kaggle", {"username": "from-token", "key": "x"})
    config = Config(username="from-config")
    monkeypatch.setenv("KAGGLE_USERNAME", "from-env")
    assert resolve_username("from-cli", config) == "from-cli"
    assert resolve_username(None, config) == "from-config"
    assert resolve_username(None, Config()) == "from-env"
    monkeypatch.delenv("KAGGLE_USERNAME")
    assert resolve_username(None, Config()) == "from-token"
    assert resolve_username("", Config()) == "from-token"


def test_kaggle_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kaggle_config_dir() == Path.home() / ".kaggle"
    write_token(Path.home() / ".kaggle", {"username": "home-user"})
    write_token(tmp_path / "cfg", {"username": "dir-user"})
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert kaggle_config_dir() == tmp_path / "cfg"
    assert resolve_username(None, Config()) == "dir-user"


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"'])
def test_unreadable_token_file(body: str) -> None:
    path = write_token(Path.home() / ".kaggle", body)
    with pytest.raises(ConfigError) as info:
        resolve_username(None, Config())
    assert str(path) in str(info.value)


@pytest.mark.parametrize("body", [{"key": "x"}, {"username": ""}, {"username": 5}])
def test_token_without_username_gives_the_missing_message(body: object) -> None:
    write_token(Path.home() / ".kaggle", body)
    with pytest.raises(ConfigError, match="no Kaggle username"):
        resolve_username(None, Config())


def test_missing_username_says_how_to_give_it() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_username(None, Config())
    message = str(info.value)
    assert "\n" not in message
    for hint in (
        "--user",
        "kernelgen.toml",
        "KAGGLE_USERNAME",
        str(Path.home() / ".kaggle" / "kaggle.json"),
    ):
        assert hint in message
