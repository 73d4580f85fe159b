"""gunicorn settings of the baseline (bench/baseline/app.py).

2 worker processes (one per CPU of the bench machine), each with its own
onnxruntime session created after the fork; the gthread worker keeps HTTP/1.1
connections alive between requests (the sync worker closes every connection),
so the driver's keep-alive connections are served as they are for categorize.
"""

import os

bind = os.environ.get("BASELINE_BIND", "127.0.0.1:0")
workers = int(os.environ.get("BASELINE_WORKERS", "2"))
worker_class = "gthread"
# Requests in progress per worker: decode, resize and session.run release the GIL, so a
# second thread overlaps its request's Python parts with the first one's native work.
threads = int(os.environ.get("BASELINE_THREADS", "4"))
# Longer than the driver's idle time between steps, so a kept-alive connection is not
# closed under a request the driver has just sent.
keepalive = 75
timeout = 120
preload_app = False
accesslog = None
loglevel = "info"
# gunicorn 27 opens a control socket in the home folder by default: not wanted here.
control_socket_disable = True


def post_worker_init(worker):
    # In the worker, after the fork and after the app is imported: its own session.
    import app

    app.init_session()
    worker.log.info("onnxruntime session ready")
