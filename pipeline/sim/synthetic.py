"""Generators of the built-in synthetic tasks: (input, target) pairs with computed answers.

Each generator is deterministic for its ``random.Random`` and returns ``count`` distinct pairs.
The formats follow the BIG-Bench Hard tasks of the same names.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Pair = tuple[str, str]

_WORD_TEXT = """
abandon absorb acorn admiral agenda alchemy almanac amber anchor anthem apricot arcade archive
armada aroma arrow atlas avenue axiom badge bagel ballad bamboo banner barley basin beacon beetle
bellow bishop blanket blossom bonfire border bouquet bracket breeze bridle brook buckle bundle
cabin cactus canopy canvas carbon cargo carpet castle cedar cellar chalk charter chestnut chimney
cinder citadel clover cobalt comet compass copper corridor cotton crater crimson crystal cushion
dagger dahlia damsel debris decree delta denim desert dialect diesel domino dragon drizzle dune
eagle easel echo eclipse ember emerald empire engine envoy epoch estuary fable falcon feather
fennel ferry fiddle figment filament flannel flint fossil fountain fresco frontier gable galaxy
gallon garnet gazette geyser ginger glacier goblet granite gravel griffin grotto guitar gutter
hammock harbor harvest hazel helmet hermit hickory horizon hostel hybrid iceberg idiom igloo
indigo inkwell island ivory jackal jasmine javelin jester jigsaw journal jungle juniper kayak
kennel kernel kettle keystone kiln kingdom kitten labyrinth ladder lagoon lantern lattice ledger
lemon lexicon lilac linen lobster locket lumber magnet mango marble meadow mercury meteor mingle
mirror mosaic muffin mustard nectar needle nickel nomad nougat novel nutmeg oasis obelisk ocean
olive onyx opal orchard orchid oyster paddle pagoda palette parcel pebble pepper pilgrim pistol
plank plaza pocket pollen portal prairie prism pumpkin quarry quartz quill quiver rabbit radish
raven ribbon riddle rocket saddle saffron salmon satin scarlet scroll seashell sentry sequel
shadow shelter signal silver sketch sonnet sparrow spindle spruce summit tablet talon tangerine
tavern teapot thimble thistle thunder timber topaz torch trellis tulip tundra turret umbrella
unicorn upland urchin valley vapor velvet venture verdict vessel villa violet vortex wagon walnut
warden whisker willow window wizard yacht yarrow yeoman yodel zenith zephyr zigzag zinc zodiac
"""
_WORDS = tuple(_WORD_TEXT.split())

CATEGORIES: dict[str, tuple[tuple[str, str], ...]] = {
    "pieces of furniture": (
        ("chair", "chairs"),
        ("table", "tables"),
        ("bed", "beds"),
        ("couch", "couches"),
        ("desk", "desks"),
        ("stool", "stools"),
        ("dresser", "dressers"),
        ("cabinet", "cabinets"),
        ("bookshelf", "bookshelves"),
        ("wardrobe", "wardrobes"),
    ),
    "musical instruments": (
        ("flute", "flutes"),
        ("piano", "pianos"),
        ("trombone", "trombones"),
        ("violin", "violins"),
        ("accordion", "accordions"),
        ("clarinet", "clarinets"),
        ("drum", "drums"),
        ("trumpet", "trumpets"),
        ("guitar", "guitars"),
        ("cello", "cellos"),
    ),
    "fruits": (
        ("apple", "apples"),
        ("banana", "bananas"),
        ("grape", "grapes"),
        ("peach", "peaches"),
        ("plum", "plums"),
        ("orange", "oranges"),
        ("strawberry", "strawberries"),
        ("raspberry", "raspberries"),
        ("nectarine", "nectarines"),
        ("blackberry", "blackberries"),
    ),
    "vegetables": (
        ("carrot", "carrots"),
        ("onion", "onions"),
        ("potato", "potatoes"),
        ("cabbage", "cabbages"),
        ("yam", "yams"),
        ("turnip", "turnips"),
        ("eggplant", "eggplants"),
        ("cauliflower", "cauliflowers"),
        ("zucchini", "zucchinis"),
    ),
    "animals": (
        ("dog", "dogs"),
        ("cat", "cats"),
        ("rabbit", "rabbits"),
        ("goat", "goats"),
        ("pig", "pigs"),
        ("cow", "cows"),
        ("donkey", "donkeys"),
        ("snake", "snakes"),
        ("frog", "frogs"),
        ("mouse", "mice"),
    ),
}

_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


def distinct(make: Callable[[random.Random], Pair], rng: random.Random, count: int) -> list[Pair]:
    """``count`` pairs from ``make`` with distinct inputs (in generation order)."""
    pairs: dict[str, str] = {}
    for _ in range(count * 50):
        question, target = make(rng)
        pairs.setdefault(question, target)
        if len(pairs) == count:
            return list(pairs.items())
    raise RuntimeError(f"could not generate {count} distinct examples")


# --- arithmetic -------------------------------------------------------------------------------


def _chain_value(values: list[int], ops: list[str]) -> int:
    """Value of ``v0 op0 v1 op1 ...`` with * binding tighter than + and -."""
    terms, signs = [values[0]], [1]
    for op, value in zip(ops, values[1:], strict=True):
        if op == "*":
            terms[-1] *= value
        else:
            terms.append(value)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms, strict=True))


def _arith(rng: random.Random, depth: int) -> tuple[str, int]:
    if depth == 0:
        value = rng.choice([n for n in range(-9, 10) if n != 0])
        return str(value), value
    parts = [_arith(rng, depth - 1 if rng.random() < 0.6 else 0) for _ in range(rng.randint(2, 3))]
    ops = [rng.choice("+-*") for _ in parts[1:]]
    text = parts[0][0] + "".join(f" {op} {p[0]}" for op, p in zip(ops, parts[1:], strict=True))
    return f"({text})", _chain_value([p[1] for p in parts], ops)


def make_arithmetic(rng: random.Random) -> Pair:
    text, value = _arith(rng, 2)
    return f"{text} =", str(value)


# --- word sorting -----------------------------------------------------------------------------


def make_word_sorting(rng: random.Random) -> Pair:
    words = rng.sample(_WORDS, rng.randint(3, 14))
    return (
        "Sort the following words alphabetically: List: " + " ".join(words),
        " ".join(sorted(words)),
    )


# --- boolean expressions ----------------------------------------------------------------------


def _bool_operand(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if roll < 0.25:
        return "not " + _bool_operand(rng, depth)
    if roll < 0.5 and depth > 0:
        return f"( {_bool_chain(rng, depth - 1)} )"
    return rng.choice(["True", "False"])


def _bool_chain(rng: random.Random, depth: int) -> str:
    text = _bool_operand(rng, depth)
    for _ in range(rng.randint(0, 2)):
        text += f" {rng.choice(['and', 'or'])} {_bool_operand(rng, depth)}"
    return text


def evaluate_boolean(expression: str) -> bool:
    """Evaluate ``True``/``False``/``not``/``and``/``or``/parentheses with Python precedence."""
    toks = expression.replace("(", " ( ").replace(")", " ) ").split()
    value, end = _parse_or(toks, 0)
    if end != len(toks):
        raise ValueError(f"trailing tokens in {expression!r}")
    return value


def _parse_or(toks: list[str], i: int) -> tuple[bool, int]:
    value, i = _parse_and(toks, i)
    while i < len(toks) and toks[i] == "or":
        right, i = _parse_and(toks, i + 1)
        value = value or right
    return value, i


def _parse_and(toks: list[str], i: int) -> tuple[bool, int]:
    value, i = _parse_not(toks, i)
    while i < len(toks) and toks[i] == "and":
        right, i = _parse_not(toks, i + 1)
        value = value and right
    return value, i


def _parse_not(toks: list[str], i: int) -> tuple[bool, int]:
    if toks[i] == "not":
        value, i = _parse_not(toks, i + 1)
        return not value, i
    if toks[i] == "(":
        value, i = _parse_or(toks, i + 1)
        return value, i + 1
    return toks[i] == "True", i + 1


def make_boolean_expression(rng: random.Random) -> Pair:
    while True:
        expression = _bool_chain(rng, 2)
        if 4 <= len(expression.split()) <= 16:
            return f"{expression} is", str(evaluate_boolean(expression))


# --- object counting --------------------------------------------------------------------------


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _items(rng: random.Random, nouns: list[tuple[str, str]]) -> tuple[list[str], int]:
    phrases, total = [], 0
    for singular, plural in nouns:
        count = rng.choice([1, 1, 1, 2, 3, 4, 5])
        phrases.append(_article(singular) if count == 1 else f"{_NUMBER_WORDS[count]} {plural}")
        total += count
    return phrases, total


def _listing(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2:
        return f"{phrases[0]} and {phrases[1]}"
    return ", ".join(phrases[:-1]) + f", and {phrases[-1]}"


def make_object_counting(rng: random.Random) -> Pair:
    category = rng.choice(sorted(CATEGORIES))
    wanted = rng.sample(CATEGORIES[category], rng.randint(2, 6))
    others = [n for c in sorted(CATEGORIES) if c != category for n in CATEGORIES[c]]
    distractors = rng.sample(others, rng.choice([0, 0, 1, 2, 3]))
    phrases, total = _items(rng, wanted)
    extra, _ = _items(rng, distractors)
    mixed = phrases + extra
    rng.shuffle(mixed)
    return f"I have {_listing(mixed)}. How many {category} do I have?", str(total)


GENERATORS: tuple[tuple[str, Callable[[random.Random], Pair]], ...] = (
    ("arithmetic", make_arithmetic),
    ("word_sorting", make_word_sorting),
    ("boolean_expressions", make_boolean_expression),
    ("object_counting", make_object_counting),
)
