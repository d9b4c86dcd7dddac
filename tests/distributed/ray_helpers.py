"""The fresh-process Ray check of test_ray.py, run in the background.

``test_a_ray_it_started_is_shut_down_after_the_fit`` needs a process of its own (in the
test process the session's Ray would be found and kept): ``owned_ray_check.py`` starts a
Ray through OnRay, fits, and waits until that Ray's processes and files are gone — ~8 s,
nearly all of it Ray starting and stopping. The session's Ray fixture (conftest.py)
starts it as soon as that Ray is up, when the test is among those selected, so that those
seconds pass while other tests run; the test then reads its result (``start`` also starts
it there if nothing did). The process is killed and its directory removed at the end of
the session whatever happened.
"""

import os
import shutil
import subprocess
import sys
import tempfile

TEST = "test_a_ray_it_started_is_shut_down_after_the_fit"


class OwnedRayCheck:
    def __init__(self):
        self.process = None
        self.temp = None

    def start(self):
        if self.process is None:
            self.temp = tempfile.mkdtemp(prefix="ermray", dir="/tmp")  # short: Ray's sockets
            env = {**os.environ, "RAY_TMPDIR": self.temp}
            env.pop("RAY_ADDRESS", None)
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "owned_ray_check.py")
            self.process = subprocess.Popen([sys.executable, script], env=env, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return self

    def result(self, timeout=180):
        """(return code, stdout, stderr) once the check has finished."""
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


OWNED_RAY_CHECK = OwnedRayCheck()
