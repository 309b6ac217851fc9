import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import caption, local_pipeline
from polycap.transforms.deduplicate import DropDuplicateCaptions


def test_smallest_id_survives_whatever_the_input_order():
    # COCO and Multi30k's MSCOCO split carry the same real caption (annotation 367178).
    copies = [
        caption("multi30k:test_2017_mscoco:1", "A man riding a wave on top of a surfboard", "multi30k"),
        caption("coco:367178", "A man riding a wave on top of a surfboard."),
        caption("gcc:val:9", "a man riding a wave on top of a surfboard", "gcc"),
        caption("coco:38", "A black Honda motorcycle parked in front of a garage."),
    ]
    for order in (copies, copies[::-1]):
        with local_pipeline() as pipeline:
            out = pipeline | beam.Create(order) | DropDuplicateCaptions()
            assert_that(
                out.kept | "Ids" >> beam.Map(lambda c: c.caption_id),
                equal_to(["coco:367178", "coco:38"]),
                label="Survivors",
            )
            assert_that(
                out.rejected | "Reasons" >> beam.Map(lambda r: (r.caption_id, r.stage, r.reason)),
                equal_to(
                    [
                        ("gcc:val:9", "deduplicate", "duplicate"),
                        ("multi30k:test_2017_mscoco:1", "deduplicate", "duplicate"),
                    ]
                ),
                label="Duplicates",
            )
