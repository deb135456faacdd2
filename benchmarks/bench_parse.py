"""Teacher-answer parsing time on hostile answers, against a well-formed answer of the same length.

Prints, per input, the best of 3 times and its ratio to the 50 ms target; then the slowest of 10,000
random bracket/quote soups (seeded). The parser is linear: a hostile answer of N characters costs
about what a well-formed one of N characters does.

    python benchmarks/bench_parse.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_ner.ner.parse import parse_answer  # noqa: E402

TARGET_S = 0.050
PASSAGE = "Barack Obama met Angela Merkel in Berlin in 2009."
INPUTS = {
    "well-formed 180k chars": "[" + '("Berlin", "city"), ' * 9_000 + "]",
    "'[' * 100000": "[" * 100_000,
    "'[a ' * 66000": "[a " * 66_000,
    "'[a ]' * 50000": "[a ]" * 50_000,
    "'[1,' * 66000": "[1," * 66_000,
    "'[\"\\\\' * 60000": '["\\' * 60_000,
}


def best_of(answer: str, n: int = 3) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        parse_answer(answer, PASSAGE)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    for name, answer in INPUTS.items():
        seconds = best_of(answer)
        print(f"{name:26s} {len(answer):7d} chars {seconds * 1000:8.1f} ms  ({seconds / TARGET_S:.2f} x target)")
    rng = random.Random(0)
    soup = "[](){}\"',: \\a1.-\nTN"
    slowest = 0.0
    for _ in range(10_000):
        answer = "".join(rng.choice(soup) for _ in range(rng.randint(0, 300)))
        slowest = max(slowest, best_of(answer, 1))
    print(
        f"{'10,000 random soups':26s} {'<= 300':>7s} chars {slowest * 1000:8.1f} ms slowest "
        f"({slowest / TARGET_S:.2f} x target)"
    )


if __name__ == "__main__":
    main()
