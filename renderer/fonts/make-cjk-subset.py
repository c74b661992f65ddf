#!/usr/bin/python3
"""Regenerates renderer/fonts/NotoSansCJKsc-Subset.otf from Debian's fonts-noto-cjk (OFL 1.1).

    apt-get install fonts-noto-cjk python3-fonttools
    /usr/bin/python3 renderer/fonts/make-cjk-subset.py

Keeps what most CJK text needs at a fraction of the 19 MB collection: the 6,763 hanzi of
GB 2312 (levels 1 and 2), the kanji of JIS X 0208 level 1, the 2,350 hangul syllables of
KS X 1001, kana, CJK punctuation, full-width forms and compatibility jamo. The character sets
come from Python's own codecs, so the list is reproducible without a data file.
"""
import sys
from fontTools import subset
from fontTools.ttLib import TTCollection

SOURCE = '/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc'
FONT_NUMBER = 2  # Noto Sans CJK SC inside the collection
OUT = sys.argv[1] if len(sys.argv) > 1 else 'renderer/fonts/NotoSansCJKsc-Subset.otf'


def double_byte(codec, first_lo, first_hi, second_lo=0xA1, second_hi=0xFE):
    chars = set()
    for a in range(first_lo, first_hi + 1):
        for b in range(second_lo, second_hi + 1):
            try:
                chars.add(bytes([a, b]).decode(codec))
            except UnicodeDecodeError:
                pass
    return chars


chars = set()
chars |= double_byte('gb2312', 0xA1, 0xF7)   # GB 2312: symbols + levels 1 and 2 hanzi
chars |= double_byte('euc_jp', 0xA1, 0xCF)   # JIS X 0208: symbols, kana, level 1 kanji
chars |= double_byte('euc_kr', 0xA1, 0xC8)   # KS X 1001: symbols, jamo, 2,350 hangul syllables
ranges = [(0x20, 0x7E), (0x3000, 0x303F), (0x3040, 0x30FF), (0x3130, 0x318F), (0xFF00, 0xFFEF)]
for lo, hi in ranges:
    chars |= {chr(c) for c in range(lo, hi + 1)}

font = TTCollection(SOURCE).fonts[FONT_NUMBER]
options = subset.Options()
options.layout_features = ['*']
options.name_IDs = ['*']
options.name_languages = ['*']
options.notdef_outline = True
options.hinting = False
options.desubroutinize = False
subsetter = subset.Subsetter(options)
subsetter.populate(text=''.join(sorted(chars)))
subsetter.subset(font)
font.save(OUT)
print(f'{OUT}: {len(chars)} characters')
