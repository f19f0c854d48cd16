"""Secrets in storage URLs: masking them wherever the sweep writes or prints a URL.

The storage URL may hold a password. It never travels in a config or an override, because
Hydra writes those into every run dir: the sweeper keeps a masked copy in the config and puts
the real URL in the environment variable STORAGE_ENV, which the jobs inherit.
"""

from __future__ import annotations

import os
import re

STORAGE_ENV = "RNNLAB_OPTUNA_STORAGE"
MASK = "***"

_PASSWORD_IN_URL = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)[^@\s]*@")


def mask_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _PASSWORD_IN_URL.sub(rf"\g<1>{MASK}@", text)


def real_storage_url(configured: str) -> str:
    """The URL to connect to: the one in STORAGE_ENV when `configured` is its masked form."""
    real = os.environ.get(STORAGE_ENV)
    if real and mask_url(real) == configured:
        return real
    return configured
