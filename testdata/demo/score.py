"""The README's map example: count the words of each document."""

import re

WORD = re.compile(r"[a-z']+")


def score(doc):
    words = WORD.findall(doc["text"].lower())
    return {"id": doc["id"], "words": len(words), "longest": max(words, key=len) if words else None}
