"""The node key file is a libp2p identity: same peer id through libp2p's own loader."""

import os

from edgefiles.node.identity import load_or_create, verify
from libp2p.identity_utils import load_identity
from libp2p.peer.id import ID


def test_key_file_is_libp2p_compatible_and_private(tmp_path):
    key = load_or_create(tmp_path / "node.key")
    assert oct(os.stat(tmp_path / "node.key").st_mode & 0o777) == "0o600"
    libp2p_pair = load_identity(tmp_path / "node.key")
    assert ID.from_pubkey(libp2p_pair.public_key).to_base58() == key.peer_id
    assert load_or_create(tmp_path / "node.key") == key


def test_signatures_verify_only_for_their_signer(tmp_path):
    a = load_or_create(tmp_path / "a.key")
    b = load_or_create(tmp_path / "b.key")
    sig = a.sign(b"message")
    assert verify(a.peer_id_bytes, b"message", sig)
    assert not verify(b.peer_id_bytes, b"message", sig)
    assert not verify(a.peer_id_bytes, b"other", sig)
    assert not verify(b"garbage", b"message", sig)
