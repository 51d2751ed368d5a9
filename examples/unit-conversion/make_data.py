"""Write this example's rows: unit-conversion requests in plain English and their answers.

    python examples/unit-conversion/make_data.py      # rewrites data/*.jsonl (deterministic, seed 0)

Every answer follows the rules of instructions.md with the factors of conversion_table.md: the
value rounded to two decimals with trailing zeros dropped, a space, the target unit's symbol.
420 rows (320 train / 40 dev / 60 test) plus an 8-row pool of fixed few-shot examples.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# unit -> (symbol, names as a request may spell them, factor to the dimension's base unit)
UNITS = {
    "length": {"mm": ("millimeters", 0.001), "cm": ("centimeters", 0.01), "m": ("meters", 1.0),
               "km": ("kilometers", 1000.0), "in": ("inches", 0.0254), "ft": ("feet", 0.3048),
               "yd": ("yards", 0.9144), "mi": ("miles", 1609.344)},
    "mass": {"mg": ("milligrams", 1e-6), "g": ("grams", 0.001), "kg": ("kilograms", 1.0),
             "t": ("metric tons", 1000.0), "oz": ("ounces", 0.028349523125), "lb": ("pounds", 0.45359237)},
    "volume": {"ml": ("milliliters", 0.001), "l": ("liters", 1.0), "tsp": ("teaspoons", 0.00492892159375),
               "tbsp": ("tablespoons", 0.01478676478125), "cup": ("cups", 0.2365882365),
               "gal": ("gallons", 3.785411784)},
    "time": {"s": ("seconds", 1.0), "min": ("minutes", 60.0), "h": ("hours", 3600.0), "d": ("days", 86400.0)},
    "speed": {"m/s": ("meters per second", 1.0), "km/h": ("kilometers per hour", 1 / 3.6),
              "mph": ("miles per hour", 0.44704), "kn": ("knots", 1852 / 3600)},
    "temperature": {"°C": ("degrees Celsius", None), "°F": ("degrees Fahrenheit", None), "K": ("kelvins", None)},
}

PHRASES = [
    "Convert {v} {a} to {b}.",
    "How many {b} are in {v} {a}?",
    "What is {v} {a} in {b}?",
    "Express {v} {a} in {b}.",
    "{v} {a} is how many {b}?",
    "Please turn {v} {a} into {b}.",
]


def to_kelvin(value: float, unit: str) -> float:
    return {"°C": value + 273.15, "°F": (value - 32) * 5 / 9 + 273.15, "K": value}[unit]


def from_kelvin(value: float, unit: str) -> float:
    return {"°C": value - 273.15, "°F": (value - 273.15) * 9 / 5 + 32, "K": value}[unit]


def convert(value: float, dim: str, a: str, b: str) -> float:
    if dim == "temperature":
        return from_kelvin(to_kelvin(value, a), b)
    return value * UNITS[dim][a][1] / UNITS[dim][b][1]


def fmt(x: float) -> str:
    """Two decimals, trailing zeros and a trailing point dropped, no "-0"."""
    text = f"{round(x, 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def row(rng: random.Random, i: int, split: str) -> dict:
    dim = rng.choice(list(UNITS))
    a, b = rng.sample(list(UNITS[dim]), 2)
    value = rng.choice([rng.randint(1, 100), round(rng.uniform(0.1, 500), rng.choice([1, 2]))])
    if dim == "temperature":
        value = rng.randint(-40, 120) if a != "K" else rng.randint(200, 400)
    phrase = rng.choice(PHRASES)
    request = phrase.format(v=fmt(value), a=UNITS[dim][a][0], b=UNITS[dim][b][0])
    return {"id": i, "request": request[0].upper() + request[1:], "dimension": dim,
            "answer": f"{fmt(convert(value, dim, a, b))} {b}"}


def main() -> None:
    rng = random.Random(0)
    seen: set[str] = set()
    splits = {"train": 320, "dev": 40, "test": 60, "shots": 8}
    for split, n in splits.items():
        rows = []
        while len(rows) < n:
            r = row(rng, len(rows), split)
            if r["request"] not in seen:  # no request in two splits
                seen.add(r["request"])
                rows.append(r)
        path = HERE / "data" / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {n} rows to {path.relative_to(HERE)}")


if __name__ == "__main__":
    main()
