"""A rerun into the same output root starts from nothing of the last run's: on a local disk and
on an object store, where "directories" are only key prefixes."""

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from polycap.transforms.write import clear_run_outputs
from tests.test_scale import BUCKET, _s3_client, _s3_options, s3_endpoint  # noqa: F401 (fixture)

RUN_OWNED = [
    "accepted/lang=de/part-00000-of-00002.parquet",
    "accepted/lang=de/part-00001-of-00002.parquet",
    "accepted/lang=fr/part-00000-of-00002.parquet",
    "rejected/part-00000-of-00002.parquet",
    "failed/part-00001-of-00002.parquet",
    "audit/counts.json",
    "audit/audit.json",
]
# Beside them under the same root: the store (kept across runs by design) and names that only
# start like a run's folders.
KEPT = ["translations/aws/batch-0123.parquet", "accepted-2025/part-0.parquet", "auditing.txt"]


def test_a_rerun_on_s3_deletes_every_object_of_the_last_run(s3_endpoint):  # noqa: F811
    client = _s3_client(s3_endpoint)
    client.create_bucket(Bucket=f"{BUCKET}-reruns")
    for key in RUN_OWNED + KEPT:
        client.put_object(Bucket=f"{BUCKET}-reruns", Key=f"out/{key}", Body=b"x")
    FileSystems.set_options(PipelineOptions(_s3_options(s3_endpoint)))
    assert clear_run_outputs(f"s3://{BUCKET}-reruns/out") == len(RUN_OWNED)
    left = [
        item["Key"].removeprefix("out/")
        for item in client.list_objects_v2(Bucket=f"{BUCKET}-reruns", Prefix="out/").get("Contents", [])
    ]
    assert sorted(left) == sorted(KEPT)


def test_a_rerun_on_a_local_disk_deletes_the_last_runs_folders(tmp_path):
    for key in RUN_OWNED + KEPT:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    assert clear_run_outputs(str(tmp_path)) == len(RUN_OWNED)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(KEPT)
    assert not (tmp_path / "accepted").exists()
