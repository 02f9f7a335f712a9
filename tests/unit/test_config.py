from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from tests.helpers import MINIMAL_TOML as MINIMAL

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "release.toml"
    p.write_text(text)
    return p


def test_demo_config_loads_with_bundled_data() -> None:
    c = config.load(ROOT / "release.toml")
    assert c.model.name == "erp-intent"
    assert c.data.train_csv is not None and c.data.train_csv.is_file()
    assert c.build_dir == ROOT / "artifacts" / "build" / c.model.version
    assert c.quantize.modules == ("lstm", "linear", "embedding")


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    c = config.load(write(tmp_path, MINIMAL))
    assert c.train.epochs == 30 and c.validate.min_speedup == 4.0
    assert c.publish.local_root == tmp_path.resolve() / "artifacts" / "releases"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.model.name = "x"  # type: ignore[misc]


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('version = "1.0.0"', 'version = "one"')
        + """
[train]
epochs = -3
lr = "fast"
epoch = 4
[validate]
min_agreement = 1.5
[quantize]
modules = ["lstm", "conv"]
[surprise]
x = 1
"""
    )
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    msg = str(e.value)
    lines = e.value.problems
    assert len(lines) == 7, lines
    assert "release.toml: model.version: expected a version like \"1.2.0\", found str 'one'" in msg
    assert "train.epochs: expected a number between 1 and 10000, found int -3" in msg
    assert "train.lr: expected a number, found str 'fast'" in msg
    assert "train.epoch: unknown key (did you mean train.epochs?)" in msg
    assert "validate.min_agreement: expected a number between 0 and 1, found float 1.5" in msg
    assert "quantize.modules: expected a list of lstm, linear, embedding" in msg
    assert "surprise: unknown key" in msg


def test_missing_files_and_required_keys(tmp_path: Path) -> None:
    text = """
schema_version = 1
[model]
name = "m"
[data]
train_csv = "nope.csv"
eval_csv = "also-nope.csv"
"""
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    msg = str(e.value)
    assert "model.version: expected a string, found nothing (the key is required)" in msg
    assert (
        f"data.train_csv: expected an existing CSV file, found no file at {tmp_path.resolve() / 'nope.csv'}"
        in msg
    )
    assert "data.eval_csv: expected an existing CSV file" in msg


def test_malformed_toml_names_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, "schema_version = 1\n[model\nname = 1\n"))
    assert "not valid TOML" in str(e.value) and "line 2" in str(e.value)


def test_non_utf8_config(tmp_path: Path) -> None:
    p = tmp_path / "release.toml"
    p.write_bytes(b"schema_version = 1\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(p)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "release.toml")


def test_schema_version_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema_version: expected the integer 1, found int 2"):
        config.load(write(tmp_path, MINIMAL.replace("schema_version = 1", "schema_version = 2")))


def test_export_pkl_makes_train_csv_optional(tmp_path: Path) -> None:
    (tmp_path / "export.pkl").write_bytes(b"x")
    text = (
        MINIMAL.replace('train_csv = "bundled:train.csv"\n', "")
        + '[train]\nexport_pkl = "export.pkl"\n'
    )
    c = config.load(write(tmp_path, text))
    assert c.data.train_csv is None and c.train.export_pkl == tmp_path.resolve() / "export.pkl"
    with pytest.raises(ConfigError, match="data.train_csv: expected a CSV path"):
        config.load(write(tmp_path, MINIMAL.replace('train_csv = "bundled:train.csv"\n', "")))


def test_onnx_enabled_and_the_user_gates(tmp_path: Path) -> None:
    c = config.load(write(tmp_path, MINIMAL))
    assert c.onnx.enabled == "auto" and c.validate.min_accuracy is None
    assert c.validate.beat_majority is True and c.validate.max_baseline_deficit == 5.0
    for value, want in (("true", True), ("false", False), ('"auto"', "auto")):
        c = config.load(write(tmp_path, MINIMAL + f"\n[onnx]\nenabled = {value}\n"))
        assert c.onnx.enabled == want
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, MINIMAL + '\n[onnx]\nenabled = "yes"\n'))
    assert e.value.problems == [
        "release.toml: onnx.enabled: expected \"auto\", true or false, found str 'yes'"
    ]


def test_valid_pct_zero_and_word_dropout(tmp_path: Path) -> None:
    text = (ROOT / "tests" / "fixtures" / "tiny.toml").read_text()
    bad = text.replace("[train]\n", "[train]\nvalid_pct = 0.005\nword_dropout = 1.5\n", 1)
    (tmp_path / "release.toml").write_text(bad)
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path / "release.toml")
    msg = str(e.value)
    assert "train.valid_pct: expected 0 (train on every row) or between 0.01 and 0.5" in msg
    assert "train.word_dropout: expected a number between 0 and 0.9, found float 1.5" in msg
    good = text.replace("[train]\n", "[train]\nvalid_pct = 0\nword_dropout = 0.2\n", 1)
    (tmp_path / "release.toml").write_text(good)
    c = config.load(tmp_path / "release.toml")
    assert (c.train.valid_pct, c.train.word_dropout) == (0.0, 0.2)
    assert config.load(write(tmp_path, MINIMAL)).train.word_dropout is None


def test_subword_tokenizer_refused_with_word_weights_or_required_onnx(tmp_path: Path) -> None:
    # both would otherwise surface only after training
    text = MINIMAL + '[train]\ntokenizer = "subwords"\npretrained = true\n[onnx]\nenabled = true\n'
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    msg = str(e.value)
    assert "train.tokenizer" in msg and "word vocabulary" in msg, msg
    assert 'set onnx.enabled = "auto"' in msg, msg
    ok = config.load(write(tmp_path, MINIMAL + '[train]\ntokenizer = "subwords"\n'))
    assert ok.train.tokenizer == "subwords"
    with pytest.raises(ConfigError, match="one of words, subwords"):
        config.load(write(tmp_path, MINIMAL + '[train]\ntokenizer = "bpe"\n'))


PIN = 'export_pkl_blake3 = "' + "ab" * 32 + '"\nexport_pkl_size = 1000\n'


def remote(location: str, pin: str = PIN) -> str:
    return (
        MINIMAL.replace('train_csv = "bundled:train.csv"\n', "")
        + f"[train]\nexport_pkl = {location!r}\n{pin}"
    ).replace("'", '"')


@pytest.mark.parametrize(
    "location",
    [
        "https://github.com/acme/learners/releases/download/learner-1/export.pkl",
        "http://127.0.0.1:8080/export.pkl",
        "hf:acme/learner/export.pkl",
        "hf:acme/learner@refs%2Fpr%2F1/export.pkl",
        "github:acme/learners@learner-1/export.pkl",
        "s3://gpu-box/runs/7/export.pkl",
    ],
)
def test_export_pkl_may_be_a_remote_location(tmp_path: Path, location: str) -> None:
    c = config.load(write(tmp_path, remote(location)))
    assert c.train.export_pkl == location and c.train.export_pkl_size == 1000
    assert not (tmp_path / location).exists()  # a location, not a path checked for a file


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("ftp://host/export.pkl", "a path or a location starting with https://, http://, hf:"),
        ("hf:acme/learner/models/export.pkl", "(a file at the top of the repository; for one"),
        ("hf:acme/export.pkl", "hf:ORG/NAME[@REVISION]/FILE"),
        ("github:acme/learners/export.pkl", "github:OWNER/REPO@TAG/FILE (the release's tag is"),
        ("s3://Bucket_1/export.pkl", "s3://BUCKET/KEY"),
        ("s3://bucket", "s3://BUCKET/KEY"),
        ("https://host/", "the URL of a file"),
    ],
)
def test_a_remote_location_of_no_known_form_is_refused(
    tmp_path: Path, location: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, remote(location)))
    assert len(e.value.problems) == 1 and expected in e.value.problems[0], e.value.problems


def test_no_secret_of_a_location_is_echoed(tmp_path: Path) -> None:
    for location in ("https://me:hunter2@host/x.pkl?sig=hunter3", "ftp://me:hunter2@h/x?t=hunter3"):
        with pytest.raises(ConfigError) as e:
            config.load(write(tmp_path, remote(location)))
        assert "hunter" not in str(e.value), e.value.problems


def test_a_remote_export_pkl_needs_its_pin_and_a_pin_needs_export_pkl(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, remote("hf:acme/learner/export.pkl", pin="")))
    assert e.value.problems == [
        "release.toml: train.export_pkl_blake3: expected the learner's blake3 with a remote "
        "train.export_pkl (`b3sum export.pkl` where it was trained), or unset without "
        "train.export_pkl, found nothing",
        "release.toml: train.export_pkl_size: expected the learner's size in bytes with a remote "
        "train.export_pkl (`wc -c < export.pkl` where it was trained), or unset without "
        "train.export_pkl, found nothing",
    ]
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, MINIMAL + "[train]\n" + PIN))
    assert [p.split(": ")[1] for p in e.value.problems] == [
        "train.export_pkl_blake3",
        "train.export_pkl_size",
    ]
    assert e.value.problems[1].endswith("found 1000")
    with pytest.raises(ConfigError, match="export_pkl_blake3: expected 64 hex digits"):
        config.load(write(tmp_path, remote("hf:a/b/export.pkl", PIN.replace("ab", "xy", 1))))
    (tmp_path / "export.pkl").write_bytes(b"x")  # a local file may be pinned, or not
    assert config.load(write(tmp_path, remote("export.pkl"))).train.export_pkl_size == 1000
    assert config.load(write(tmp_path, remote("export.pkl", ""))).train.export_pkl_size is None


def test_checks_across_keys_all_at_once_and_not_on_a_key_already_wrong(tmp_path: Path) -> None:
    (tmp_path / "export.pkl").write_bytes(b"x")
    (tmp_path / "w.pth").write_bytes(b"x")
    text = MINIMAL.replace(
        'eval_csv = "bundled:eval.csv"', 'eval_csv = "bundled:eval.csv"\nlabel_column = "text"'
    ) + (
        '[train]\nexport_pkl = "export.pkl"\ntypo_aliases = true\ncase_markers = false\n'
        'pretrained_weights = "w.pth"\n'
    )
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    assert e.value.problems == [
        "release.toml: train.typo_aliases: expected false with train.export_pkl (they are added "
        "to learners trained here; for your own, call pipeline.typo_aliases.add_to_learner "
        "before learn.export), found true",
        "release.toml: train.case_markers: expected true with train.export_pkl (the learner's "
        "rules stay), found false",
        "release.toml: train.pretrained_weights/pretrained_vocab: expected both set or both "
        "unset, found only one",
        "release.toml: data.label_column: expected a column other than data.text_column, "
        "found 'text'",
    ]
    # a key with its own problem is not checked against the others again
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text.replace('export_pkl = "export.pkl"', "export_pkl = 3")))
    assert not any("with train.export_pkl" in p for p in e.value.problems), e.value.problems
    assert (
        "release.toml: train.export_pkl: expected a path or location string, found int 3"
        in e.value.problems
    )
    (tmp_path / "v.pkl").write_bytes(b"x")
    both = MINIMAL + '[train]\npretrained_weights = "w.pth"\npretrained_vocab = "v.pkl"\n'
    with pytest.raises(ConfigError, match=r"train.pretrained: expected true when .*, found false"):
        config.load(write(tmp_path, both))
