"""Bounds on what a server is asked to classify, checked before a text reaches a tokenizer.

A prediction costs time in proportion to the text's tokens (the model reads every chunk of 72,
carrying its state, even where fastai pools only the last ones), and a regex tokenizer costs time
that grows with the longest run without whitespace (spaCy's, which fastai runs, with its square).
Three limits bound that, checked before the model runs: characters (checked first, in constant
time), the longest run without whitespace (linear, before tokenization), and tokens (after the
client's linear tokenizer, before the model). A text over a limit is refused with
`InputTooLarge`, a `ValueError`, naming the limit, the value found and how to raise it. All three
are configurable (`InputLimits(...)`, `load_model(input_limits=...)`, or the environment through
`InputLimits.from_env()`); `None` switches a limit off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.errors import InputError

MAX_CHARS_ENV = "RELEASE_MAX_INPUT_CHARS"
MAX_RUN_ENV = "RELEASE_MAX_INPUT_RUN"
MAX_TOKENS_ENV = "RELEASE_MAX_INPUT_TOKENS"
DEFAULT_MAX_CHARS = 10_000
DEFAULT_MAX_RUN = 1_000
DEFAULT_MAX_TOKENS = 512
# The golden-query smoke test at load stops asking after this long (the queries asked must all
# pass; the rest are skipped with a warning). A build writes 14 by default and at most 1,000
# (pipeline/manifest.py refuses more); 14 take about 0.1 s, so 10 s is a wide margin for real
# releases and the most a manifest can add to a start, whatever it lists.
SMOKE_TEST_SECONDS = 10.0


class InputTooLarge(InputError):
    """A text over one of the input limits; nothing was tokenized. A ValueError (exit 3)."""

    def __init__(self, message: str, *, limit: int, found: int, setting: str):
        super().__init__(message)
        self.limit, self.found, self.setting = limit, found, setting


@dataclass(frozen=True)
class InputLimits:
    """The most a text to classify may hold.

    Attributes:
        max_chars: characters in the text (None: no limit).
        max_run: characters in its longest run without whitespace, e.g. one URL (None: no limit).
        max_tokens: tokens the model is asked to read, xxbos included (None: no limit).
    """

    max_chars: int | None = DEFAULT_MAX_CHARS
    max_run: int | None = DEFAULT_MAX_RUN
    max_tokens: int | None = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_run", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise InputError(
                    f"input limits: {name}: expected a whole number >= 1 or None, found {value!r}"
                )

    @classmethod
    def unlimited(cls) -> InputLimits:
        """No limit at all: for trusted texts (the build's parity check over its own data)."""
        return cls(None, None, None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InputLimits:
        """The defaults, or `$RELEASE_MAX_INPUT_CHARS` / `$RELEASE_MAX_INPUT_RUN` /
        `$RELEASE_MAX_INPUT_TOKENS` when set (a whole number, or `none` for no limit): the
        input limits of `ClientSettings.from_env(environ)`.

        Raises:
            InputError: a value that is neither (or another client setting not of its form).
        """
        from pipeline.client.settings import ClientSettings

        return ClientSettings.from_env(environ).input_limits

    def check(self, text: str) -> str:
        """`text` itself when it is within the limits.

        Raises:
            InputError: `text` is not a str.
            InputTooLarge: it holds more characters, or a longer run without whitespace, than
                the limits allow (the message says which, by how much, and what to change).
        """
        if not isinstance(text, str):
            raise InputError(f"input text: expected a str, found {type(text).__name__}")
        n = len(text)
        if self.max_chars is not None and n > self.max_chars:
            raise InputTooLarge(
                f"input text: {n} characters, more than the limit of {self.max_chars}; "
                f"send a shorter text, or raise the limit (InputLimits(max_chars=...), "
                f"${MAX_CHARS_ENV})",
                limit=self.max_chars,
                found=n,
                setting="max_chars",
            )
        if self.max_run is not None and n > self.max_run:
            longest = max(map(len, text.split()), default=0)
            if longest > self.max_run:
                raise InputTooLarge(
                    f"input text: a run of {longest} characters without whitespace, more than "
                    f"the limit of {self.max_run}; split it, or raise the limit "
                    f"(InputLimits(max_run=...), ${MAX_RUN_ENV})",
                    limit=self.max_run,
                    found=longest,
                    setting="max_run",
                )
        return text

    def check_tokens(self, n: int) -> None:
        """Refuse a text of `n` tokens when that is over `max_tokens`.

        Raises:
            InputTooLarge: names the count and the limit.
        """
        if self.max_tokens is not None and n > self.max_tokens:
            raise InputTooLarge(
                f"input text: {n} tokens, more than the limit of {self.max_tokens}; send a "
                f"shorter text, or raise the limit (InputLimits(max_tokens=...), ${MAX_TOKENS_ENV})",
                limit=self.max_tokens,
                found=n,
                setting="max_tokens",
            )
