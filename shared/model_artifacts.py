"""Artifact safety: what the model store checks before XGBoost parses a model.

A model artifact must open like XGBoost UBJSON or JSON; anything else is
refused before any parser sees it, and a format that can carry a pickle
(pickle itself, joblib's compressed pickles, zip and .npy files) is named in
the refusal, since unpickling runs code. Then its sha256 must match the one
recorded at registration. Last, ``probe_artifact`` loads it and scores one row
in a child process, so a tampered model that crashes XGBoost cannot take the
caller down.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

from rtml.shared.errors import IntegrityError, UnsafeModelError

# Leading bytes of formats that can carry a pickle; naming them turns "not a
# model" into an error that says what the file actually is.
_UNSAFE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"ZF", "a joblib zlib archive (old format), i.e. a compressed pickle"),
    (b"\x78\x01", "zlib data, as joblib writes a compressed pickle"),
    (b"\x78\x5e", "zlib data, as joblib writes a compressed pickle"),
    (b"\x78\x9c", "zlib data, as joblib writes a compressed pickle"),
    (b"\x78\xda", "zlib data, as joblib writes a compressed pickle"),
    (b"\x1f\x8b", "gzip data, as joblib writes a compressed pickle"),
    (b"BZh", "bz2 data, as joblib writes a compressed pickle"),
    (b"\xfd7zXZ\x00", "xz data, as joblib writes a compressed pickle"),
    (b"\x5d\x00\x00", "lzma data, as joblib writes a compressed pickle"),
    (b"\x04\x22\x4d\x18", "lz4 data, as joblib writes a compressed pickle"),
    (b"PK\x03\x04", "a zip archive (torch and .npz files carry pickles this way)"),
    (b"\x93NUMPY", "a NumPy .npy file (which may hold a pickle)"),
)
# after the opening "{", UBJSON has a length-type marker for the first key
# (or an optimised-container marker, or "}" when empty); JSON has '"' or "}"
_UBJSON_SECOND_BYTES = frozenset(b"iUIlL$#}")
_JSON_SECOND_BYTES = frozenset(b'"}')
_JSON_WHITESPACE = b" \t\r\n"


def verify_artifact(artifact: bytes, *, expected_sha256: str, version: str) -> None:
    """Refuse anything but XGBoost UBJSON/JSON, then check the hash.

    The format check comes first so that a pickle gets an error saying so, and
    both come before XGBoost parses a byte.
    """
    if not looks_like_xgboost_model(artifact):
        what = describe_unsafe_format(artifact) or (
            f"not XGBoost UBJSON/JSON (starts {artifact[:8]!r})"
        )
        raise UnsafeModelError(
            f"{version}: refusing to load the artifact: it is {what}; rtml loads only XGBoost "
            "UBJSON/JSON models and never unpickles"
        )
    actual = hashlib.sha256(artifact).hexdigest()
    if actual != expected_sha256:
        raise IntegrityError(
            f"{version}: artifact sha256 is {actual} but the record says {expected_sha256}; "
            "it was modified after registration"
        )


# Loads the artifact from stdin and scores one row of zeros. A tampered tree
# (node indices out of range, say) passes the format and hash checks when its
# record was re-signed, loads fine, and then makes XGBoost read out of bounds
# (SIGSEGV) when it predicts: only a separate process survives that.
_PROBE = """
import sys
# optional integrations xgboost imports when present: a quarter of the CPU without them
for name in ("sklearn", "pandas", "pyarrow", "dask", "cupy"):
    sys.modules[name] = None
import numpy, xgboost
booster = xgboost.Booster()
booster.load_model(bytearray(sys.stdin.buffer.read()))
booster.set_param({"nthread": 1})
booster.inplace_predict(numpy.zeros((1, max(1, booster.num_features())), dtype=numpy.float32))
"""
PROBE_TIMEOUT_S = 120.0


def probe_artifact(artifact: bytes, *, version: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Load ``artifact`` and score one row in a child process; IntegrityError unless it
    exits cleanly."""
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE],
            input=artifact,
            capture_output=True,
            timeout=timeout_s,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise IntegrityError(
            f"{version}: loading and scoring the artifact in a child process did not finish "
            f"within {timeout_s:g}s; it was not loaded"
        ) from None
    if child.returncode == 0:
        return
    if child.returncode < 0:
        how = f"crashed with {signal.Signals(-child.returncode).name}"
    else:
        last_line = (child.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
        how = f"failed (exit {child.returncode}: {last_line[:300]})"
    raise IntegrityError(
        f"{version}: XGBoost {how} loading and scoring the artifact in a child process; "
        "it was not loaded (a tampered or corrupt model)"
    )


def looks_like_xgboost_model(artifact: bytes) -> bool:
    """True when the bytes open like an XGBoost UBJSON or JSON model document."""
    if artifact[:1] == b"{" and artifact[1:2] and artifact[1] in _UBJSON_SECOND_BYTES:
        return True
    text = artifact.lstrip(_JSON_WHITESPACE)
    body = text[1:].lstrip(_JSON_WHITESPACE)
    return text[:1] == b"{" and bool(body[:1]) and body[0] in _JSON_SECOND_BYTES


def describe_unsafe_format(artifact: bytes) -> str | None:
    # protocol 2+ pickles open with the PROTO opcode and the protocol number
    if len(artifact) >= 2 and artifact[0] == 0x80 and 2 <= artifact[1] <= 5:
        return f"a pickle (protocol {artifact[1]})"
    for magic, description in _UNSAFE_SIGNATURES:
        if artifact.startswith(magic):
            return description
    return None
