"""The scene world of qdit's embedded tiny model: coloured shapes on coloured backgrounds, their captions,
a renderer, and the checker that decides whether an image shows what its caption says.

The grammar (every caption the trainer writes, and every prompt the checker parses):
    scene  := object [" and " object] " on a " COLOR " background"
    object := "a " SIZE " " COLOR " " SHAPE " at the " POSITION
The checker here (numpy) is the one the trainer uses to evaluate on the GPU machine; the test suite has the
same algorithm in C (tests/support/scene_check.c). Keep the two and docs/tiny-model.md in step."""
import random

import numpy as np

RES = 128
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "purple": (140, 60, 190), "white": (240, 240, 240), "black": (25, 25, 25), "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 11.0, "large": 19.0}  # half-extent in pixels at 128x128
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
CELL = (0.22, 0.5, 0.78)  # cell centres as fractions of the side
JITTER = 2.0  # pixels of position jitter, either way


def cell_of(position):
    i = POSITIONS.index(position)
    return i // 3, i % 3  # row, column


def object_text(o):
    return f"a {o['size']} {o['color']} {o['shape']} at the {o['position']}"


def caption(scene):
    return " and ".join(object_text(o) for o in scene["objects"]) + f" on a {scene['background']} background"


def parse(text):
    """A caption back into a scene dict; ValueError on anything outside the grammar."""
    if not text.endswith(" background") or " on a " not in text:
        raise ValueError(f"not a scene caption: {text!r}")
    head, bg = text[: -len(" background")].rsplit(" on a ", 1)
    if bg not in COLORS:
        raise ValueError(f"unknown background colour {bg!r}")
    objects = []
    for part in head.split(" and "):
        words = part.split(" ")
        if len(words) < 7 or words[0] != "a" or words[4:6] != ["at", "the"]:
            raise ValueError(f"not an object phrase: {part!r}")
        o = {"size": words[1], "color": words[2], "shape": words[3], "position": " ".join(words[6:])}
        if o["size"] not in SIZES or o["color"] not in COLORS or o["shape"] not in SHAPES or o["position"] not in POSITIONS:
            raise ValueError(f"unknown word in {part!r}")
        objects.append(o)
    if not 1 <= len(objects) <= 2:
        raise ValueError(f"{len(objects)} objects in {text!r}")
    return {"objects": objects, "background": bg}


def compatible(a, b):
    """Two objects may share a scene when their cells differ and, if either is large, are not adjacent."""
    (ra, ca), (rb, cb) = cell_of(a["position"]), cell_of(b["position"])
    if (ra, ca) == (rb, cb):
        return False
    if "large" in (a["size"], b["size"]) and max(abs(ra - rb), abs(ca - cb)) < 2:
        return False
    return True


def random_scene(rng, two_prob=0.5):
    bg = rng.choice(list(COLORS))
    n = 2 if rng.random() < two_prob else 1
    while True:
        objs = []
        for _ in range(n):
            objs.append({"size": rng.choice(list(SIZES)), "color": rng.choice([c for c in COLORS if c != bg]),
                         "shape": rng.choice(SHAPES), "position": rng.choice(POSITIONS)})
        if n == 1 or compatible(objs[0], objs[1]):
            return {"objects": objs, "background": bg}


def heldout_prompts(count=60, seed=20261129):
    """The fixed held-out prompt set: 60 captions (16 of them with two objects) the trainer never shows the model."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < count:
        s = random_scene(rng, two_prob=0.5 if len(out) % 2 else 0.0)
        c = caption(s)
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def drawn_prompts(count, seed):
    """`count` distinct captions drawn like the training scenes, none of them held out."""
    rng, held = random.Random(seed), set(heldout_prompts())
    out = []
    while len(out) < count:
        c = caption(random_scene(rng))
        if c not in held and c not in out:
            out.append(c)
    return out


def validation_prompts():
    """Prompts for choosing inference settings and between training runs, so that the held-out set is
    only ever used to report."""
    return drawn_prompts(60, 99)


def calibration_prompts():
    """Prompts for calibrating quantized checkpoints of the tiny model (`qdit convert ... --calibrate`)."""
    return drawn_prompts(16, 7)


# ---- rendering (numpy, 4x supersampled; the trainer has a batched torch twin) ----

def shape_mask(shape, cx, cy, r, xs, ys):
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    # triangle, apex up: base at cy + r, apex at cy - r
    return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)


def render(scene, rng=None, res=RES, ss=4):
    n = res * ss
    c = (np.arange(n) + 0.5) / ss
    xs, ys = np.meshgrid(c, c)
    img = np.empty((n, n, 3), np.float32)
    img[:] = COLORS[scene["background"]]
    for o in scene["objects"]:
        row, col = cell_of(o["position"])
        jx, jy = (rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER)) if rng else (0.0, 0.0)
        m = shape_mask(o["shape"], CELL[col] * res + jx, CELL[row] * res + jy, SIZES[o["size"]], xs, ys)
        img[m] = COLORS[o["color"]]
    return img.reshape(res, ss, res, ss, 3).mean(axis=(1, 3)).round().clip(0, 255).astype(np.uint8)


# ---- the checker ----

FG_DIST = 60.0  # a pixel belongs to the foreground when this far (RGB) from the background colour
MIN_AREA = 40  # components smaller than this are noise


def nearest_color(rgb):
    return min(COLORS, key=lambda k: sum((float(a) - b) ** 2 for a, b in zip(rgb, COLORS[k])))


def components(mask):
    """4-connected components of a boolean mask: a list of (ys, xs) index arrays."""
    h, w = mask.shape
    label = np.zeros((h, w), np.int32)
    out = []
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or label[y0, x0]:
                continue
            label[y0, x0] = len(out) + 1
            stack, ys, xs = [(y0, x0)], [], []
            while stack:
                y, x = stack.pop()
                ys.append(y), xs.append(x)
                for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not label[ny, nx]:
                        label[ny, nx] = len(out) + 1
                        stack.append((ny, nx))
            out.append((np.array(ys), np.array(xs)))
    return out


def describe(img):
    """What the checker sees in an RGB uint8 image [H, W, 3]: (background name, list of objects)."""
    h, w, _ = img.shape
    f = img.astype(np.float32)
    border = np.concatenate([f[:2].reshape(-1, 3), f[-2:].reshape(-1, 3), f[:, :2].reshape(-1, 3), f[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    mask = np.sqrt(((f - bg) ** 2).sum(-1)) > FG_DIST
    objs = []
    for ys, xs in components(mask):
        area = len(ys)
        if area < MIN_AREA:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        bh, bw = y1 - y0 + 1, x1 - x0 + 1
        fill = area / float(bh * bw)
        rel_cy = (ys.mean() - y0 + 0.5) / bh
        if fill >= 0.88:
            shape = "square"
        elif fill >= 0.66:
            shape = "circle"
        else:
            shape = "triangle" if rel_cy > 0.58 else "diamond"
        r_mid = np.sqrt(SIZES["small"] * SIZES["large"])
        k = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5, "diamond": 0.5}[shape]
        size = "large" if area > k * (2 * r_mid) ** 2 else "small"
        cx, cy = xs.mean() / w, ys.mean() / h
        col = 0 if cx < 0.36 else 2 if cx > 0.64 else 1
        row = 0 if cy < 0.36 else 2 if cy > 0.64 else 1
        color = nearest_color(np.median(f[ys, xs], axis=0))
        objs.append({"size": size, "color": color, "shape": shape, "position": POSITIONS[row * 3 + col]})
    return nearest_color(bg), objs


def check(img, text):
    """(accepted, reason): does the image show exactly the objects and background the caption names?"""
    want = parse(text)
    bg, objs = describe(img)
    if bg != want["background"]:
        return False, f"background {bg}"
    if len(objs) != len(want["objects"]):
        return False, f"{len(objs)} objects: " + "; ".join(object_text(o) for o in objs)
    keys = ("size", "color", "shape", "position")
    orders = [objs] if len(objs) == 1 else [objs, objs[::-1]]
    for got in orders:
        if all(all(g[k] == w[k] for k in keys) for g, w in zip(got, want["objects"])):
            return True, "ok"
    return False, "saw " + "; ".join(object_text(o) for o in objs)


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "--heldout":
        print("\n".join(heldout_prompts()))
    elif len(sys.argv) > 1 and sys.argv[1] == "--validation":
        print("\n".join(validation_prompts()))
    elif len(sys.argv) > 1 and sys.argv[1] == "--calibration":
        print("\n".join(calibration_prompts()))
    else:  # self-test: rendered scenes pass, their perturbations fail
        rng = random.Random(1)
        ok = 0
        for i in range(200):
            s = random_scene(rng)
            img = render(s, rng)
            good, why = check(img, caption(s))
            ok += good
            if not good:
                print("FAIL", caption(s), why)
        print(f"{ok}/200 rendered scenes accepted")
