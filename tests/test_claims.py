"""Claims on texts before paying for them (``claims.py``): one winner per text, on a local disk
and on S3 (moto), a local claim never seen before its content, a released claim can be made
again, an expired one is taken over by the next generation, which again only one claimant
gets."""

import json
import subprocess
import sys
import threading
import time

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from polycap.transforms.claims import Claim, Claims, check_store, claim_path, create_if_absent, read_claim
from polycap.transforms.errors import ConfigError
from tests.test_scale import BUCKET, _s3_client, _s3_options, s3_endpoint  # noqa: F401 (fixture)

KEY = "en\tde\ta dog runs on the beach"


@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    _s3_client(endpoint).create_bucket(Bucket=f"{BUCKET}-claims")
    FileSystems.set_options(PipelineOptions(_s3_options(endpoint)))
    return f"s3://{BUCKET}-claims/store-{time.monotonic_ns()}"


def test_only_one_of_many_racing_creators_wins(store_root):
    path = claim_path(store_root, "aws", KEY, 0)
    won, start = [], threading.Barrier(8)

    def create(index):
        start.wait()
        if create_if_absent(path, f"writer {index}".encode()):
            won.append(index)

    threads = [threading.Thread(target=create, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    with FileSystems.open(path) as stream:
        assert stream.read() == f"writer {won[0]}".encode()


# While claims are created one after another, a reader in another process opens each the moment
# it appears and reads it: it must find every claim whole, never created but not yet written.
_READ_AS_CREATED = """
import json, os, sys
print("ready", flush=True)
incomplete = 0
for path in sys.argv[1:]:
    while True:
        try:
            descriptor = os.open(path, os.O_RDONLY)
            break
        except FileNotFoundError:
            pass
    text = os.read(descriptor, 4096)
    os.close(descriptor)
    try:
        json.loads(text)
    except ValueError:
        incomplete += 1
print("incomplete", incomplete)
"""


def test_a_local_claim_is_never_seen_before_its_content(tmp_path):
    paths = [claim_path(str(tmp_path / "store"), "aws", f"{KEY} {index}", 0) for index in range(3000)]
    reader = subprocess.Popen([sys.executable, "-c", _READ_AS_CREATED, *paths], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    record = json.dumps(Claim("owner", "batch.parquet", 0.0)._asdict()).encode("utf-8")
    for path in paths:
        assert create_if_absent(path, record)
    out, _ = reader.communicate(timeout=120)
    assert out.strip() == "incomplete 0"


def test_a_held_claim_names_its_owner_and_batch_until_released(store_root):
    first = Claims(store_root, "aws", "run-a", lease_seconds=60)
    second = Claims(store_root, "aws", "run-b", lease_seconds=60)
    assert first.claim(KEY, "batch-a") == (None, 0)
    assert first.claim(KEY, "batch-a") == (None, 0)  # its own claim: still its to pay for
    held, generation = second.claim(KEY, "batch-b")
    assert (held.owner, held.batch, generation) == ("run-a", "batch-a", 0) and not held.expired()
    first.release(KEY, 0)
    assert read_claim(claim_path(store_root, "aws", KEY, 0)) is None
    assert second.claim(KEY, "batch-b") == (None, 0)


def test_an_expired_claim_is_taken_over_by_one_claimant_of_the_next_generation(store_root):
    dead = Claims(store_root, "aws", "dead-worker", lease_seconds=0.01)
    assert dead.claim(KEY, "batch-dead") == (None, 0)
    time.sleep(0.05)
    first, second = (Claims(store_root, "aws", owner, lease_seconds=60) for owner in ("b", "c"))
    held, generation = first.claim(KEY, "batch-b")
    assert held.owner == "dead-worker" and held.expired() and generation == 0
    assert first.claim(KEY, "batch-b", generation + 1) == (None, 1)
    held, generation = second.claim(KEY, "batch-c", 1)
    assert (held.owner, generation) == ("b", 1)


def test_a_store_where_claims_cannot_be_atomic_is_refused():
    with pytest.raises(ConfigError, match=r"^translation.store: 'hdfs://x/store'"):
        check_store("hdfs://x/store")
    check_store("s3://bucket/store")
    check_store("/tmp/store")
