"""The translation store: what it holds is found again by its text, whatever key was written."""

from apache_beam.testing.util import assert_that, equal_to

from polycap.transforms import store
from tests.conftest import local_pipeline


def _row(lookup_key: str, source_text: str, translated_text: str) -> dict:
    return dict(provider="aws", lookup_key=lookup_key, source_lang="en", target_lang="de",
                source_text=source_text, translated_text=translated_text, untranslated=False,
                characters=len(source_text), run_id="earlier")


def test_store_rows_are_keyed_by_their_text_not_the_key_stored_with_them(tmp_path):
    # Rows paid for under an older normalisation (or an older key format) must still be found:
    # the key is computed again from the text when the store is read.
    source = "A man in an orange hat starring at something."
    stale = _row("en|de|a man in an orange hat starring at something.", source,
                 "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.")
    path = store.batch_path(str(tmp_path), "aws", [stale["lookup_key"]], "earlier-worker")
    store.write_batch(path, [stale])
    with local_pipeline() as pipeline:
        found = pipeline | store.ReadStore(str(tmp_path), lambda: {"de": "aws"})
        assert_that(
            found,
            equal_to([(store.lookup_key("en", "de", source), (stale["translated_text"], False))]),
        )
