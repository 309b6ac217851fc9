"""Claims: who pays for a text. Before a provider is paid for a text, the payer claims it in the
translation store with an atomic create-if-absent; whoever else needs the same text (a retried
work item on another worker, a replayed bundle whose earlier futures still run, another run
sharing the store) finds the claim and waits for the claimant's batch file instead of paying
again.

A claim is a small JSON object ``STORE/<provider>/claims/<sha256 of the key>.<generation>.json``
holding the claimant (``owner``), the batch file its translation will be written to, and when
the claim expires (``lease_seconds`` after it was made). A claimant that dies leaves a claim
that expires; the next claimant then creates the next generation, which again only one can do.
A claimant whose provider call fails deletes its claim, so the text can be claimed again at once.
Claims stay after the translation is stored: they say where it is.

Create-if-absent by filesystem, each with the claim's whole content at once: a local path by a
hard link from a file already written (``os.link`` fails where the path exists); ``s3://`` with
a conditional ``PutObject`` (``If-None-Match: *``); ``gs://`` with ``if_generation_match=0``.
Any other filesystem is refused when the store is configured (``check_store``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import uuid
from typing import NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems

from polycap.transforms.errors import ConfigError

CLAIMABLE_SCHEMES = ("s3://", "gs://")


class Claim(NamedTuple):
    owner: str
    batch: str  # the store file the owner writes this text's translation to
    expires: float  # seconds since the epoch

    def expired(self, now: Optional[float] = None) -> bool:
        return (time.time() if now is None else now) >= self.expires


def check_store(root: str) -> None:
    """ConfigError (``translation.store``) where claims cannot be made atomically."""
    if "://" in root and not root.startswith(CLAIMABLE_SCHEMES):
        raise ConfigError(
            f"translation.store: {root!r}: polycap claims each text before paying for it with an "
            "atomic create-if-absent, which it can do on a local path, s3:// and gs:// only"
        )


def claim_path(root: str, provider: str, key: str, generation: int) -> str:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return f"{root}/{provider}/claims/{digest}.{generation}.json"


def create_if_absent(path: str, data: bytes) -> bool:
    """Write ``data`` at ``path`` only if nothing is there: True if this call created it, False
    if something was (also when another writer won a race for it)."""
    if path.startswith("s3://"):
        return _create_on_s3(path, data)
    if path.startswith("gs://"):
        return _create_on_gcs(path, data)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Written whole under a name of its own first: a claim created empty and written after
    # (O_CREAT | O_EXCL, then write) showed another run reading it in between an empty claim.
    written = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        with open(written, "wb") as stream:
            stream.write(data)
        os.link(written, path)
    except FileExistsError:
        return False
    finally:  # also where the write failed (a full disk): no partial file stays behind
        if os.path.exists(written):
            os.remove(written)
    return True


# The S3 options a client is built from (Beam's S3Options), and the GCS client's pipeline options.
_S3_OPTIONS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token", "s3_endpoint_url",
               "s3_region_name", "s3_api_version", "s3_verify", "s3_disable_ssl")


@functools.lru_cache(maxsize=None)
def _s3_client(options: tuple):
    """One boto3 client per process and set of S3 options (building one costs far more than a
    conditional PUT; boto3 clients are thread-safe), built as Beam's own S3 filesystem builds it."""
    from apache_beam.io.aws.clients.s3.boto3_client import Client

    return Client(options=dict(options)).client


def _create_on_s3(path: str, data: bytes) -> bool:
    from apache_beam.options.pipeline_options import S3Options
    from botocore.exceptions import ClientError

    # The options of Beam's own S3 filesystem (endpoint, credentials), since Beam's filesystem
    # API has no conditional write.
    s3 = FileSystems.get_filesystem(path)._options.view_as(S3Options)
    client = _s3_client(tuple((name, getattr(s3, name)) for name in _S3_OPTIONS))
    bucket, _, key = path[len("s3://"):].partition("/")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        # 412: the object exists; 409: a concurrent conditional write to it is in progress.
        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True


@functools.lru_cache(maxsize=None)
def _gcs_client(options_json: str):
    """One GCS client per process and set of pipeline options."""
    from apache_beam.io.gcp import gcsio
    from apache_beam.options.pipeline_options import PipelineOptions

    return gcsio.GcsIO(pipeline_options=PipelineOptions.from_dictionary(json.loads(options_json))).client


def _create_on_gcs(path: str, data: bytes) -> bool:
    from google.api_core.exceptions import PreconditionFailed

    from apache_beam.options.pipeline_options import PipelineOptions

    options = FileSystems.get_filesystem(path)._pipeline_options or PipelineOptions()
    given = options.get_all_options(drop_default=True)
    client = _gcs_client(json.dumps(given, sort_keys=True, default=str))
    bucket, _, name = path[len("gs://"):].partition("/")
    try:
        client.bucket(bucket).blob(name).upload_from_string(data, if_generation_match=0)
    except PreconditionFailed:
        return False
    return True


def read_claim(path: str) -> Optional[Claim]:
    """The claim at ``path``, or None where there is none (never made, or released)."""
    try:
        with FileSystems.open(path) as stream:
            return Claim(**json.loads(stream.read().decode("utf-8")))
    except (OSError, ValueError, TypeError):  # each filesystem says "not found" its own way
        if FileSystems.exists(path):
            raise
        return None


class Claims:
    """The claims in one store folder (``provider``: a provider's, per language for a local
    model: ``Provider.store_names``), made by one ``owner`` (one DoFn instance of one run)."""

    def __init__(self, root: str, provider: str, owner: str, lease_seconds: float):
        self._root = root
        self.provider = provider
        self.owner = owner
        self._lease = lease_seconds

    def claim(self, key: str, batch: str, generation: int = 0) -> tuple[Optional[Claim], int]:
        """One attempt at ``key``'s claim of ``generation``, without waiting: (None, generation)
        when the text is now this owner's to pay for (its translation to be written to
        ``batch``), or (the holder's claim, generation) when someone else holds that generation
        (live or expired: the caller looks for the holder's translation first)."""
        record = json.dumps(Claim(self.owner, batch, time.time() + self._lease)._asdict())
        path = claim_path(self._root, self.provider, key, generation)
        while True:
            if create_if_absent(path, record.encode("utf-8")):
                return None, generation
            held = read_claim(path)
            if held is None:  # released between our attempt and our read: try again
                continue
            return (None if held.owner == self.owner else held), generation

    def release(self, key: str, generation: int) -> None:
        """Delete this owner's claim (its provider call failed): the text may be claimed again."""
        path = claim_path(self._root, self.provider, key, generation)
        held = read_claim(path)
        if held is not None and held.owner == self.owner:
            FileSystems.delete([path])
