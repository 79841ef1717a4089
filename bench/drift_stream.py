"""Time from the start of a drifted stream to the drift alert, for bench/monitoring.sh.

Sends customers drawn like the churn predictor's training data (model/train.py) from 4 threads,
then doubles every spend, and polls the monitoring report until the alert fires. Bounded: at most
60 s in all. Prints a Markdown paragraph.

    python bench/drift_stream.py DATA_URL ADMIN_URL ADMIN_TOKEN FUNCTION
"""
import json
import sys
import threading
import time
import urllib.request

import numpy as np

url, admin, token, name = sys.argv[1:5]
TIERS = ["basic", "standard", "premium"]
factor = [1.0]
stop = threading.Event()
sent = [0]


def customers(seed):
    rng = np.random.default_rng(seed)
    while True:
        yield {
            "avg_monthly_spend": round(float(rng.lognormal(np.log(60), 0.6)) * factor[0], 2),
            "days_since_last_purchase": round(float(min(rng.exponential(30), 365)), 1),
            "support_tickets_last_30d": int(rng.poisson(0.8)),
            "subscription_tier": str(rng.choice(TIERS, p=[0.5, 0.3, 0.2])),
        }


def client(seed):
    for body in customers(seed):
        if stop.is_set():
            return
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()
        sent[0] += 1


def report():
    request = urllib.request.Request(f"{admin}/admin/v1/functions/{name}/monitor", headers={"authorization": f"Bearer {token}"})
    return json.load(urllib.request.urlopen(request, timeout=5))["versions"][0]


threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(4)]
for t in threads:
    t.start()
deadline = time.monotonic() + 60
time.sleep(12)  # two windows of normal traffic first
normal = report()
assert not normal["alerts"], f"a false alarm on normal traffic: {normal['alerts']}"
factor[0] = 2.0
shifted = time.monotonic()
evaluations_before = normal["drift"]["evaluations"]
while time.monotonic() < deadline:
    now = report()
    fired = [a for a in now["alerts"] if a["state"] == "fired"]
    if fired:
        took = time.monotonic() - shifted
        evaluations = now["drift"]["evaluations"] - evaluations_before
        stop.set()
        print(
            f"Time to alert: with a 10 s window evaluated every 1 s, {took:.1f} s after every spend doubled "
            f"({evaluations} evaluations; the alert needs 3 in a row over the threshold), "
            f"on {', '.join(fired[0]['features'])}; {sent[0]} requests sent in all, "
            f"drift score {now['metrics']['drift_score']:.2f} against {normal['metrics']['drift_score']:.3f} before the shift."
        )
        sys.exit(0)
    time.sleep(0.1)
stop.set()
print("Time to alert: no alert within the time allowed")
sys.exit(1)
