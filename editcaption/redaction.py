"""Secrets out of everything we write or show: config dumps, reports, error messages, job metadata.

One helper for every place that dumps a config or formats an error. `redact_text` masks the password
of any `scheme://user:password@host` URL, secret-named query parameters and `name=value` pairs,
`Bearer` tokens, and the current values of secret-named environment variables (and the passwords of
URLs held in the environment) wherever they appear; `redact` walks dicts and lists, masking values
under secret-named keys and redacting every string. What counts as a secret name: the name, without
`_`, `-` and `.` and lower-cased, ends in password, passwd, pwd, secret, token, apikey, accesskey,
privatekey, credential(s), signature or authorization, or is `key`, `sig` or `pass`. `max_tokens`,
`api_key_env` and `key_hashes_file` are not secrets (they name one, or count something), nor are the
shell's `PWD` and `OLDPWD` (working directories: masking them hid every path under the current one).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
_SECRET_SUFFIXES = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "credentials",
    "signature",
    "authorization",
)
_SECRET_NAMES = {"key", "sig", "pass"}
_NOT_SECRET_NAMES = {"pwd", "oldpwd"}  # the shell's working directories, not passwords
_MIN_SECRET_CHARS = 6  # shorter environment values would mask ordinary words

# scheme://user:password@ — the password may hold '@' but not '/', whitespace or quotes
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/\s@'\"]*):[^/\s'\"]*@")
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[^=&#\s?;]+)=)(?P<value>[^&#\s'\";]*)")
_NAME_VALUE = re.compile(  # name=value, "name": value (JSON), and name: value starting a line (YAML)
    r"(?P<head>(?<![A-Za-z0-9_.\-])(?P<eq>[A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*[\"']?"
    r"|\"(?P<json>[A-Za-z_][A-Za-z0-9_.\-]*)\"\s*:\s*\"?"
    r"|^[ \t\-]*(?P<yaml>[A-Za-z_][A-Za-z0-9_.\-]*):[ \t]+[\"']?)"
    r"(?P<value>[^\s\"',;&}\]]+)",
    re.MULTILINE,
)
_BEARER = re.compile(r"(?P<head>\b[Bb]earer\s+)[A-Za-z0-9._~+/=\-]{4,}")


def is_secret_name(name: str) -> bool:
    """Whether a key, field, parameter or variable of this name holds a secret (see the module doc)."""
    flat = re.sub(r"[_\-.]", "", name).lower()
    if flat in _NOT_SECRET_NAMES:
        return False
    return flat in _SECRET_NAMES or flat.endswith(_SECRET_SUFFIXES)


def environment_secrets() -> list[str]:
    """Values in the environment that must never be shown, longest first: secret-named variables'
    values and the passwords of URLs held in any variable."""
    found = set()
    for name, value in os.environ.items():
        if is_secret_name(name) and len(value) >= _MIN_SECRET_CHARS:
            found.add(value)
        if "://" in value and "@" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password and len(password) >= _MIN_SECRET_CHARS:
                found.add(password)
    return sorted(found, key=len, reverse=True)


def redact_text(text: str) -> str:
    """`text` with every secret we can recognise replaced by `***`."""
    if not text:
        return text
    for secret in environment_secrets():
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _QUERY_PARAM.sub(_masked_if_secret, text)
    return _NAME_VALUE.sub(_masked_if_secret, text)


_SCHEMES = {MASK, "bearer", "basic", "token"}  # `Authorization: Bearer ***`: the scheme is no secret


def _masked_if_secret(match: re.Match[str]) -> str:
    name = next(n for n in (match.groupdict().get(k) for k in ("name", "eq", "json", "yaml")) if n)
    if is_secret_name(name) and match["value"].lower() not in _SCHEMES:
        return match["head"] + MASK
    return match[0]


def redact(data: Any) -> Any:
    """A copy of `data` (dicts, lists, strings, scalars) safe to write: values under secret-named keys
    are masked (None, booleans and empty values stay, to show whether one was set) and every string is
    passed through `redact_text`."""
    if isinstance(data, dict):
        return {
            key: MASK
            if isinstance(key, str) and is_secret_name(key) and data[key] not in (None, "", True, False)
            else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact(value) for value in data]
    if isinstance(data, str):
        return redact_text(data)
    return data
