"""Storage options: what a client needs to reach a store, from ``storage_options=`` and the environment.

``storage_options`` is a flat mapping, the same for every scheme where the idea is the same:
``endpoint``, ``region``, ``access_key_id``, ``secret_access_key``, ``session_token``,
``anonymous`` (unsigned requests, public buckets), ``allow_http`` (a plain-http endpoint such
as a local test server), ``timeout`` (per request, e.g. ``"30s"``), ``connect_timeout``, and
streamtok's own ``max_in_flight`` (concurrent requests per process, default 256: at 30 ms per
request that is up to ~8500 requests/s, ~260 steps/s of 32 windows; 64 measured 1.6-5x
slower against the loopback server, benchmarks/RESULTS.md section 14),
``retries`` (attempts after the first, default 5), ``retry_base_s``, ``retry_max_s``
(backoff bounds), ``metadata_cache`` (``False`` turns the local metadata cache off),
``block_bytes`` (the block size of ``fetch="blocks"``, default 8 MiB). Any other key is
passed to the scheme's obstore builder as is (e.g. ``service_account_path`` for GCS,
``account_name`` for Azure).

For S3 the standard environment fills what the mapping leaves out: ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), ``AWS_ALLOW_HTTP=true``;
GCS and Azure read their own (``GOOGLE_*``, ``AZURE_*``) through obstore; for GCS,
``STORAGE_EMULATOR_HOST`` (the variable Google's own clients read) names an emulator's
endpoint when ``endpoint`` is not given: requests to it are unsigned, and plain http is
allowed when it is an ``http://`` URL, as those clients do.

Secrets never leave this module in text: :func:`redact` replaces every secret value known
to the process (from the options and the environment) by ``***`` in a message, and
:class:`StorageOptions`' ``repr`` shows key names only. Options are not part of any state,
manifest or fingerprint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

SECRET_KEYS = ("secret_access_key", "session_token", "token", "access_key", "sas_token", "client_secret",
               "bearer_token", "password", "account_key", "hf_token")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY",
               "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET", "GOOGLE_SERVICE_ACCOUNT_KEY")
_OWN = {"max_in_flight": 256, "retries": 5, "retry_base_s": 0.05, "retry_max_s": 2.0, "metadata_cache": True,
        "block_bytes": 8 << 20}
_GENERIC = ("endpoint", "region", "access_key_id", "secret_access_key", "session_token", "anonymous",
            "allow_http", "timeout", "connect_timeout")
_known_secrets: set[str] = set()


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def remember_secrets(options: Mapping[str, Any]) -> None:
    """Note the secret values among ``options`` (by key name) so that :func:`redact` hides them."""
    for key, value in options.items():
        if any(s in key.lower() for s in SECRET_KEYS) and isinstance(value, str) and len(value) >= 4:
            _known_secrets.add(value)


_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]+@")


def redact(text: str) -> str:
    """``text`` with every known secret value, and any ``user:password@`` of a URL, replaced by ``***``."""
    text = _USERINFO.sub(r"\1***@", text)
    secrets = set(_known_secrets)
    secrets.update(v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 4)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class StorageOptions:
    """Settings for the stores of one reader (``repr`` names keys, never values).

    Args:
        values: the ``storage_options=`` mapping as given.
    """

    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.values, Mapping):
            raise ConfigError(f"storage_options must be a mapping of option names to values, not {type(self.values).__name__}")
        object.__setattr__(self, "values", dict(self.values))
        remember_secrets(self.values)
        for key in ("max_in_flight", "retries"):
            value = self.own(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "max_in_flight" else 0):
                raise ConfigError(f"storage_options[{key!r}] must be an integer >= {1 if key == 'max_in_flight' else 0}, not {value!r}")

    def __repr__(self) -> str:
        return f"StorageOptions(keys={sorted(self.values)})"

    def own(self, key: str) -> Any:
        """One of streamtok's own options (``max_in_flight``, ``retries``...), or its default."""
        return self.values.get(key, _OWN[key])

    def __reduce__(self) -> tuple[Any, ...]:  # pickled to DataLoader workers: keep the secrets' redaction there too
        return (StorageOptions, (dict(self.values),))

    def s3(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(config, client_options)`` for obstore's ``S3Store``: the mapping, then the AWS environment."""
        v, env = self.values, os.environ
        config: dict[str, Any] = {}
        endpoint = v.get("endpoint") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT")
        if endpoint:
            config["endpoint"] = endpoint
        region = v.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            config["region"] = region
        for key, env_key in (("access_key_id", "AWS_ACCESS_KEY_ID"), ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                             ("session_token", "AWS_SESSION_TOKEN")):
            value = v.get(key) or env.get(env_key)
            if value:
                config[key] = value
        if _truthy(v.get("anonymous", False)):
            config = {k: val for k, val in config.items() if k in ("endpoint", "region")}
            config["skip_signature"] = True
        config.update(self._extra())
        return config, self.client_options(env.get("AWS_ALLOW_HTTP"))

    def generic(self, scheme: str) -> dict[str, Any]:
        """Config for the GCS or Azure builder: the mapping's keys as obstore names them
        (``endpoint`` is GCS's ``base_url``; ``secret_access_key`` Azure's ``account_key``)."""
        v = self.values
        config: dict[str, Any] = {}
        if v.get("endpoint"):
            config["base_url" if scheme == "gs" else "endpoint"] = v["endpoint"]
        elif scheme == "gs" and (emulator := self._gcs_emulator()):
            config["base_url"], config["skip_signature"] = emulator, True
        if scheme != "gs" and v.get("secret_access_key"):
            config["account_key"] = v["secret_access_key"]
        if _truthy(self.values.get("anonymous", False)):
            config["skip_signature"] = True
        config.update(self._extra())
        return config

    def _gcs_emulator(self) -> str | None:
        """``STORAGE_EMULATOR_HOST`` as a URL (``host:port`` alone means http), when set."""
        host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
        if not host:
            return None
        return host if "://" in host else f"http://{host}"

    def client_options(self, env_allow_http: str | None = None, *, scheme: str | None = None) -> dict[str, Any]:
        """obstore's client options: timeouts, and ``allow_http`` (from the mapping, else the
        environment: ``AWS_ALLOW_HTTP`` for S3, an ``http://`` GCS emulator for ``scheme="gs"``)."""
        opts: dict[str, Any] = {"timeout": self.values.get("timeout", "60s"),
                                "connect_timeout": self.values.get("connect_timeout", "10s")}
        if scheme == "gs" and not self.values.get("endpoint") and (self._gcs_emulator() or "").startswith("http://"):
            env_allow_http = "true"
        allow = self.values.get("allow_http", env_allow_http)
        if allow is not None and _truthy(allow):
            opts["allow_http"] = True
        return opts

    def _extra(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if k not in _GENERIC and k not in _OWN}


def as_options(storage_options: StorageOptions | Mapping[str, Any] | None) -> StorageOptions:
    """A :class:`StorageOptions` from what a user passed (``None``: the environment alone)."""
    if isinstance(storage_options, StorageOptions):
        return storage_options
    return StorageOptions({} if storage_options is None else storage_options)
