"""tini test/reaping/stage_2.py, rewritten: start 100 sleeps of 0.2 to 0.7 s and exit,
orphaning them all."""

import random
import subprocess

if __name__ == "__main__":
    for i in range(100):
        subprocess.Popen(["sleep", f"{0.2 + (i % 2) * 0.25 + random.random() * 0.25:.3f}"])
