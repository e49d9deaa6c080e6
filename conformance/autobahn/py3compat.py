"""Python 3 helpers for the Autobahn|Testsuite port.

Installed as autobahntestsuite/py3compat.py by patch_py3.py (conformance/autobahn/ of sockeye).

The suite was written for Python 2, where a plain str literal is a byte
string.  The port keeps those literals as Python 3 str whose code points are
all < 256 (a "byte string" held in a str) and maps them 1:1 to bytes with
latin-1 wherever they meet the wire or a bytes-only API.  Non-ASCII characters
that appeared *raw* in Python 2 source files (which are UTF-8) are rewritten
to \\xNN escapes of their UTF-8 bytes at install time, so that the latin-1
mapping yields exactly the octets Python 2 sent.

Data received from the wire stays bytes (autobahn 0.10.9 delivers bytes);
comparisons normalise both sides with normalize().
"""

import binascii

__all__ = ['to_bytes', 'hexlify', 'normalize', 'strict_equal', 'jsonable', 'fix_text']


def to_bytes(x):
    """str holding Python 2 byte-string data -> bytes (latin-1, 1:1).

    Raises UnicodeEncodeError for code points > 255: such a str was a
    Python 2 unicode object, and sending it without an explicit encode is a
    porting bug that must be loud, never silently re-encoded.
    """
    if isinstance(x, str):
        return x.encode('latin-1')
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    return x


def hexlify(x):
    """binascii.b2a_hex() for str (latin-1) or bytes, returning str as in Python 2."""
    return binascii.b2a_hex(to_bytes(x)).decode('ascii')


def normalize(obj):
    """Recursively map bytes -> str (latin-1, 1:1) so that data received from
    the wire (bytes) can be compared with expected values written as Python 2
    str literals.  Every other type is kept as is."""
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode('latin-1')
    if isinstance(obj, list):
        return [normalize(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(normalize(o) for o in obj)
    if isinstance(obj, dict):
        return dict((normalize(k), normalize(v)) for k, v in obj.items())
    return obj


def strict_equal(a, b):
    """Structural equality that, like the original pickle.dumps() comparison,
    distinguishes types (True is not 1, a tuple is not a list), but without
    pickle's object-identity (memo) artefacts."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (set(a.keys()) == set(b.keys()) and
                all(strict_equal(a[k], b[k]) for k in a))
    return a == b


def fix_text(s):
    """A str built from Python 2 byte strings that were UTF-8 text (case
    descriptions) -> proper text.  Left unchanged when it is not such data."""
    if isinstance(s, str):
        try:
            return s.encode('latin-1').decode('utf-8')
        except (UnicodeEncodeError, UnicodeDecodeError):
            return s
    return s


def jsonable(obj):
    """Recursively make case results JSON/HTML friendly: bytes -> str.

    Python 2's json.dumps() decoded byte strings as UTF-8; do the same, with
    replacement characters instead of an exception for invalid data."""
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode('utf-8', 'replace')
    if isinstance(obj, list):
        return [jsonable(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(jsonable(o) for o in obj)
    if isinstance(obj, dict):
        return dict((jsonable(k), jsonable(v)) for k, v in obj.items())
    return obj
