"""The model index document (pipeline/index.py): strict parsing, bounds, channels and yanks,
the signed envelope."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline import index as ix
from pipeline import signing
from pipeline.errors import InputError, IntegrityError
from tests.conftest import KEY

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SIGNER = signing.Signer("key", KEY.private_pem.encode())


def index(**kw) -> ix.Index:
    base = ix.Index("m").with_version("1.0.0", move_latest=True).with_version("1.1.0")
    return ix.Index(**{**base.__dict__, **kw}).issue(kw.get("sequence", 1), NOW)


def test_round_trip_and_canonical_text() -> None:
    i = index().promoted("1.1.0", "canary")
    again = ix.Index.from_bytes(i.to_bytes(), "t")
    assert again == i
    assert again.to_bytes() == i.to_bytes()
    assert dict(again.channels) == {"latest": "1.0.0", "canary": "1.1.0"}


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(format_version=99), "upgrade"),
        (lambda d: d.update(sequence=-1), "sequence"),
        (lambda d: d.update(sequence=True), "sequence"),
        (lambda d: d.update(sequence="3"), "sequence"),
        (lambda d: d.update(model="../etc"), "model"),
        (lambda d: d.update(issued="yesterday"), "issued"),
        (lambda d: d["channels"].update({"Stable!": "1.0.0"}), "channels"),
        (lambda d: d["channels"].update(canary="9.9.9"), "does not list"),
        (lambda d: d["yanked"].update({"1.0.0": "x" * 501}), "yanked"),
        (lambda d: d.update(versions=["1.0.0", "1.0.0"]), "twice"),
        (lambda d: d.update(versions=["1.0.0\n"]), "versions"),
    ],
)
def test_every_field_is_checked(edit, fragment) -> None:
    d = index().to_dict()
    edit(d)
    with pytest.raises(InputError, match=fragment):
        ix.Index.from_bytes(json.dumps(d).encode(), "t")


def test_size_is_bounded_before_parsing() -> None:
    with pytest.raises(InputError, match="more than"):
        ix.parse(b" " * (ix.MAX_INDEX_BYTES + 1), "t")
    with pytest.raises(InputError, match="not JSON"):
        ix.parse(b"[" * 100_000, "t")


def test_a_channel_skips_yanked_versions_downwards() -> None:
    i = index().with_version("1.2.0").promoted("1.2.0", "stable")
    i = i.yank("1.2.0", "wrong labels").yank("1.1.0", "slow")
    pick = i.pick("stable")
    assert pick.version == "1.0.0"
    assert pick.skipped == (("1.2.0", "wrong labels"), ("1.1.0", "slow"))
    assert i.unyank("1.1.0").pick("stable").version == "1.1.0"


def test_a_pre_release_is_never_a_fallback_for_a_final_version() -> None:
    i = index().with_version("1.1.0rc1").promoted("1.1.0", "stable").yank("1.1.0", "bad")
    assert i.pick("stable").version == "1.0.0"


def test_nothing_left_to_serve_and_unknown_channel_say_what_to_do() -> None:
    i = index().yank("1.0.0", "bad")
    with pytest.raises(ix.YankedOnly, match="promote a good version"):
        i.pick("latest")
    with pytest.raises(InputError, match="no channel 'stable'"):
        i.pick("stable")


def test_publishing_moves_latest_only_forward_and_only_for_a_new_version() -> None:
    from pipeline.channels import Change

    i = index()  # latest -> 1.0.0 although 1.1.0 is listed (as after an operator's rollback)
    assert Change("add", "1.1.0").apply(i).channels["latest"] == "1.0.0"  # a re-run of a publish
    assert Change("add", "0.9.0").apply(i).channels["latest"] == "1.0.0"  # an older version
    assert Change("add", "1.2.0").apply(i).channels["latest"] == "1.2.0"


def test_freshness_expiry_and_maximum_age() -> None:
    i = index().issue(2, NOW, timedelta(days=7))
    assert i.freshness_problem(NOW + timedelta(days=6), None) is None
    assert "expired" in i.freshness_problem(NOW + timedelta(days=8), None)
    assert "maximum age" in index().freshness_problem(NOW + timedelta(days=3), 2 * 86400)
    assert index().freshness_problem(NOW + timedelta(days=3), None) is None


def test_signed_envelope_verifies_with_the_release_trust_root() -> None:
    env = ix.seal(index(), SIGNER)
    back = ix.parse(env.to_bytes(), "t")
    assert back.index == env.index and back.signed == env.signed
    assert ix.verify(back, SIGNER.trust_root(), "t").startswith("signed by key")


def test_an_altered_document_or_another_key_is_refused() -> None:
    env = ix.seal(index(), SIGNER)
    d = json.loads(env.to_bytes())
    d["signed"] = d["signed"].replace('"1.0.0"', '"1.1.0"', 1)  # latest -> 1.1.0
    tampered = ix.parse(json.dumps(d).encode(), "t")
    with pytest.raises(IntegrityError, match="not this index document"):
        ix.verify(tampered, SIGNER.trust_root(), "t")
    other = signing.Signer("key", signing.generate().private_pem.encode())
    with pytest.raises(IntegrityError, match="not signed by"):
        ix.verify(ix.parse(env.to_bytes(), "t"), other.trust_root(), "t")
    with pytest.raises(IntegrityError, match="not signed"):
        ix.verify(ix.seal(index(), None), SIGNER.trust_root(), "t")


def test_a_model_bundle_is_not_an_index_signature() -> None:
    """A release's model.sig (signed by the same key) must not pass for an index's."""
    env = ix.seal(index(), SIGNER)
    other = ix.seal(index(sequence=5), SIGNER)
    swapped = ix.Envelope(env.signed, other.signature, env.index)
    with pytest.raises(IntegrityError, match="not this index document"):
        ix.verify(swapped, SIGNER.trust_root(), "t")
