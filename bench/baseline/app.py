"""The stack categorize replaces: a Flask app on gunicorn classifying one image per request.

POST /classify with the encoded image as the request body; answers JSON
{"labels": [{"index", "label", "score"}, ...]} with the top 5 (ties by index).

Preprocessing is exactly the model's documented one (shared/models/PROVENANCE.md)
and nothing else: decode at full resolution (no JPEG draft / DCT scaling),
EXIF transpose, RGB, shorter side to 256 (bilinear, antialiased), center crop
224, /255, mean/std, NCHW float32; softmax; top-5. No storage, no cache.
A Server-Timing header says where the handler's time went.

Settings (environment): CATEGORIZE_MODEL (the .onnx file), CATEGORIZE_LABELS
(one label per line), ORT_INTRA_OP_THREADS (default 1, per worker process).
"""

import io
import os
import time

import numpy as np
import onnxruntime as ort
from flask import Flask, Response, jsonify, request
from PIL import Image, ImageOps

RESIZE_SHORTER = 256
CROP = 224
TOP_K = 5
# x_norm = (x / 255 - mean) / std  ==  x * scale + bias, per channel (RGB), in float32.
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SCALE = (1.0 / (255.0 * _STD)).astype(np.float32)
BIAS = (-_MEAN / _STD).astype(np.float32)

MODEL_PATH = os.environ["CATEGORIZE_MODEL"]
with open(os.environ["CATEGORIZE_LABELS"], encoding="utf-8") as f:
    LABELS = [line.rstrip("\n").split(",")[0].strip() for line in f]

# One session per worker process, created after the fork (post_worker_init in gunicorn.conf.py
# calls init_session): onnxruntime's thread pools do not survive a fork.
_session = None
_input_name = None


def _int8_gemm_saturates() -> bool:
    """True on x86-64 without VNNI: onnxruntime's fast u8s8 kernels saturate there (the same rule as core/cpu-features.ts)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    except OSError:
        pass
    return False


def init_session():
    global _session, _input_name
    opts = ort.SessionOptions()
    # The same answers as categorize: exact int8 sums where the CPU's fast kernels saturate
    # (there, without it, the espresso photo scores 0.64 instead of 0.995). auto | on | off.
    precision = os.environ.get("ORT_X64_QUANT_PRECISION", "auto")
    if precision == "on" or (precision == "auto" and _int8_gemm_saturates()):
        opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "1"))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    _session = ort.InferenceSession(MODEL_PATH, sess_options=opts, providers=["CPUExecutionProvider"])
    _input_name = _session.get_inputs()[0].name
    # First run allocates the arena and picks kernels: do it before the first request.
    _session.run(None, {_input_name: np.zeros((1, 3, CROP, CROP), dtype=np.float32)})


def preprocess(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    img = img.convert("RGB")
    w, h = img.size
    scale = RESIZE_SHORTER / min(w, h)
    rw, rh = max(RESIZE_SHORTER, round(w * scale)), max(RESIZE_SHORTER, round(h * scale))
    left, top = (rw - CROP) // 2, (rh - CROP) // 2
    # resize((rw, rh)) then crop, computed only for the crop: `box` is the crop's area in
    # source pixels, so every output pixel has the same filter centre and support as in
    # the full resize (Pillow clips the support to the image, not to the box).
    sx, sy = w / rw, h / rh
    box = (left * sx, top * sy, (left + CROP) * sx, (top + CROP) * sy)
    img = img.resize((CROP, CROP), Image.Resampling.BILINEAR, box=box)
    hwc = np.asarray(img, dtype=np.float32)
    chw = (hwc * SCALE + BIAS).transpose(2, 0, 1)
    return np.ascontiguousarray(chw)[np.newaxis]


def top_k(logits: np.ndarray, k: int = TOP_K):
    z = logits - logits.max()
    p = np.exp(z)
    p /= p.sum()
    # Highest probability first, ties by class index (np.lexsort sorts by the last key first).
    order = np.lexsort((np.arange(p.size), -p))[:k]
    return [{"index": int(i), "label": LABELS[i], "score": float(p[i])} for i in order]


app = Flask(__name__)


@app.post("/classify")
def classify():
    t0 = time.perf_counter()
    data = request.get_data(cache=False)
    if not data:
        return Response("empty body\n", status=400, mimetype="text/plain")
    try:
        x = preprocess(data)
    except Exception as err:  # Pillow raises many types for bad input
        return Response(f"cannot decode image: {err}\n", status=400, mimetype="text/plain")
    t1 = time.perf_counter()
    (logits,) = _session.run(None, {_input_name: x})
    t2 = time.perf_counter()
    res = jsonify(labels=top_k(logits[0]))
    # Where the time went (body read + decode + resize + normalise / session.run / whole handler).
    ms = lambda a, b: f"{(b - a) * 1000:.2f}"  # noqa: E731
    res.headers["Server-Timing"] = f"preprocess;dur={ms(t0, t1)}, inference;dur={ms(t1, t2)}, total;dur={ms(t0, time.perf_counter())}"
    return res


@app.get("/healthz")
def healthz():
    return Response("ok\n", mimetype="text/plain")
