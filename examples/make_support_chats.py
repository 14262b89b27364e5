"""Writes the bundled example datasets under examples/data/ (deterministic: the same files on every run).

    python examples/make_support_chats.py

* ``support_chats.jsonl``: 300 customer-support conversations of "Parcelly", an online shop: one system
  prompt, 1-4 user turns, tool calls (order look-up, parcel tracking, refunds, password resets) answered by
  tool messages in about half of them, and ``weight: 0`` on some earlier assistant turns (kept as context, not
  trained on: the agent's first, unhelpful answer that the customer pushed back on).
* ``support_chats_val.jsonl``: 40 more conversations of the same kind, as a validation split.
* ``support_preferences.jsonl``: 40 preference pairs (for DPO): a helpful answer preferred over a curt one.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data"

SYSTEM = (
    "You are Parcelly's customer-support assistant. Parcelly is an online shop for home and kitchen goods "
    "that ships in the EU. Be friendly and brief, answer in the customer's language, and never guess order "
    "data: look it up with the tools. Refunds over 200 EUR and anything about legal claims go to a human "
    "agent: say so and open a handover."
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look up an order by its number: items, status, dates and amounts.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": "The order number, e.g. PC-104233"}
                },
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "track_parcel",
            "description": "Current position and delivery estimate of a parcel.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "The order number"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "description": "Refund all or part of an order to the original payment method.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": "The order number"},
                    "amount_eur": {"type": "number", "description": "Amount to refund, in euros"},
                    "reason": {
                        "type": "string",
                        "enum": ["damaged", "missing_item", "late", "changed_mind"],
                        "description": "Why the refund is made",
                    },
                },
                "required": ["order_id", "amount_eur", "reason"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_password_reset",
            "description": "Email a password-reset link to the account's address.",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string", "description": "The account's email address"}},
                "required": ["email"],
            },
        },
    },
]

PRODUCTS = [
    ("cast-iron skillet 28 cm", 39.90),
    ("set of 6 linen napkins", 24.50),
    ("stand mixer, 5 l", 249.00),
    ("bamboo cutting board", 18.90),
    ("espresso machine", 329.00),
    ("ceramic dinner plates (4)", 44.00),
    ("wool throw blanket", 59.00),
    ("chef's knife 20 cm", 74.90),
    ("glass storage jars (3)", 21.00),
    ("oak bread bin", 49.00),
    ("cotton bath towels (2)", 32.00),
    ("pour-over coffee kettle", 54.90),
]
CITIES = ["Berlin", "Lyon", "Utrecht", "Vienna", "Milan", "Ghent", "Porto", "Gdansk", "Aarhus", "Valencia"]
NAMES = ["Anna", "Lukas", "Sofia", "Mateo", "Emma", "Noah", "Lea", "Jan", "Chiara", "Tomasz", "Ines", "Oskar"]
TODAY = date(2026, 11, 20)


def _order(rng: random.Random) -> dict:
    item, price = rng.choice(PRODUCTS)
    qty = rng.choice([1, 1, 1, 2])
    placed = TODAY - timedelta(days=rng.randint(2, 20))
    return {
        "order_id": f"PC-{rng.randint(100000, 999999)}",
        "item": item,
        "quantity": qty,
        "total_eur": round(price * qty, 2),
        "placed": placed.isoformat(),
        "city": rng.choice(CITIES),
    }


def _call(rng: random.Random, n: int, name: str, args: dict) -> tuple[dict, str]:
    call_id = f"call_{rng.getrandbits(40):010x}{n}"
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }, call_id


def _tool_round(rng: random.Random, messages: list, name: str, args: dict, result: dict) -> None:
    call, call_id = _call(rng, len(messages), name, args)
    messages.append({"role": "assistant", "tool_calls": [call]})
    messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)})


def _say(messages: list, role: str, content: str, **extra) -> None:
    messages.append({"role": role, **extra, "content": content})


def _where_is_my_parcel(rng: random.Random, m: list) -> None:
    o = _order(rng)
    _say(
        m,
        "user",
        rng.choice(
            [
                (
                    f"Hi, I ordered a {o['item']} on {o['placed']} and it still hasn't arrived. "
                    f"Order {o['order_id']}."
                ),
                f"Where is my order {o['order_id']}? It's been more than a week.",
                (
                    f"Hello! Can you tell me when {o['order_id']} will be delivered? "
                    "I need it before the weekend."
                ),
            ]
        ),
    )
    eta = TODAY + timedelta(days=rng.randint(1, 4))
    status = rng.choice(["in transit", "at the local depot", "out for delivery"])
    scan = f"{o['city']} sorting centre"
    _tool_round(
        rng,
        m,
        "track_parcel",
        {"order_id": o["order_id"]},
        {"status": status, "last_scan": scan, "eta": eta.isoformat()},
    )
    _say(
        m,
        "assistant",
        f"Thanks for waiting! Your {o['item']} is {status} (last scanned at the {scan}) and "
        f"should reach you on {eta:%A %d %B}. You'll get a text with a one-hour window on the day.",
    )
    if rng.random() < 0.5:
        _say(
            m,
            "user",
            rng.choice(
                ["Can the courier leave it with a neighbour if I'm out?", "What if I'm not home that day?"]
            ),
        )
        _say(
            m,
            "assistant",
            "Yes. The link in the delivery text lets you pick a neighbour, a safe place or a "
            "pick-up point until 8 am on the delivery day. If you miss it, the parcel waits at "
            "the nearest pick-up point for 7 days.",
        )


def _damaged_item(rng: random.Random, m: list) -> None:
    o = _order(rng)
    _say(
        m,
        "user",
        rng.choice(
            [
                f"My {o['item']} arrived broken. Order {o['order_id']}. I'd like my money back.",
                f"The {o['item']} from order {o['order_id']} came damaged, the box was crushed. What now?",
            ]
        ),
    )
    if rng.random() < 0.3:  # a first, unhelpful answer the customer pushed back on: context, not trained
        _say(m, "assistant", "Please send the item back and we will look at it.", weight=0)
        _say(m, "user", "I don't want to pay to ship a broken thing back. Can't you just refund?")
    _tool_round(
        rng,
        m,
        "get_order",
        {"order_id": o["order_id"]},
        {"item": o["item"], "quantity": o["quantity"], "total_eur": o["total_eur"], "status": "delivered"},
    )
    total = f"{o['total_eur']:.2f} EUR"
    if o["total_eur"] > 200:
        _say(
            m,
            "assistant",
            f"I'm sorry it arrived damaged. Because the order is {total}, a colleague has to "
            "approve the refund: I've opened a handover and they'll email you within one "
            "working day. You don't need to send anything back; please keep a photo of the "
            "damage.",
        )
        return
    _tool_round(
        rng,
        m,
        "issue_refund",
        {"order_id": o["order_id"], "amount_eur": o["total_eur"], "reason": "damaged"},
        {"refund_id": f"RF-{rng.randint(10000, 99999)}", "status": "approved", "days_to_arrive": 5},
    )
    _say(
        m,
        "assistant",
        f"I'm sorry about that! I've refunded {total} to your original payment method; it "
        "usually shows up within 5 working days. There's no need to return the broken item: "
        "please recycle it.",
    )


def _password(rng: random.Random, m: list) -> None:
    name = rng.choice(NAMES)
    email = f"{name.lower()}.{rng.choice(['m', 'k', 'r', 's'])}@example.com"
    _say(
        m,
        "user",
        rng.choice(
            [
                "I can't log in, it says my password is wrong.",
                "How do I reset my password?",
                "Forgot my password and the reset email never came.",
            ]
        ),
    )
    _say(m, "assistant", "I can send you a reset link. Which email address is on the account?")
    _say(m, "user", f"It's {email}")
    _tool_round(rng, m, "send_password_reset", {"email": email}, {"sent": True})
    _say(
        m,
        "assistant",
        f"Done: a reset link is on its way to {email}. It's valid for 30 minutes. If it isn't in "
        "your inbox in a few minutes, check the spam folder, and make sure mails from "
        "no-reply@parcelly.example aren't blocked.",
    )


def _returns_policy(rng: random.Random, m: list) -> None:
    item, _ = rng.choice(PRODUCTS)
    question = rng.choice(
        [
            f"Can I return a {item} if I don't like it?",
            "What's your return policy?",
            f"I bought a {item} as a gift, can the person I gave it to return it?",
        ]
    )
    _say(m, "user", question)
    gift = " A gift return works the same with the order number, and the refund goes to the buyer."
    _say(
        m,
        "assistant",
        ("Yes: you have" if question.startswith("Can") else "You have")
        + " 30 days from delivery to return anything unused in its original packaging, for any reason. Start "
        "the return under Orders > Return an item; you'll get a free return label by email. Once the parcel "
        "reaches our warehouse, the refund takes 3 to 5 working days." + (gift if "gift" in question else ""),
    )
    if rng.random() < 0.4:
        _say(m, "user", "And if the packaging is already open?")
        _say(
            m,
            "assistant",
            "That's fine as long as the item itself is unused and complete. Opened small "
            "electrical items (like kettles or mixers) can be returned too, but we check that "
            "they work before refunding.",
        )


def _change_address(rng: random.Random, m: list) -> None:
    o = _order(rng)
    number = rng.randint(2, 140)
    street = rng.choice(["Lindenstrasse", "Rue des Lilas", "Via Roma", "Kerkstraat"])
    _say(
        m,
        "user",
        f"I moved last week, can you change the delivery address for {o['order_id']}? The new one is "
        f"{number} {street}, {o['city']}.",
    )
    status = rng.choice(["processing", "shipped"])
    _tool_round(rng, m, "get_order", {"order_id": o["order_id"]}, {"status": status, "item": o["item"]})
    if status == "shipped":
        _say(
            m,
            "assistant",
            "Your parcel has already left our warehouse, so I can't change the address any "
            "more. You can redirect it to a pick-up point near your new home with the link in "
            "the shipping email.",
        )
    else:
        _say(
            m,
            "assistant",
            "Good news: the order hasn't shipped yet. I've asked the warehouse to use the new "
            "address; you'll get a confirmation email within the hour.",
        )


SMALL_TALK = {
    "Do you ship to Switzerland?": (
        "Not yet: we ship to the 27 EU countries only. Switzerland and the UK are planned for next year."
    ),
    "How long does delivery usually take?": (
        "Within your country 2 to 4 working days, elsewhere in the EU 4 to 7. Orders placed before 2 pm "
        "leave the warehouse the same day."
    ),
    "Do you have a physical store?": (
        "We're online only, which keeps prices down. You can return anything within 30 days if it isn't what "
        "you expected."
    ),
    "Can I pay with PayPal?": "Yes: PayPal, cards (Visa, Mastercard, Amex), iDEAL, Bancontact and Klarna.",
    "Is there a discount for first orders?": (
        "Yes: subscribe to the newsletter and you'll get a 10% code for your first order (minimum 30 EUR)."
    ),
}


def _small_talk(rng: random.Random, m: list) -> None:
    question = rng.choice(list(SMALL_TALK))
    _say(m, "user", question)
    _say(m, "assistant", SMALL_TALK[question])


SCENARIOS = [
    (_where_is_my_parcel, 0.14),
    (_damaged_item, 0.14),
    (_password, 0.06),
    (_returns_policy, 0.26),
    (_change_address, 0.06),
    (_small_talk, 0.34),
]


def conversation(rng: random.Random) -> dict:
    messages = [{"role": "system", "content": SYSTEM}]
    for _ in range(rng.choice([1, 1, 1, 1, 2])):
        scenario = rng.choices([s for s, _ in SCENARIOS], [w for _, w in SCENARIOS])[0]
        scenario(rng, messages)
    if rng.random() < 0.3:
        messages.append(
            {
                "role": "user",
                "content": rng.choice(
                    ["Thanks, that's all!", "Great, thank you.", "Perfect, have a nice day."]
                ),
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": rng.choice(
                    ["You're welcome! Have a great day.", "Happy to help. Enjoy your order!"]
                ),
            }
        )
    example: dict = {"messages": messages}
    if any("tool_calls" in m for m in messages):
        example["tools"] = TOOLS
    return example


def preference(rng: random.Random) -> dict:
    chat = conversation(rng)
    plain = [m for m in chat["messages"] if "tool_calls" not in m and m["role"] != "tool"]
    cut = max(i for i, m in enumerate(plain) if m["role"] == "assistant")
    curt = rng.choice(
        ["Check the website.", "Please contact us by email.", "I can't help with that.", "See our FAQ."]
    )
    return {
        "input": {"messages": plain[:cut]},
        "preferred_output": [plain[cut]],
        "non_preferred_output": [{"role": "assistant", "content": curt}],
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, seed, n, make in (
        ("support_chats.jsonl", 1, 300, conversation),
        ("support_chats_val.jsonl", 2, 40, conversation),
        ("support_preferences.jsonl", 3, 40, preference),
    ):
        rng = random.Random(seed)
        rows = []
        seen = set()
        while len(rows) < n:
            line = json.dumps(make(rng), ensure_ascii=False)
            if line not in seen:  # no duplicates in an example set
                seen.add(line)
                rows.append(line)
        (OUT / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
        print(f"wrote {OUT / name}: {n} examples")


if __name__ == "__main__":
    main()
