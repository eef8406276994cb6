"""Contacts (issue 4, part 1): petnames for identities in HOME/contacts, without a daemon."""

import os
import stat

import pytest


@pytest.fixture
def offline(make_node):
    node = make_node(start=False)
    node.cli("init")
    return node


def token_of(make_node):
    other = make_node(start=False)
    return other.cli("init").stdout.strip()


def test_contacts_are_added_once_listed_by_name_and_private(offline, make_node):
    bob, carol = token_of(make_node), token_of(make_node)
    offline.cli("contact", "add", "carol", carol)
    offline.cli("contact", "add", "bob", bob)
    offline.cli("contact", "add", "bob", bob)  # the same pair again: nothing changes
    assert offline.cli("contact", "list").stdout == f"bob {bob}\ncarol {carol}\n", "contact list is not NAME IDENTITY by name"
    mode = stat.S_IMODE(os.stat(offline.home / "contacts").st_mode)
    assert mode == 0o600, f"HOME/contacts has mode {oct(mode)}, expected 0600"


@pytest.mark.parametrize("name, why", [
    ("a/b", "slash"), ("has space", "space"), ("*", "reserved"), ("hn1x", "hn1"), ("", "1 to 64"),
])
def test_a_bad_name_is_refused_with_a_reason(offline, make_node, name, why):
    proc = offline.cli("contact", "add", name, token_of(make_node), check=False)
    assert proc.returncode != 0, f"contact add {name!r} succeeded"
    assert why in proc.stderr, f"contact add {name!r}: unclear error {proc.stderr!r}"
    assert offline.cli("contact", "list").stdout == "", "a refused contact was stored"


def test_one_name_per_identity_and_one_identity_per_name(offline, make_node):
    bob, carol = token_of(make_node), token_of(make_node)
    offline.cli("contact", "add", "bob", bob)
    taken = offline.cli("contact", "add", "bob", carol, check=False)
    assert taken.returncode != 0 and "already the contact" in taken.stderr, taken.stderr
    twice = offline.cli("contact", "add", "robert", bob, check=False)
    assert twice.returncode != 0 and "already the contact bob" in twice.stderr, twice.stderr
    bad = offline.cli("contact", "add", "dave", "hn1notatoken", check=False)
    assert bad.returncode != 0 and "not an identity token" in bad.stderr, bad.stderr
    assert offline.cli("contact", "list").stdout == f"bob {bob}\n"


def test_a_damaged_contacts_file_is_reported_not_rewritten(offline):
    path = offline.home / "contacts"
    path.write_bytes(b"bob\tnot-a-token\n")
    path.chmod(0o600)
    proc = offline.cli("contact", "list", check=False)
    assert proc.returncode != 0 and "line 1" in proc.stderr, f"damaged contacts file: {proc.stderr!r}"
    assert path.read_bytes() == b"bob\tnot-a-token\n", "the damaged file was changed"
