"""storage translators."""
