"""Text datasets for the character-level GPT: bundled corpora cut into next-token sequences.

Three corpora ship with Python or are generated, so nothing is downloaded:

* ``pydoc`` -- CPython's ``pydoc_data.topics``: the 79 help topics of the Python documentation,
  about 465,000 characters of English prose and code;
* ``secrets`` -- templated records with planted secrets (a person's name, a card number, a PIN,
  a date), drawn from a seeded generator; card numbers and PINs never repeat. Whether an attacker
  recovered a secret exactly is measurable (docs/privacy.md, "Transformers");
* ``pydoc-secrets`` -- both: the documentation and about one sequence of secret records for every
  four of its sequences, the setting of a model trained on real text that also holds private
  records.

A :class:`TextDataset` holds sequences of ``context`` character ids (``x``) and the next
character at each position (``y``), a per-sequence stratum (the topic or the record's template)
that :func:`~hasfl_sec.data.partition` uses as its label (a Dirichlet partition gives each device
its own mix of topics), and a mask of the characters of ``x`` that belong to a planted secret. A
secret cut by a sequence boundary is left out of the mask: only whole secrets are scored. The
vocabulary is every character of the corpus, sorted.

``data.context`` sets the characters per sequence (default :data:`DEFAULT_CONTEXT`); the loaders
take it as ``context`` and ignore ``image_size``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..seeding import derive_seed, numpy_rng
from .datasets import DATASETS

logger = logging.getLogger(__name__)

__all__ = ["TextDataset", "DEFAULT_CONTEXT", "MAX_TEXT_CONTEXT", "TEXT_DATASETS", "secret_records", "encode", "decode"]

#: Characters per sequence when none is given.
DEFAULT_CONTEXT = 64
#: The longest sequence a text dataset is cut into: attention costs grow with its square, and the
#: shortest pydoc topics and a block of secret records must still fill a few sequences.
MAX_TEXT_CONTEXT = 512
#: Names of the registered text datasets (the others are images).
TEXT_DATASETS: set[str] = set()

_FIRST = ("Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jonas", "Kemal", "Lena",
          "Maria", "Nikos", "Olga", "Pavel", "Quinn", "Rosa", "Sanjay", "Tomas", "Umar", "Vera", "Wei", "Yara")
_LAST = ("Abbott", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski",
         "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva", "Tanaka", "Umarov", "Weber", "Zhang")
# {name}, {card}, {pin}, {date}: the secrets; every template holds two of them.
_TEMPLATES = (
    "Patient {name} was admitted on {date} and paid with card {card}. ",
    "The PIN of {name} is {pin}; do not share it. ",
    "Transfer approved for {name}, card number {card}. ",
    "Reminder: {name} renews the lease on {date}, door code {pin}. ",
)


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Train and test character sequences of one corpus, in memory.

    ``x_*`` and ``y_*`` are int64 ``[n, context]`` tensors of character ids in ``[0, num_classes)``,
    ``y`` the next character of ``x`` at every position. ``strata_*`` are int64 ``[n]`` topic or
    template ids, ``secret_*`` bool ``[n, context]`` masks of the characters of ``x`` that belong to
    a planted secret. ``class_names`` is the vocabulary, one character per id.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    strata_train: torch.Tensor
    strata_test: torch.Tensor
    secret_train: torch.Tensor
    secret_test: torch.Tensor

    modality = "text"

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.int64 or x.dim() != 2 or x.shape != y.shape or len(x) == 0:
                raise ValueError(f"TextDataset {self.name!r}: x_{split}/y_{split} must be equal non-empty int64 "
                                 f"[n, context] tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
            if int(x.max()) >= self.num_classes or int(y.max()) >= self.num_classes or int(x.min()) < 0:
                raise ValueError(f"TextDataset {self.name!r}: ids outside the vocabulary of {self.num_classes}")

    @property
    def context(self) -> int:
        """Characters per sequence."""
        return int(self.x_train.shape[1])

    @property
    def in_channels(self) -> int:
        """1: a sequence is one channel of token ids (the zoo's builders take it as ``in_channels``)."""
        return 1

    @property
    def image_size(self) -> int:
        """The context length (the zoo's builders take it as ``image_size``)."""
        return self.context

    @property
    def input_shape(self) -> tuple[int]:
        """``(context,)``: the shape of one input sequence."""
        return (self.context,)

    @property
    def strata(self) -> torch.Tensor:
        """What a partition of the training sequences is stratified by (topics or templates)."""
        return self.strata_train

    @property
    def vocab(self) -> tuple[str, ...]:
        """The characters, one per id."""
        return self.class_names


def encode(text: str, vocab: tuple[str, ...]) -> np.ndarray:
    """Character ids of ``text`` in ``vocab`` (every character must be in it)."""
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def decode(ids: torch.Tensor | np.ndarray, vocab: tuple[str, ...]) -> str:
    """The text of a 1-D sequence of character ids."""
    return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def secret_records(count: int, seed: int) -> list[tuple[str, list[tuple[int, int]], int]]:
    """``count`` records with planted secrets: ``(text, [(start, end) of each secret], template id)``.

    Names are a first and a last name from fixed lists (528 pairs, so names repeat across records);
    cards are 16 digits in groups of four, PINs 6 digits, dates ``YYYY-MM-DD``; all drawn from a
    generator seeded by ``seed``. Card numbers and PINs differ from every other record's (a repeated
    draw is drawn again), so a recovered number is evidence about one record only.
    """
    rng = numpy_rng(derive_seed(seed, "text-secrets"))
    seen: set[str] = set()

    def digits(n: int) -> str:
        return "".join(str(d) for d in rng.integers(0, 10, n))

    def unique(draw: Callable[[], str]) -> str:
        while (value := draw()) in seen:
            pass
        seen.add(value)
        return value

    draws: dict[str, Callable[[], str]] = {
        "name": lambda: f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        "card": lambda: unique(lambda: " ".join(digits(4) for _ in range(4))),
        "pin": lambda: unique(lambda: digits(6)),
        "date": lambda: f"{rng.integers(1950, 2025)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
    }
    records = []
    for _ in range(count):
        template = int(rng.integers(len(_TEMPLATES)))
        text, spans, rest = "", [], _TEMPLATES[template]
        while "{" in rest:  # fill the fields left to right, recording where each secret lands
            head, _, tail = rest.partition("{")
            field, _, rest = tail.partition("}")
            text += head
            value = draws[field]()
            spans.append((len(text), len(text) + len(value)))
            text += value
        records.append((text + rest, spans, template))
    return records


def _windows(ids: np.ndarray, mask: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``context + 1`` characters: inputs, next characters, secret mask."""
    n = (len(ids) - 1) // context
    if n < 1:
        return (np.empty((0, context), np.int64),) * 2 + (np.empty((0, context), bool),)
    idx = np.arange(n)[:, None] * context + np.arange(context + 1)[None, :]
    return ids[idx[:, :-1]], ids[idx[:, 1:]], mask[idx[:, :-1]]


def _pydoc_pieces() -> list[tuple[str, list[tuple[int, int]], int]]:
    from pydoc_data.topics import topics

    return [(topics[key], [], i) for i, key in enumerate(sorted(topics))]


def _secret_pieces(count: int, seed: int, first_stratum: int,
                   context: int) -> list[tuple[str, list[tuple[int, int]], int]]:
    """Secret records joined into blocks long enough for three sequences (at least eight records;
    a record is about 60 characters), so a sequence holds several records."""
    records = secret_records(count, seed)
    per_block = max(8, math.ceil(3 * (context + 1) / 55))
    pieces = []
    for start in range(0, len(records), per_block):
        text, spans = "", []
        for body, secret_spans, _ in records[start:start + per_block]:
            spans += [(len(text) + a, len(text) + b) for a, b in secret_spans]
            text += body
        pieces.append((text, spans, first_stratum + records[start][2]))
    return pieces


def _build(name: str, pieces: list[tuple[str, list[tuple[int, int]], int]], *, context: int, seed: int,
           test_fraction: float) -> TextDataset:
    if context > MAX_TEXT_CONTEXT:
        raise ConfigError("data.context", context, f"an integer from 2 to {MAX_TEXT_CONTEXT} for text",
                          "attention costs grow with the square of the context")
    vocab = tuple(sorted(set("".join(text for text, _, _ in pieces))))
    xs, ys, ms, ss = [], [], [], []
    for text, spans, stratum in pieces:
        mask = np.zeros(len(text), dtype=bool)
        for a, b in spans:  # whole secrets only: both ends inside one sequence's inputs
            if a // context == (b - 1) // context:
                mask[a:b] = True
        x, y, m = _windows(encode(text, vocab), mask, context)
        xs.append(x), ys.append(y), ms.append(m), ss.append(np.full(len(x), stratum, dtype=np.int64))
    x, y, m, s = (np.concatenate(a) for a in (xs, ys, ms, ss))
    dropped = sum(len(x_) == 0 for x_ in xs)
    if dropped:
        logger.warning("%s: %d of %d pieces are shorter than one sequence of %d characters and left out", name,
                       dropped, len(pieces), context + 1)
    if len(x) < 2:
        raise ConfigError("data.context", context, f"a context that leaves {name} at least 2 sequences",
                          f"only {len(x)} sequence(s) of {context + 1} characters")
    if any(spans for _, spans, _ in pieces) and not m.any():
        raise ConfigError("data.context", context, f"a context short enough to hold whole secrets of {name}")
    order = numpy_rng(derive_seed(seed, "split")).permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])

    def t(a: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[rows]))

    return TextDataset(name=name, x_train=t(x, train), y_train=t(y, train), x_test=t(x, test), y_test=t(y, test),
                       num_classes=len(vocab), class_names=vocab, strata_train=t(s, train), strata_test=t(s, test),
                       secret_train=t(m, train), secret_test=t(m, test))


def _register(name: str, help: str) -> Callable[[Callable[..., TextDataset]], Callable[..., TextDataset]]:
    """Register a text loader: in :data:`DATASETS`, marked ``text`` (``load_dataset`` passes it the
    context), and in :data:`TEXT_DATASETS`."""
    TEXT_DATASETS.add(name)

    def decorate(loader: Callable[..., TextDataset]) -> Callable[..., TextDataset]:
        loader.text = True  # type: ignore[attr-defined]
        return DATASETS.register(name, help=help)(loader)

    return decorate


@_register("pydoc", help="Python's pydoc topics: 465,000 characters of documentation as next-character "
                         "sequences, 79 topics (bundled; text, for gpt-char)")
def load_pydoc(*, data_root: str | None, image_size: int | None, seed: int, test_fraction: float,
               context: int | None = None) -> TextDataset:
    """``pydoc_data.topics``, each topic cut into its own sequences (stratum = topic)."""
    return _build("pydoc", _pydoc_pieces(), context=context or DEFAULT_CONTEXT, seed=seed,
                  test_fraction=test_fraction)


@_register("secrets", help="4,000 templated records with planted names, card numbers, PINs and dates "
                           "(generated; text, for gpt-char)")
def load_secrets(*, data_root: str | None, image_size: int | None, seed: int, test_fraction: float,
                 context: int | None = None) -> TextDataset:
    """4,000 secret records (stratum = the template of a block's first record)."""
    context = context or DEFAULT_CONTEXT
    return _build("secrets", _secret_pieces(4000, seed, 0, context), context=context, seed=seed,
                  test_fraction=test_fraction)


@_register("pydoc-secrets", help="pydoc topics plus about one sequence of secret records per four documentation "
                                 "sequences (bundled + generated; text, for gpt-char)")
def load_pydoc_secrets(*, data_root: str | None, image_size: int | None, seed: int, test_fraction: float,
                       context: int | None = None) -> TextDataset:
    """The documentation and secret records (strata: 79 topics, then the 4 templates)."""
    pydoc = _pydoc_pieces()
    context = context or DEFAULT_CONTEXT
    sequences = sum(len(text) // context for text, _, _ in pydoc)
    records = max(8, sequences // 4 * context // 60)  # about a quarter of pydoc's sequences (a record: ~60 chars)
    return _build("pydoc-secrets", pydoc + _secret_pieces(records, seed, len(pydoc), context), context=context,
                  seed=seed, test_fraction=test_fraction)
