"""The lockfile's TOML: the tiny writer round-trips through stdlib tomllib, and every field is checked."""

from __future__ import annotations

import pytest

from lorahub_cli.errors import BadLock, UnknownLockVersion
from lorahub_cli.lock.model import LockEntry, LockFile, LockSource
from lorahub_cli.lock.toml import dumps, loads


def test_odd_text_round_trips():
    odd = 'quote " back\\slash \u00e9\u6f22 tab\t nl\n del\x7f esc\x1b'
    lock = LockFile(entries=[LockEntry(name=odd, sha256="a" * 64, weight=-0.25, base=odd,
                                       sources=[LockSource("url", url="https://x.invalid/" + "a%22", etag=odd),
                                                LockSource("civitai", model=1, version=2)])],
                    base=odd, base_id="o/b")
    back = loads(dumps(lock))
    assert back == lock


@pytest.mark.parametrize("text, error", [
    ('version = "1"', BadLock),
    ("version = 99", UnknownLockVersion),
    ('version = 1\n[[adapters]]\nname = "x"\nsha256 = "ABC"', BadLock),
    ('version = 1\n[[adapters]]\nname = "x"\nsha256 = "' + "a" * 64 + '"\nweight = inf', BadLock),
    ('version = 1\n[[adapters]]\nname = "x"\nsha256 = "' + "a" * 64 + '"\n[[adapters.sources]]\nkind = "ftp"',
     BadLock),
    ('version = 1\n[[adapters]]\nname = "x"\nsha256 = "' + "a" * 64 + '"\n[[adapters.sources]]\nkind = "hub"\n'
     'repo = "o/r"', BadLock),
    ('version = 1\n[[adapters]]\nname = "x"\nsha256 = "' + "a" * 64 + '"\n[[adapters.sources]]\nkind = "url"\n'
     'url = "file:///etc/passwd"', BadLock),
    # a Hub source becomes a URL path: a repo id the Hub would refuse, or a file outside the repo, is refused here
    *[('version = 1\n[[adapters]]\nname = "x"\nsha256 = "' + "a" * 64 + '"\n[[adapters.sources]]\nkind = "hub"\n'
       f'repo = "{repo}"\nfile = "{file}"\ncommit = "{"b" * 40}"', BadLock)
      for repo, file in (("../../api/whoami", "w.safetensors"), ("o/r/x", "w.safetensors"), ("o", "w.safetensors"),
                         ("o/r", "../../x.safetensors"), ("o/r", "/etc/passwd"))],
])
def test_bad_fields_are_refused(text, error):
    with pytest.raises(error):
        loads(text)
