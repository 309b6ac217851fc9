"""Translation providers behind one small interface (``base.Provider``): online APIs and local
models."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from polycap.transforms.providers.base import Provider

if TYPE_CHECKING:
    from polycap.transforms.translate import TranslationConfig


class OnlineProvider(str, enum.Enum):
    NONE = "none"
    AWS = "aws"
    GOOGLE = "google"
    GOOGLE_CLOUD = "google-cloud"
    CTRANSLATE2 = "ctranslate2"

    @property
    def bills(self) -> bool:
        """Whether it bills characters: a local model runs on the workers and costs worker
        hours, which the runner bills; the spending cap and the audit's bill leave it out."""
        return self not in (OnlineProvider.NONE, OnlineProvider.CTRANSLATE2)


# Public list prices per million characters; translation.price_per_million_chars overrides them.
# A local model bills nothing: it costs worker hours, which the runner bills.
LIST_PRICES = {
    OnlineProvider.AWS: 15.0,
    OnlineProvider.GOOGLE: 20.0,
    OnlineProvider.GOOGLE_CLOUD: 20.0,
    OnlineProvider.CTRANSLATE2: 0.0,
    OnlineProvider.NONE: 0.0,
}


def make_provider(cfg: "TranslationConfig", provider: OnlineProvider) -> Provider:
    """``provider`` with its settings from ``cfg``, not yet opened. Imports stay local so a run
    that uses one provider never needs the others' client libraries."""
    if provider is OnlineProvider.AWS:
        from polycap.transforms.providers.aws import AwsTranslate

        return AwsTranslate(cfg.aws)
    if provider is OnlineProvider.GOOGLE:
        from polycap.transforms.providers.google import GoogleTranslate

        return GoogleTranslate(cfg.google)
    if provider is OnlineProvider.GOOGLE_CLOUD:
        from polycap.transforms.providers.google_cloud import GoogleCloudTranslate

        return GoogleCloudTranslate(cfg.google_cloud)
    if provider is OnlineProvider.CTRANSLATE2:
        from polycap.transforms.providers.ctranslate2 import Ctranslate2Translate

        return Ctranslate2Translate(cfg.ctranslate2)
    raise ValueError(f"no online provider for {provider.value!r}")
