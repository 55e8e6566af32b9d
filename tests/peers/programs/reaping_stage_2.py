"""tini test/reaping/stage_2.py, rewritten: start 100 sleeps of 0.2 to 0.7 s and exit,
orphaning them all (kept referenced, so that subprocess never reaps one itself)."""

import random
import subprocess

if __name__ == "__main__":
    started = [subprocess.Popen(["sleep", f"{0.2 + (i % 2) * 0.25 + random.random() * 0.25:.3f}"])
               for i in range(100)]
