"""The tiny model's tokenizer: byte-level BPE merges learned on the caption grammar and Qwen's chat
template until every word is one token, written as a Qwen2-style tokenizer.json (with Qwen's chat special
tokens), and the encoder the trainer uses (the same ids `qdit tokenize --style qwen3` and HF tokenizers give)."""
import json
import os

import scenes


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
HEAD, TAIL = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"  # Qwen3's template, enable_thinking=True
CAP_LEN = 32  # every templated caption fits; Z-Image pads captions to a multiple of 32


def byte_chars():
    """GPT-2's byte -> printable character map, as Qwen2's byte-level BPE uses it."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


BYTE = byte_chars()


def pretokens(text):
    """Qwen2's split regex on text made of lowercase letters, spaces and newlines: a word with its leading
    space, or a run of newlines (the alternatives `[^\\r\\n\\p{L}\\p{N}]?\\p{L}+` and `\\s*[\\r\\n]+`)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        assert ch in "abcdefghijklmnopqrstuvwxyz \n", f"character {ch!r} outside the tiny tokenizer's alphabet"
        j = i
        if ch == "\n":
            while j < len(text) and text[j] == "\n":
                j += 1
        else:
            if ch == " ":
                j += 1
            assert j < len(text) and text[j].isalpha(), f"space not before a word in {text!r}"
            while j < len(text) and text[j].isalpha():
                j += 1
        out.append("".join(BYTE[b] for b in text[i:j].encode()))
        i = j
    return out


def split_specials(text):
    parts, i = [], 0
    while i < len(text):
        hit = min(((text.find(s, i), s) for s in SPECIALS if text.find(s, i) >= 0), default=None)
        if hit is None:
            parts.append(text[i:])
            break
        k, s = hit
        if k > i:
            parts.append(text[i:k])
        parts.append(s)
        i = k + len(s)
    return parts


class Tokenizer:
    def __init__(self, words):
        """Learn merges until every pretoken of `words` (a list of texts) is a single symbol."""
        counts = {}
        for t in words:
            for part in split_specials(t):
                if part in SPECIALS:
                    continue
                for p in pretokens(part):
                    counts[p] = counts.get(p, 0) + 1
        seqs = {w: list(w) for w in counts}
        self.merges = []
        while True:
            pairs = {}
            for w, s in seqs.items():
                for a, b in zip(s, s[1:]):
                    pairs[(a, b)] = pairs.get((a, b), 0) + counts[w]
            if not pairs:
                break
            best = min(pairs, key=lambda p: (-pairs[p], p))
            self.merges.append(best)
            for w, s in seqs.items():
                k, n = 0, []
                while k < len(s):
                    if k + 1 < len(s) and (s[k], s[k + 1]) == best:
                        n.append(s[k] + s[k + 1])
                        k += 2
                    else:
                        n.append(s[k])
                        k += 1
                seqs[w] = n
        self.vocab = {c: i for i, c in enumerate(BYTE)}
        for a, b in self.merges:
            self.vocab.setdefault(a + b, len(self.vocab))
        self.special_ids = {s: len(self.vocab) + i for i, s in enumerate(SPECIALS)}
        self.size = len(self.vocab) + len(SPECIALS)
        self.rank = {m: i for i, m in enumerate(self.merges)}
        self.cache, self.word_cache = {}, {}

    def bpe(self, word):
        if word in self.word_cache:
            return self.word_cache[word]
        s = list(word)
        while len(s) > 1:
            ranks = [(self.rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(s, s[1:]))]
            r, i = min(ranks)
            if r == 1 << 30:
                break
            s[i:i + 2] = [s[i] + s[i + 1]]
        self.word_cache[word] = [self.vocab[t] for t in s]
        return self.word_cache[word]

    def encode(self, prompt):
        """Ids of Qwen3's chat-templated prompt (what Z-Image's pipeline feeds its text encoder)."""
        if prompt in self.cache:
            return self.cache[prompt]
        ids = []
        for part in split_specials(HEAD + prompt + TAIL):
            if part in self.special_ids:
                ids.append(self.special_ids[part])
            else:
                for p in pretokens(part):
                    ids += self.bpe(p)
        self.cache[prompt] = ids
        return ids

    def write(self, path):
        os.makedirs(path, exist_ok=True)
        added = [{"id": self.special_ids[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": s.startswith("<|")} for s in SPECIALS]
        split = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
                 "|\\s+(?!\\S)|\\s+")
        bl = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
        tok = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": False},
                dict(type="ByteLevel", **bl)]},
            "post_processor": dict(type="ByteLevel", **bl), "decoder": dict(type="ByteLevel", **bl),
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": self.vocab,
                      "merges": [[a, b] for a, b in self.merges]},
        }
        write_json(os.path.join(path, "tokenizer.json"), tok)
        template = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
                    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}")
        write_json(os.path.join(path, "tokenizer_config.json"), {
            "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 512, "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
            "bos_token": None, "unk_token": None, "clean_up_tokenization_spaces": False, "chat_template": template,
            "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added}})



def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def all_caption_words():
    """Every word the grammar can produce, in the contexts the template puts them (the BPE training text)."""
    texts = [HEAD + TAIL]
    for c in scenes.COLORS:
        for sh in scenes.SHAPES:
            for sz in scenes.SIZES:
                for p in scenes.POSITIONS:
                    texts.append(HEAD + f"a {sz} {c} {sh} at the {p} and a {sz} {c} {sh} at the {p} on a {c} background" + TAIL)
    return texts


if __name__ == "__main__":  # write the tokenizer to a folder and print the ids of prompts (for tests)
    import sys

    tok = Tokenizer(all_caption_words())
    tok.write(sys.argv[1])
    for p in sys.argv[2:]:
        print(" ".join(map(str, tok.encode(p))))
