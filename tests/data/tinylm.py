"""A tiny random Llama with a small BPE tokenizer trained on a synthetic English-like corpus.

Shared by tests/data and tests/train (imported by their conftest files): fast, offline, and a
real `transformers` model + fast tokenizer pair, saved as an ordinary local folder.
"""

import random
from pathlib import Path

from tiny_models import tiny_llama
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = (
    "the a king queen sword castle river ship storm night day light dark speaks runs falls rises "
    "sings and but or of to in on with my thy love war peace gold iron old young"
).split()


def write_corpus(folder: Path, n_files: int = 3, words_per_file: int = 1500, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        lines = []
        for _ in range(words_per_file // 10):
            lines.append(" ".join(rng.choice(WORDS) for _ in range(10)) + ".")
        (folder / f"part{i}.txt").write_text("\n".join(lines))
    return folder


def make_tokenizer(corpus: Path) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=96, special_tokens=["<s>", "</s>", "<unk>"], show_progress=False)
    tok.train([str(p) for p in sorted(corpus.glob("*.txt"))], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    return tiny_llama(vocab_size, seed=seed, pad_token_id=None)


def build(root: Path) -> tuple[Path, Path]:
    """(model folder, corpus folder) under root; the model folder also holds the tokenizer."""
    corpus = write_corpus(root / "corpus")
    tokenizer = make_tokenizer(corpus)
    model = make_model(len(tokenizer))
    model_dir = root / "tiny-llama"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir, corpus
