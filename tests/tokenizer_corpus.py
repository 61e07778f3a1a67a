"""Strings that tokenizers get wrong: the corpus every tokenizer test compares on.

HAND is written out; WHITESPACE is runs of spaces and tabs, indentation and line ends,
alone and in code (Gemma has a token for each run of 2..31 spaces, tabs and newlines);
CORPUS adds programmatic combinations (whitespace around words, digit runs, scripts next
to each other) for 600+ strings in all.
"""
from __future__ import annotations

import itertools

HAND = [
    # empty, whitespace
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n", "\n ", "\t\t\tx",
    "trailing space ", "trailing spaces   ", " leading space", "   leading spaces",
    "a  b   c    d", "line one\nline two\n", "crlf line\r\nnext line\r\n", "tab\tseparated\tvalues",
    "mixed \t \n \r\n whitespace", " \t\n", "word\n\n\n\nafter blank lines", "\u00a0non-breaking\u00a0space",
    "ideographic\u3000space", "zero\u200bwidth\u200bspace", "\x0bvertical tab\x0c form feed",
    # English, contractions, case
    "Hello world", "Hello, world!", "hello WORLD Hello", "The quick brown fox jumps over the lazy dog.",
    "it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "It'S mixed'Ll case'Ve", "'s 't 're 've 'm 'll 'd", "rock 'n' roll", "the dogs' bones", "'quoted'",
    "\"double quoted\"", "O'Neil's café", "CamelCaseIdentifier", "snake_case_identifier", "SCREAMING_CASE",
    "e.g. i.e. etc. Mr. Dr.", "Hyphen-ated well-known", "em—dash en–dash", "ellipsis… done",
    # numbers
    "0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "0.5", ".5", "-17", "+3", "1e-9",
    "6.022e23", "1,234,567", "1.234.567,89", "$1,000.00", "€99,99", "100%", "50/50", "3:45pm",
    "2024-01-15T10:30:00Z", "192.168.0.1", "0xDEADBEEF", "0b1010", "v1.2.3", "#123", "No. 5",
    "31415926535897932384626433832795028841971693993751", "007", "1st 2nd 3rd 4th", "１２３ full-width",
    "٣٤٥ Arabic-Indic", "४२ Devanagari digits", "Ⅷ roman", "½ ¾ ²³",
    # code
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "if __name__ == \"__main__\":\n    main()", "const x = () => { return 1; };", "SELECT * FROM t WHERE id = 1;",
    "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); }", "fn main() { println!(\"{}\", 1); }",
    "x += 1; y -= 2; z **= 3", "a != b && c >= d || !e", "lambda x: x**2", "<div class=\"x\">hi</div>",
    "    indented four", "        indented eight", "\tindented tab", "}\n\n\n{", "// comment\n/* block */",
    "import numpy as np\nnp.zeros((3, 4), dtype=np.float32)", "$ echo $HOME && ls -la | grep .py",
    "package main\n\nfunc main() {\n\tfmt.Println(\"go\")\n}", "SELECT name, COUNT(*) FROM users GROUP BY name;",
    "<?php echo 'x'; ?>", "@decorator\nclass A(B, metaclass=M):\n    pass", "~/path/to/file.txt",
    "C:\\Windows\\System32",
    # URLs, JSON, markdown
    "https://example.com/path?q=1&r=two#frag", "http://localhost:8080/", "mailto:someone@example.org",
    "{\"key\": \"value\", \"n\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}", "[]", "{}", "[1,2,3]",
    "# Heading\n\n- item one\n- item two\n\n**bold** and _italic_ and `code`", "```python\nprint(1)\n```",
    "| a | b |\n|---|---|\n| 1 | 2 |", "> quoted line\n>> nested", "[link](https://x.y/z)", "***",
    # emoji
    "😀", "😀😃😄", "I ❤️ NY", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵🇺🇸🇩🇪", "🧑🏿‍🚀 astronaut",
    "emoji at end 🎉", "🎉 emoji at start", "a😀b😃c", "☃ ★ ♫ ✓", "🫠🫶", "keycap 1️⃣ #️⃣",
    # CJK, Japanese, Korean
    "你好，世界！", "中文文本测试。", "我喜欢吃苹果和香蕉", "日本語のテキストです。", "こんにちは世界",
    "カタカナとひらがな", "東京都渋谷区", "한국어 텍스트", "안녕하세요 세계", "漢字かな交じり文", "ｶﾀｶﾅ half-width",
    "混合 mixed 文字 text", "「引用」と『二重』", "中文English混合123",
    # RTL, Indic, Thai, others
    "مرحبا بالعالم", "اللغة العربية جميلة", "שלום עולם", "עברית עם ניקוד: שָׁלוֹם", "नमस्ते दुनिया",
    "हिन्दी भाषा", "สวัสดีชาวโลก", "ภาษาไทยไม่มีช่องว่าง", "Привет, мир!", "Ελληνικά κείμενα",
    "Tiếng Việt có dấu", "Xin chào thế giới", "ქართული", "Հայերեն", "தமிழ்", "বাংলা ভাষা", "Türkçe ğüşıöç",
    "Ærøskøbing Straße", "naïve façade coöperate", "ĲĳŒœ ß ẞ", "مرحبا hello שלום mixed",
    # combining marks
    "e\u0301", "cafe\u0301", "n\u0303o", "a\u0300\u0301\u0302\u0303", "Z\u0351\u0353a\u0357l\u0350g\u0352o",
    "Vie\u0302\u0323t Nam", "Việt Nam", "\u0915\u094d\u0937", "o\u0308\u0304",
    # special-token text, markup lookalikes
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text <|im_end|> more", "<|im_start|><|im_end|>", "<|im_start", "im_start|>", "< |im_start| >",
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "<think>reasoning</think>answer", "<think>", "</think>",
    "<|unknown_special|>", "<<>>", "<|", "|>",
    # odd characters
    "\x00", "\x01\x02\x7f", "\ufeffBOM start", "\ufffd replacement", "\U0001d54f\U0001d552\U0001d55d", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\u202eright-to-left override", "a\u200db", "~!@#$%^&*()_+-=[]{}|;:,.<>?/`", "¡¿", "«»‹›", "©®™",
    "°C ±5 µm", "∑∫∂√∞≠≤≥", "→ ← ↑ ↓ ⇒", "♠♣♥♦",
]

# Source files as people indent them: spaces, tabs, both, trailing blanks, CRLF.
CODE = [
    # Python, four spaces, a blank line inside a function, a trailing space
    "import os\n\n\nclass Config:\n    \"\"\"Settings.\"\"\"\n\n    def __init__(self, path):\n"
    "        self.path = path \n        if not os.path.exists(path):\n            raise OSError(path)\n"
    "\n    def items(self):\n        for line in open(self.path):\n            key, _, value = line.partition('=')\n"
    "            yield key.strip(), value.strip()\n",
    # C, tabs, a continued macro, aligned comments
    "#include <stdlib.h>\n\n#define MAX(a, b) \\\n\t((a) > (b) ? (a) : (b))\n\nstatic int sum(const int *v, size_t n)\n"
    "{\n\tint s = 0;\t\t/* running total */\n\tfor (size_t i = 0; i < n; i++) {\n\t\tif (v[i] < 0)\n"
    "\t\t\tcontinue;\n\t\ts += v[i];\n\t}\n\treturn s;\n}\n",
    # JavaScript, two spaces, CRLF line ends
    "export function debounce(fn, ms) {\r\n  let timer = null;\r\n  return (...args) => {\r\n"
    "    clearTimeout(timer);\r\n    timer = setTimeout(() => {\r\n      fn(...args);\r\n    }, ms);\r\n  };\r\n}\r\n",
    # YAML, nested lists, a comment aligned with spaces
    "version: 2\nservices:\n  web:\n    image: \"nginx:1.25\"\n    ports:\n      - \"80:80\"      # http\n"
    "      - \"443:443\"    # https\n    environment:\n      - KEY=value\n\n  db:\n    image: postgres\n",
    # Makefile, recipes indented with a tab, a variable aligned with spaces
    "CC      ?= cc\nCFLAGS  := -O2 -Wall\n\n.PHONY: all clean\n\nall: app\n\napp: main.o util.o\n"
    "\t$(CC) $(CFLAGS) -o $@ $^\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c $<\n\nclean:\n\trm -f app *.o\n",
    # Go, gofmt tabs with space alignment inside a struct
    "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\ntype Point struct {\n\tX    int    `json:\"x\"`\n"
    "\tY    int    `json:\"y\"`\n\tName string `json:\"name\"`\n}\n\nfunc main() {\n\tif len(os.Args) < 2 {\n"
    "\t\tfmt.Fprintln(os.Stderr, \"usage\")\n\t\tos.Exit(1)\n\t}\n}\n",
    # Mixed tabs and spaces in one indentation, as editors leave it
    "def f():\n\tif x:\n\t    return 1\n    \telse:\n  \t  \treturn 2\n",
    "def f(x):\n    return x",
]


def _whitespace() -> list[str]:
    out = []
    for n in range(1, 41):
        out += [" " * n, "x" + " " * n + "y", " " * n + "x", "x" + " " * n]
    for n in range(1, 34):
        out += ["\t" * n, "\t" * n + "x", "\n" * n, "x" + "\n" * n + "y"]
    for n in (1, 2, 3, 4, 8, 12, 16, 31, 32, 33):
        out += ["\n" + " " * n + "x", "\r\n" + " " * n + "x", " " * n + "\n", "\t" + " " * n + "x",
                " " * n + "\t" + "x", "x" + " " * n + "\t", "\n" + "\t" * n + " " * n + "x"]
    out += ["\r", "\r\r\n", "\r\n" * 5, "a\r\n\r\n\r\nb", "line  \r\nnext\t\r\n", "x \n \n \ny",
            " \t \t ", "\t \t \t", "\n\n\t\t  \n", "end of line   \nnext", "a\u00a0 \u00a0b", "\u3000 \u3000"]
    return out


WHITESPACE = _whitespace() + CODE

_WORDS = ["hello", "World", "don't", "42", "3.14", "日本", "😀", "ñ", "x_y", "<|im_end|>",
          "مرحبا", "👩‍💻", "tab\t", "é"]
_GAPS = ["", " ", "  ", "\n", "\t", " \n ", "\r\n"]


def _generated() -> list[str]:
    out = []
    # Every pair of word kinds, joined by each kind of gap (cycled so the count stays modest).
    gaps = itertools.cycle(_GAPS)
    for a, b in itertools.product(_WORDS, repeat=2):
        out.append(a + next(gaps) + b)
    # Digit runs of every length up to 20, alone and inside words.
    for n in range(1, 21):
        digits = "".join(str((i * 7 + 3) % 10) for i in range(n))
        out += [digits, f"x{digits}y", f" {digits} "]
    # Whitespace runs of growing length in front of, inside and after a word.
    for n in range(1, 9):
        out += [" " * n + "word", "a" + " " * n + "b", "word" + " " * n, "\n" * n + "x", "\t" * n + "y"]
    return out


CORPUS: list[str] = list(dict.fromkeys(HAND + WHITESPACE + _generated()))  # ordered, without repeats
