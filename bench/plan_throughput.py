"""`ftbroker plan` throughput and memory against the cookbook-style baseline, in the same run.

    python bench/plan_throughput.py --size-mb 100      # routine
    python bench/plan_throughput.py --size-mb 1000     # the goal's file (made once, cached under bench/out/)
    python bench/plan_throughput.py --via analyze      # data.analyze() with one counter, for reference
    python bench/plan_throughput.py --via validate     # `ftbroker validate FILE --json`

It generates (once, cached under bench/out/) a realistic chat dataset: multi-turn support conversations with
log-normal lengths, several system prompts, tool definitions and calls in about a third of the examples,
``weight: 0`` turns, and text in English, Spanish, German, Russian, Arabic, Chinese, Japanese and emoji. Then
it runs, each in its own process:

* ftbroker: ``ftbroker plan FILE --json`` as a user types it (``--via cli``, the default): validation,
  duplicates, statistics, and every token count its routes need in one pass (o200k_base and cl100k_base
  exact, labelled estimates for the llama3 and qwen2 families and for offers of no known family), the plan of
  every route, its JSON. ``--tokenizer NAME`` passes that flag on (fewer counters). ``--via analyze`` times
  ``ftbroker.data.analysis.analyze`` with the one exact cl100k_base counter; ``--via validate`` the validate command;
* the baseline: ``json.loads`` per line and ``len(enc.encode(value))`` per message value in a Python loop, as
  OpenAI's cookbook notebook counts (3 per message, 3 for priming; tools as their JSON text), cl100k_base.

The goal (issue 2), on this 2-core machine: on the 1 GB file, at least 3x the baseline's MB/s with exact
counts, and peak memory under 300 MB whatever the file size. What the figures measure:

* MB/s: the file's size over the wall-clock time of the whole command, start to exit (imports, loading the
  tokenizer tables, the plan and its JSON included); the ratio divides the two MB/s. Other processes on the
  machine take cores from both runs, and more from ftbroker, which uses both cores: the load average is
  printed before and after, and the CPU-time ratio beside the wall-clock one (user + system seconds of the
  process and its children; less dependent on the load).
* Memory, the goal's measure: the peak over the run of PSS summed over the command's processes (the parent
  and its forked workers), sampled every 0.2 s. PSS counts each physical page once, split between the
  processes that map it, so the sum is the memory the command holds. Also printed: RSS summed, which counts a
  page once per process that maps it, so the interpreter and the tokenizer tables that the workers inherit at
  the fork (shared copy-on-write, never copied) count three times; and the largest single process's RSS.

The start-up time of ``ftbroker --help`` is printed too (goal < 0.3 s).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"

_EN = """
the account order payment refund invoice delivery address password email phone number plan
subscription upgrade downgrade cancel renew card bank transfer charge fee discount code coupon
shipping tracking package warehouse return exchange size colour product item quantity price total
tax receipt store app website login error message screen button setting profile notification update
version device browser cache please thanks sorry help check confirm verify send receive wait minute
hour day week month today tomorrow yesterday customer agent team support ticket issue problem
question answer solution step first next then after before again still already just only also very
really quite about around can could would should will may might must need want try know see look
find get give take make I you we they it this that these those my your our their is are was were be
been have has had do does did not no yes and or but if when because so while with without for from
to in on at by of
""".split()  # noqa: SIM905 - a word list
_ES = """
el la los las un una pedido cuenta pago reembolso factura envío dirección contraseña correo teléfono
plan suscripción tarjeta cargo descuento paquete devolución producto precio tienda aplicación error
mensaje gracias por favor ayuda revisar confirmar esperar hoy mañana cliente equipo problema
pregunta respuesta paso primero después también muy puedo quiero necesito tengo está es son con sin
para de en
""".split()  # noqa: SIM905 - a word list
_DE = """
der die das ein eine Bestellung Konto Zahlung Rückerstattung Rechnung Lieferung Adresse Passwort
Telefon Abonnement Karte Gebühr Rabatt Paket Rücksendung Produkt Preis Geschäft Fehler Nachricht
danke bitte Hilfe prüfen bestätigen warten heute morgen Kunde Problem Frage Antwort Schritt zuerst
danach auch sehr kann möchte brauche habe ist sind mit ohne für von zu in auf über größer schön
""".split()  # noqa: SIM905 - a word list
_RU = """
заказ счёт оплата возврат доставка адрес пароль почта телефон тариф подписка карта банк перевод
скидка промокод посылка товар цена магазин приложение ошибка сообщение спасибо пожалуйста помощь
проверить подтвердить подождать сегодня завтра клиент поддержка проблема вопрос ответ шаг сначала
потом тоже очень могу хочу нужно есть это мой ваш наш не да и или но если когда потому что с без для
""".split()  # noqa: SIM905 - a word list
_AR = """
الطلب الحساب الدفع استرداد الفاتورة التوصيل العنوان كلمة المرور البريد الهاتف الاشتراك البطاقة الخصم
الطرد المنتج السعر المتجر التطبيق خطأ رسالة شكرا من فضلك مساعدة تحقق تأكيد انتظر اليوم غدا العميل
الدعم مشكلة سؤال جواب خطوة أولا ثم أيضا جدا يمكنني أريد أحتاج هذا في على مع بدون إلى من
""".split()  # noqa: SIM905 - a word list
_ZH = (
    "您好请问我的订单什么时候发货退款已经处理账户密码忘记了怎么办支付失败银行卡信用优惠券使用方法地址修改"
    "快递物流查询客服工作时间感谢耐心等待问题解决步骤首先然后设置页面点击按钮确认提交成功错误提示重新登录"
    "会员积分产品质量退换货政策天内无理由价格发票邮箱手机号码验证短信应用程序更新版本"
)
_JA = (
    "こんにちはご注文の商品はいつ届きますか返金手続きアカウントのパスワードを忘れました支払いが失敗しまし"
    "たクレジットカードクーポンの使い方住所変更配送状況お問い合わせありがとうございます少々お待ちください"
    "設定画面ボタンを押して確認してください会員ポイント商品品質返品交換価格請求書メール電話番号アプリ更新"
)
_EMOJI = "😀🙏👍🎉❤️📦🚚💳✅❌⏳🙂😅🔒📱💡"
_LANGS = (("en", 0.52), ("es", 0.08), ("de", 0.07), ("ru", 0.09), ("ar", 0.06), ("zh", 0.11), ("ja", 0.07))
_SYSTEMS = [
    (
        "You are Nova, the customer-support assistant of Lumen Cloud Storage. Answer briefly and "
        "politely, use the customer's language, never invent account data, and call a tool whenever you "
        "need order, billing or account information. If a request needs a human (legal threats, fraud, "
        "data deletion), hand the ticket over."
    ),
    (
        "You are the help-desk agent of Parcelly, an online shop. Be concise. Look orders up with the "
        "tools before answering questions about delivery, returns or refunds. Refunds above 200 EUR need"
        " a supervisor."
    ),
    (
        "Eres el asistente de soporte de TelcoMax. Responde en el idioma del cliente, con pasos "
        "numerados cuando expliques una configuración, y ofrece escalar la incidencia si no se resuelve "
        "en tres intentos."
    ),
    (
        "Вы — ассистент службы поддержки банка «Северный». Отвечайте вежливо и кратко, не запрашивайте "
        "полный номер карты и PIN-код, при подозрении на мошенничество предложите заблокировать карту."
    ),
    "你是「青禾旅行」的在线客服助手。请用客户使用的语言简洁回答，涉及订单、退改签和发票时先调用工具查询。",
]
_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look up an order by its number.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "Order number"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "description": "Refund all or part of an order.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": "Order number"},
                    "amount": {"type": "number", "description": "Amount in the order's currency"},
                    "reason": {
                        "type": "string",
                        "enum": ["damaged", "late", "wrong_item", "other"],
                        "description": "Why the refund is made",
                    },
                },
                "required": ["order_id", "amount"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "track_package",
            "description": "Where a parcel is now.",
            "parameters": {
                "type": "object",
                "properties": {
                    "tracking_number": {"type": "string", "description": "Carrier tracking number"}
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "reset_password",
            "description": "Send a password-reset email.",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string", "description": "Account email"}},
                "required": ["email"],
            },
        },
    },
]


def _words(rng: random.Random, lang: str, n: int) -> str:
    if lang in ("zh", "ja"):
        pool = _ZH if lang == "zh" else _JA
        start = rng.randrange(len(pool))
        chars = (pool[start:] + pool)[: max(2, n * 2)]
        return chars + ("。" if rng.random() < 0.8 else "？")
    pool = {"en": _EN, "es": _ES, "de": _DE, "ru": _RU, "ar": _AR}[lang]
    words = [rng.choice(pool) for _ in range(n)]
    text = " ".join(words)
    if rng.random() < 0.1:
        text += " " + rng.choice(_EMOJI)
    if rng.random() < 0.15:
        text += f" #{rng.randrange(10**5, 10**7)}"
    return text[0].upper() + text[1:] + rng.choice(".?!.")


def _paragraph(rng: random.Random, lang: str, mean_words: float) -> str:
    words = max(2, int(rng.lognormvariate(math.log(mean_words), 0.8)))
    sentences, left = [], words
    while left > 0:
        k = min(left, rng.randint(5, 18))
        sentences.append(_words(rng, lang, k))
        left -= k
    return ("\n" if rng.random() < 0.2 else " ").join(sentences)


def _example(rng: random.Random, i: int) -> dict:
    lang = rng.choices([lang for lang, _ in _LANGS], [w for _, w in _LANGS])[0]
    messages = [{"role": "system", "content": rng.choice(_SYSTEMS)}] if rng.random() < 0.9 else []
    example: dict = {"messages": messages}
    with_tools = rng.random() < 0.33
    if with_tools:
        example["tools"] = rng.sample(_TOOLS, rng.randint(2, 4))
    turns = max(1, min(12, int(rng.lognormvariate(0.8, 0.6))))
    for t in range(turns):
        messages.append({"role": "user", "content": _paragraph(rng, lang, 25)})
        if with_tools and t == 0:
            fn = example["tools"][0]["function"]
            call_id = f"call_{i}_{t}"
            args = {k: f"{rng.randrange(10**6, 10**7)}" for k in fn["parameters"]["properties"]}
            messages.append(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": fn["name"], "arguments": json.dumps(args)},
                        }
                    ],
                }
            )
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": json.dumps(
                        {
                            "status": rng.choice(["shipped", "processing", "delivered"]),
                            "eta_days": rng.randint(1, 9),
                        }
                    ),
                }
            )
        reply = {"role": "assistant", "content": _paragraph(rng, lang, 60)}
        if t < turns - 1 and rng.random() < 0.1:
            reply["weight"] = 0
        messages.append(reply)
    return example


def generate(path: Path, size_mb: float, seed: int = 7) -> None:
    rng = random.Random(seed)
    target = int(size_mb * 1e6)
    tmp = path.with_suffix(".tmp")
    written, i = 0, 0
    with tmp.open("w", encoding="utf-8") as fh:
        while written < target:
            lines = [json.dumps(_example(rng, i + k), ensure_ascii=False) + "\n" for k in range(1000)]
            i += 1000
            chunk = "".join(lines)
            fh.write(chunk)
            written += len(chunk.encode("utf-8"))
    tmp.rename(path)


BASELINE = r"""
import json, sys
from ftbroker.tokens.openai_encodings import shipped_encoding
enc = shipped_encoding("cl100k_base")
examples = total = 0
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        ex = json.loads(line)
        n = 3
        if "tools" in ex:
            n += len(enc.encode(json.dumps(ex["tools"])))
        for m in ex["messages"]:
            n += 3
            for key, value in m.items():
                if isinstance(value, str):
                    n += len(enc.encode(value))
                elif key == "tool_calls":
                    for call in value:
                        fn = call["function"]
                        n += len(enc.encode(fn["name"])) + len(enc.encode(fn["arguments"]))
                if key == "name":
                    n += 1
        examples += 1
        total += n
print(json.dumps({"examples": examples, "total": total}))
"""

ANALYZE = r"""
import json, sys
from ftbroker.data.analysis import analyze
from ftbroker.tokens import openai_encodings
from ftbroker.tokens.resolve import resolve
if sys.argv[2:] == ["--without-fast"]:  # count with tiktoken even where quicktok is installed
    openai_encodings.quicktok_encoding = lambda encoding: None
r = analyze(sys.argv[1], counters=[resolve("cl100k_base")])
s = next(iter(r.tokens.values()))
print(json.dumps({"examples": r.examples, "total": s.total, "errors": len(r.errors)}))
"""


def _run(cmd: list[str]) -> tuple[float, float, str, str]:
    """(wall seconds, CPU seconds, peak memory, stdout) of a command and its children. CPU: user + system time
    of the process and every child it waited for, which the load of other processes does not change.

    Memory, sampled every 0.2 s over the process and its children (the forked workers), three peaks:
    * PSS summed, the goal's measure: each page counted once, a page shared by n processes 1/n in each, so the
      sum is the physical memory the command holds (its share of libraries other programs map too);
    * RSS summed: counts a page every process maps, so the parent's pages that the workers inherit at the fork
      (the interpreter, the tokenizer tables: copy-on-write, never copied) once per process; not memory used;
    * the largest single process's RSS (what ``ps`` and ``/usr/bin/time`` show for one process)."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # output to files, not pipes: a plan's JSON (megabytes) would fill a pipe nobody reads until the end
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, text=True)
        ps, rss, pss, largest = psutil.Process(proc.pid), 0, 0, 0
        while proc.poll() is None:
            try:
                infos = [q.memory_full_info() for q in [ps, *ps.children(recursive=True)]]
                rss, pss = max(rss, sum(i.rss for i in infos)), max(pss, sum(i.pss for i in infos))
                largest = max(largest, *(i.rss for i in infos))
            except psutil.Error:
                pass
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode not in (0, 2):  # 2: a dataset with errors, still analysed
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{err}")
    rss, pss, largest = (round(x / 2**20) for x in (rss, pss, largest))
    memory = f"peak PSS {pss:4d} MB (RSS summed {rss:4d} MB, largest process {largest:3d})"
    return seconds, cpu, memory, out.strip()


def _plan_totals(plan_json: str) -> str:
    """Each counter's total over the file, from the dataset object of a plan's (or validate's) JSON."""
    doc = json.loads(plan_json)
    dataset = doc.get("dataset", doc)
    counts = dataset.get("token_counts") or {}
    totals = ", ".join(f"{key} {c['total']:,}" for key, c in counts.items())
    return f"{dataset['examples']:,} examples, {len(dataset['errors'])} errors; totals: {totals}"


def _has_fast() -> bool:
    import importlib.util

    return importlib.util.find_spec("quicktok") is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument(
        "--via",
        choices=["analyze", "validate", "cli"],
        default="cli",
        help="time `ftbroker plan --json` (cli: the goal's), data.analyze(), or `ftbroker validate --json`",
    )
    ap.add_argument(
        "--tokenizer",
        help="with --via cli: pass `--tokenizer NAME` to plan (fewer counters: open-model routes use NAME)",
    )
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--without-fast",
        action="store_true",
        help="count with tiktoken even where the 'fast' extra is installed",
    )
    args = ap.parse_args()

    OUT.mkdir(exist_ok=True)
    data = OUT / f"chat_{args.size_mb:g}MB.jsonl"
    if not data.exists():
        t = time.perf_counter()
        generate(data, args.size_mb)
        print(f"generated {data} in {time.perf_counter() - t:.0f} s")
    mb = data.stat().st_size / 1e6
    print(
        f"dataset: {data.name}, {mb:,.0f} MB; cpus: {os.cpu_count()}, load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    command = {"cli": ["plan"], "validate": ["validate"]}.get(args.via)
    if command:
        tokenizer = args.tokenizer or ("cl100k_base" if args.via == "validate" else None)
        ours = [sys.executable, "-m", "ftbroker.cli", *command, str(data), "--json"]
        ours += ["--tokenizer", tokenizer] if tokenizer else []
    else:
        ours = [sys.executable, "-c", ANALYZE, str(data), *(["--without-fast"] if args.without_fast else [])]
    t_ours, cpu_ours, mem_ours, out_ours = _run(ours)
    summary = out_ours if args.via == "analyze" else _plan_totals(out_ours)
    counter = "tiktoken" if args.without_fast or not _has_fast() else "quicktok (the 'fast' extra)"
    print(f"exact counts by {counter}")
    speed = f"{t_ours:7.1f} s  {mb / t_ours:6.1f} MB/s  CPU {cpu_ours:6.1f} s"
    print(f"ftbroker ({args.via}): {speed}  {mem_ours}")
    print(f"  {summary}")
    if not args.skip_baseline:
        t_base, cpu_base, mem_base, out_base = _run([sys.executable, "-c", BASELINE, str(data)])
        speed = f"{t_base:7.1f} s  {mb / t_base:6.1f} MB/s  CPU {cpu_base:6.1f} s"
        print(f"baseline:          {speed}  {mem_base}")
        print(f"  {out_base} (cl100k_base, the cookbook's rule)")
        print(
            f"ratio: {t_base / t_ours:.2f}x the baseline's throughput (wall clock); the baseline needs "
            f"{cpu_base / cpu_ours:.2f}x the CPU time"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    runs = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ftbroker.cli", "--help"], check=True, capture_output=True)
        runs.append(time.perf_counter() - t)
    print(
        f"`ftbroker --help` start-up: best {min(runs):.3f} s, median {sorted(runs)[2]:.3f} s (goal < 0.3 s)"
    )


if __name__ == "__main__":
    main()
