"""PemWatch: files re-read when they change, and only a valid set replaces the current one."""

from __future__ import annotations

import pytest

from rtvi.protocol.tls import PemFiles, PemWatch, TlsFilesError, load
from support.certs import TestCA, require_openssl


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    require_openssl()
    return TestCA(tmp_path_factory.mktemp("ca"))


def test_a_changed_valid_set_is_taken_once(tmp_path, ca):
    first, second = ca.issue("first", dns=("a",)), ca.issue("second", dns=("b",))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    watch = PemWatch(PemFiles(str(cert), str(key), str(ca.pem)))
    assert watch.poll() is None
    cert.write_bytes(second.cert.read_bytes())  # half-way: the key is still the old one
    assert watch.poll() is None and watch.current.cert == first.cert.read_bytes()
    key.write_bytes(second.key.read_bytes())
    taken = watch.poll()
    assert taken is not None and taken.cert == second.cert.read_bytes() and watch.current is taken
    assert taken.fingerprint != load(PemFiles(str(first.cert), str(first.key))).fingerprint
    assert watch.poll() is None


def test_a_missing_file_keeps_the_current_set(tmp_path, ca):
    issued = ca.issue("server", dns=("a",))
    watch = PemWatch(PemFiles(str(issued.cert), str(issued.key)))
    issued.key.rename(tmp_path / "moved.key")
    assert watch.poll() is None and watch.current.key is not None


@pytest.mark.parametrize(("break_it", "message"), [
    (lambda files: files.key.write_text(""), "not a PEM certificate chain"),
    (lambda files: files.cert.unlink(), "no such file"),
])
def test_bad_files_name_the_flag(tmp_path, ca, break_it, message):
    issued = ca.issue("broken", dns=("a",))
    break_it(issued)
    with pytest.raises(TlsFilesError, match=message) as error:
        load(PemFiles(str(issued.cert), str(issued.key), flags=("--tls-cert", "--tls-key", "--tls-client-ca")))
    assert "--tls-" in str(error.value) and "PRIVATE KEY" not in str(error.value)
