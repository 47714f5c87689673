"""Text the data makers render or tokenize: document phrases in Chinese and English (the OCR models
are trained for both), and English sentences for the sentence embedder.

The sentences are the first sentences of the docstrings of Python's own standard library (real,
varied technical English that every machine running the benchmark has), plus everyday sentences.
"""

from __future__ import annotations

import importlib
import re

ZH = [
    "北京市海淀区中关村大街27号", "上海市浦东新区世纪大道100号", "广州市天河区体育西路", "深圳市南山区科技园",
    "增值税专用发票", "发票代码", "开票日期", "购买方名称", "销售方名称", "纳税人识别号", "合计金额", "价税合计",
    "会议纪要", "第三季度工作总结", "项目进度报告", "产品使用说明书", "注意事项", "安全警示", "保修条款",
    "请勿在高温环境下使用", "本产品符合国家标准", "生产日期见包装", "保质期十二个月", "储存方法：阴凉干燥处",
    "联系电话", "电子邮箱", "公司地址", "营业执照", "统一社会信用代码", "法定代表人", "注册资本",
    "图书馆开放时间", "周一至周五", "节假日休息", "欢迎光临", "出口", "入口", "停车场", "禁止吸烟",
    "数据分析与机器学习", "人工智能技术的发展", "边缘计算设备", "模型量化与部署", "实验结果表明",
    "表1 实验数据统计", "图2 系统结构示意图", "参考文献", "摘要", "关键词", "引言", "结论与展望",
    "订单编号", "收货地址", "付款方式", "配送时间", "客户服务中心", "退换货政策", "商品名称", "数量", "单价",
    "中华人民共和国", "教育部", "人民银行", "火车站", "飞机场", "医院", "学校", "超市", "银行卡",
]

EN = [
    "INVOICE", "Invoice No. 2024-00183", "Date of issue", "Bill to", "Ship to", "Subtotal", "Total due",
    "Payment terms: 30 days", "Thank you for your business", "Terms and Conditions", "Page 3 of 12",
    "Quarterly Report", "Executive Summary", "Results and Discussion", "Table 2: Latency by model",
    "Figure 4: System overview", "References", "Abstract", "Introduction", "Conclusion",
    "Keep out of reach of children", "Made in China", "Best before: see bottom", "Store in a cool, dry place",
    "Customer Service", "Opening hours", "Monday to Friday", "Emergency Exit", "No Parking", "Welcome",
    "Main Street", "Central Station", "Platform 9", "Departures", "Arrivals", "Gate B12", "Boarding pass",
    "Order confirmation", "Shipping address", "Tracking number", "Return policy", "Product name",
    "Quantity", "Unit price", "Discount", "Tax", "Signature", "Approved by", "Department of Physics",
    "Machine learning on edge devices", "Quantization keeps the task", "Optical character recognition",
]

EVERYDAY = [
    "The train to the airport leaves every twenty minutes.", "Please remember to water the plants while I am away.",
    "She bought fresh bread and cheese at the market this morning.", "The meeting has been moved to Thursday afternoon.",
    "How do I reset my password if I forgot my email address?", "The restaurant around the corner serves excellent noodles.",
    "Heavy rain is expected across the region tomorrow evening.", "He has been learning to play the piano for three years.",
    "Can you recommend a good book about the history of science?", "Our flight was delayed because of fog at the airport.",
    "The children built a sandcastle near the water.", "This laptop battery lasts about ten hours on a single charge.",
    "A cup of coffee costs more here than in my home town.", "The museum is closed on Mondays and public holidays.",
    "I need to buy a new pair of running shoes.", "The doctor told him to get more sleep and drink more water.",
    "The package should arrive within five business days.", "They are planning a trip to the mountains next summer.",
    "The new phone has a better camera and a larger screen.", "My neighbour's dog barks every time the doorbell rings.",
    "The bank will be closed during the national holiday.", "It takes about forty minutes to walk to the city centre.",
    "Please turn off the lights when you leave the room.", "The concert tickets sold out within an hour.",
]


def stdlib_sentences(limit: int = 400) -> list[str]:
    """First sentences of standard-library docstrings, 6 to 40 words, in a fixed order."""
    mods = ["abc", "argparse", "ast", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
            "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fnmatch", "fractions", "functools",
            "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "imaplib", "inspect",
            "ipaddress", "itertools", "json", "logging", "mailbox", "mimetypes", "numbers", "operator", "optparse",
            "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
            "shlex", "shutil", "smtplib", "socket", "sqlite3", "statistics", "string", "struct", "subprocess",
            "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "typing", "unittest",
            "urllib.parse", "uuid", "warnings", "wave", "weakref", "zipfile", "zlib"]
    out: list[str] = []
    seen: set[str] = set()
    for name in mods:
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        objs = [mod] + [getattr(mod, a) for a in sorted(dir(mod)) if not a.startswith("_")]
        for obj in objs:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str) or (obj is not mod and getattr(obj, "__module__", name) != name):
                continue
            text = " ".join(doc.strip().split())
            m = re.match(r"(.+?[.!?])(\s|$)", text)
            if not m:
                continue
            s = m.group(1)
            words = s.split()
            if not 6 <= len(words) <= 40 or "(" in words[0] or s in seen or ">>>" in s:
                continue
            seen.add(s)
            out.append(s)
            if len(out) >= limit:
                return out
    return out


def english_fragments(limit: int = 120, max_chars: int = 26) -> list[str]:
    """Short lines cut from the standard-library sentences at word boundaries (OCR text lines)."""
    out = []
    for s in stdlib_sentences():
        line = ""
        for w in s.split():
            if len(line) + len(w) + 1 > max_chars:
                break
            line = f"{line} {w}".strip()
        if len(line) >= 8:
            out.append(line)
        if len(out) >= limit:
            break
    return out
