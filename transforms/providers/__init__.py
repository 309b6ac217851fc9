"""Online translation providers behind one small interface (``base.Provider``)."""

from polycap.pipeline.config import OnlineProvider, TranslationConfig
from polycap.transforms.providers.base import Provider


def make_provider(cfg: TranslationConfig) -> Provider:
    """The configured online provider, not yet opened. Imports stay local so a run that uses
    one provider never needs the other's client library."""
    if cfg.provider is OnlineProvider.AWS:
        from polycap.transforms.providers.aws import AwsTranslate

        return AwsTranslate(cfg.aws)
    if cfg.provider is OnlineProvider.GOOGLE:
        from polycap.transforms.providers.google import GoogleTranslate

        return GoogleTranslate(cfg.google)
    raise ValueError(f"no online provider for {cfg.provider.value!r}")
