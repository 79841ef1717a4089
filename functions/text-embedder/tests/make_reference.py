#!/usr/bin/env python3
"""Computes the reference token ids and embeddings the text-embedder must reproduce.

The reference is Hugging Face `tokenizers` with the model's own `tokenizer.json` (truncation at
256 word pieces, as sentence-transformers' all-MiniLM-L6-v2) and Python onnxruntime running the
same `model.onnx`, each text on its own, mean-pooled over its tokens and L2-normalised, as
sentence-transformers does. Writes `reference.json` next to this script:

    {"max_length": 256, "cases": [{"text": ..., "ids": [...], "embedding_e4": [...]}, ...]}

`embedding_e4` is the embedding times 10^4, rounded to integers (to keep the file small): an error
of 5e-5 per component moves a cosine by less than 1e-6, far below the 1e-4 the tests allow.

Run after ./scripts/setup.sh (which fetches the model and tokenizer):
    .venv/bin/pip install tokenizers==0.23.3
    .venv/bin/python functions/text-embedder/tests/make_reference.py
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent / "model"
MAX_LENGTH = 256

# Everyday sentences, and the pair the model card is known by.
PLAIN = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A man is playing guitar.",
    "The new movie is so great.",
    "I love pasta.",
    "Do you like pizza?",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Shipping took three weeks and the box arrived damaged.",
    "Customer support answered within five minutes.",
    "Our quarterly revenue grew by 12% year over year.",
    "Please send the invoice to accounts@example.com by Friday.",
    "The meeting has been moved to 3:30 p.m. on Tuesday.",
    "Turn left at the second traffic light, then continue for 2.5 km.",
    "She sells seashells by the seashore.",
    "It was the best of times, it was the worst of times.",
    "To be, or not to be: that is the question.",
    "All models are wrong, but some are useful.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy.",
    "Machine learning models can drift when the input distribution changes.",
    "Rust guarantees memory safety without a garbage collector.",
    "WebAssembly modules run in a sandbox with linear memory.",
    "The stock market fell sharply after the announcement.",
    "He plays the violin in a string quartet.",
    "Two dogs are running through a field.",
    "A woman is slicing an onion.",
    "Children are playing in the park.",
    "The train to Boston departs at noon.",
    "My flight was delayed by six hours.",
    "This phone's battery lasts all day.",
    "The restaurant was noisy but the food was excellent.",
    "I would not recommend this product to anyone.",
    "Absolutely terrible experience, never again.",
    "The hotel staff were friendly and helpful.",
    "The documentation is incomplete and confusing.",
    "Can you translate this paragraph into French?",
    "What is the capital of Australia?",
    "Canberra is the capital of Australia.",
    "The Pacific is the largest ocean on Earth.",
    "Vaccines train the immune system to recognize pathogens.",
    "The bridge was closed for repairs over the weekend.",
    "Unbelievably, the unbeatable team lost.",
    "Antidisestablishmentarianism is a long word.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is even longer.",
    "Supercalifragilisticexpialidocious!",
    "The results were statistically significant (p < 0.05).",
]

PUNCTUATION = [
    "Hello, world!",
    "Wait... what?!",
    "\"Quoted\" and 'single-quoted' text.",
    "Semi;colons:and,commas.everywhere",
    "(parentheses) [brackets] {braces} <angles>",
    "email: first.last+tag@sub.example.co.uk",
    "https://example.com/path?query=1&other=two#fragment",
    "C:\\Users\\name\\Documents\\file.txt",
    "50% off -- today only!!! $19.99 (was $39.99)",
    "#hashtag @mention ~tilde `backtick` ^caret |pipe| _under_score_",
    "Don't stop; won't stop; can't stop.",
    "rock'n'roll, e-mail, co-operate, mother-in-law",
    "1,000,000.00 and 3.14159 and -42 and +7 and 1e-9",
    "“Curly quotes” and ‘single curly’ and «guillemets» and „low quotes“",
    "An em dash — an en dash – a hyphen - a minus −",
    "Ellipsis… bullet • dagger † section § pilcrow ¶",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Prices: €10, £8, ¥1000, ₹500, ₿0.001",
    "Math: x² + y² = z², ∑ᵢ aᵢ, ∞ ≠ 0, √2 ≈ 1.414",
    "a/b/c\\d|e",
    "!!!???...,,,;;;:::",
    "...",
    "?",
    "Mr. Smith went to Washington, D.C., on Jan. 5th.",
    "i.e., e.g., etc., vs., a.m.",
]

ACCENTS = [
    "Café au lait, crème brûlée, and a piña colada.",
    "Naïve coöperation in the façade of the résumé.",
    "Zoë and Chloë visited São Paulo and Curaçao.",
    "Ångström, Øresund, Æsir, Þórr and Straße.",
    "El niño comió jalapeños en Español.",
    "Dvořák, Janáček and Smetana were Czech composers.",
    "Łódź, Kraków and Gdańsk are Polish cities.",
    "Tiếng Việt có nhiều dấu thanh.",
    "Ελληνικά: Καλημέρα κόσμε!",
    "Русский язык: Привет, мир! Ёлка.",
    "Türkçe: İstanbul, ılık, ÇĞÖŞÜ.",
    "Français: À bientôt, Noël, œuvre, Ÿ.",
    "Combining: e\u0301 a\u0300 o\u0308 n\u0303 (decomposed accents).",
    "Precomposed vs decomposed: é vs e\u0301.",
    "ÀÁÂÃÄÅ àáâãäå ÈÉÊË èéêë ÌÍÎÏ ìíîï",
    "ǅ ǈ ǋ ǲ titlecase digraphs",
    "ﬁ ﬂ ligatures and Ⅻ roman numeral",
    "Fullwidth ＡＢＣ１２３ letters",
    "עברית: שלום עולם",
    "العربية: مرحبا بالعالم، كَتَبَ",
    "हिन्दी: नमस्ते दुनिया",
    "தமிழ்: வணக்கம் உலகம்",
    "ไทย: สวัสดีชาวโลก",
    "ქართული: გამარჯობა",
    "Հայերեն: Բարեւ աշխարհ",
]

CJK = [
    "你好，世界！",
    "我爱自然语言处理。",
    "機械学習は面白いです。",
    "日本語のテキスト：ひらがな、カタカナ、漢字。",
    "한국어 문장입니다. 안녕하세요!",
    "混合 mixed 文本 text 测试 test.",
    "北京是中国的首都。",
    "東京タワーは333メートルです。",
    "中文标点：“引号”、《书名号》、【括号】……",
    "𠀀𠀁 rare CJK extension B characters",
    "㐀㐁 extension A and 豈 compatibility ideograph",
    "今日は良い天気ですね。散歩に行きましょう。",
    "서울의 날씨는 맑습니다.",
    "漢字かな交じり文",
    "粤语：你食咗饭未呀？",
]

EMOJI = [
    "I love this! 😍😍😍",
    "Great job 👍🏽 team 🎉",
    "Family: 👨‍👩‍👧‍👦 and flags 🇺🇸🇯🇵",
    "🤗 Hugging Face emoji",
    "Weather: ☀️ 🌧️ ❄️ ⛈️",
    "Food: 🍕🍔🍟🌮🍣",
    "😂",
    "❤️ heart with variation selector",
    "Keycap 1️⃣ 2️⃣ #️⃣",
    "Astrology ♈ ♉ and chess ♔ ♕ and cards ♠ ♥",
    "The rocket 🚀 launched at 🕛.",
    "Skin tones 👋🏻👋🏼👋🏽👋🏾👋🏿",
    "Newer emoji 🫠 🫶 🥹 🪼",
    "Text :) :( ;-) <3 :D xD",
    "Mixed 👍 good 👎 bad 🤷 meh",
]

WHITESPACE_AND_CONTROL = [
    "",
    " ",
    "   leading and trailing spaces   ",
    "tabs\tbetween\twords",
    "new\nlines\r\nand\rcarriage returns",
    "non\u00a0breaking\u00a0spaces",
    "zero\u200bwidth\u200bspace",
    "zero\u200cwidth\u200dnon-joiner and joiner",
    "soft\u00adhyphen",
    "word\u2028line separator\u2029paragraph separator",
    "bell\u0007 and escape\u001b and delete\u007f characters",
    "null\u0000byte",
    "replacement \ufffd character",
    "byte order mark \ufeff inside",
    "ideographic\u3000space",
    "em\u2003space and thin\u2009space",
    "private use \ue000 character",
    "right-to-left \u202emark\u202c override",
    "\t\n\r",
    "multiple     spaces     between",
]

SPECIAL_TOKENS = [
    "[CLS] literal special tokens [SEP]",
    "[MASK] is a [MASK] token",
    "unknown[UNK]token and [PAD] padding",
    "lowercase [cls] is not special",
    "[ SEP ] with spaces is not special",
    "text[SEP]joined[SEP]together",
]

NUMBERS_AND_CODE = [
    "fn main() { println!(\"Hello, world!\"); }",
    "SELECT * FROM users WHERE id = 42;",
    "def f(x): return x ** 2 + 3 * x - 1",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<div class=\"header\">Title</div>",
    "git commit -m 'fix: handle empty input'",
    "192.168.0.1:8080 and ::1 and fe80::1%eth0",
    "ISBN 978-3-16-148410-0, DOI 10.1000/182",
    "Phone: +1 (555) 123-4567",
    "2026-11-25T13:45:00Z",
    "v1.2.3-beta.4+build.567",
    "0xDEADBEEF 0b1010 0o777",
    "CamelCaseIdentifier snake_case_identifier kebab-case-identifier",
    "ALL CAPS SHOUTING TEXT",
    "MiXeD cAsE tExT",
]

LONG_WORDS = [
    "a" * 99,
    "a" * 100,
    "a" * 101,
    "x" * 150 + " short words after",
    "https://example.com/" + "very-long-path-segment/" * 10,
    "Hyphenated-" * 30 + "end",
    "é" * 101,
    "supercalifragilistic" * 4,
]

# Long inputs: truncation at 256 word pieces.
PARAGRAPH = (
    "Serverless inference platforms keep a pool of model instances warm, route each request to an "
    "instance, and scale the pool with the load. Preprocessing turns raw requests into tensors, the "
    "model computes its outputs, and postprocessing turns those into a response. "
)
LONG = [
    PARAGRAPH * 3,
    PARAGRAPH * 10,
    " ".join(["word"] * 300),
    " ".join(["tokenization"] * 200),
    "。".join(["中文句子"] * 100),
    "😀" * 300,
    "! " * 400,
    " ".join(str(i) for i in range(400)),
    "[SEP] " * 300,
    "Ångström " * 120,
]


def variations() -> list:
    """Programmatic variations of the plain sentences: case, punctuation and spacing."""
    out = []
    for s in PLAIN[:30]:
        out.append(s.upper())
        out.append(s.rstrip(".?!") + "!!!")
    for s in PLAIN[30:50]:
        out.append("  " + s.replace(" ", "  ") + "  ")
    return out


def corpus() -> list:
    texts = (PLAIN + PUNCTUATION + ACCENTS + CJK + EMOJI + WHITESPACE_AND_CONTROL + SPECIAL_TOKENS
             + NUMBERS_AND_CODE + LONG_WORDS + LONG + variations())
    seen, unique = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    return unique


def main() -> None:
    tokenizer = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_LENGTH)
    session = onnxruntime.InferenceSession(str(MODEL / "model.onnx"), providers=["CPUExecutionProvider"])
    cases = []
    for text in corpus():
        ids = tokenizer.encode(text).ids
        input_ids = np.array([ids], dtype=np.int64)
        mask = np.ones_like(input_ids)
        hidden = session.run(
            ["last_hidden_state"],
            {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)},
        )[0][0]
        pooled = hidden.mean(axis=0)
        embedding = pooled / max(np.linalg.norm(pooled), 1e-12)
        cases.append({"text": text, "ids": ids, "embedding_e4": [round(float(x) * 1e4) for x in embedding]})
    out = HERE / "reference.json"
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"max_length": %d, "cases": [\n' % MAX_LENGTH)
        f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
        f.write("\n]}\n")
    print(f"{out}: {len(cases)} texts")


if __name__ == "__main__":
    main()
