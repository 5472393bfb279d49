"""A throwaway single-node SLURM cluster for tests (root, no systemd, no slurmdbd).

Usage::

    from slurm_cluster import SlurmCluster, available

    if not available():
        pytest.skip("SLURM is not installed (bash .ci/install-slurm.sh)")
    with SlurmCluster(tmp_path / "slurm") as cluster:
        subprocess.run([...snakemake --profile profiles/slurm...], env=cluster.env())
        jobs = cluster.jobs_history()          # what SLURM ran, with allocated TRES

What it sets up:
- munged with a fresh key, its socket, pid, log and seed inside ``workdir``;
- slurmctld + slurmd for this host only, state/spool/pid/log paths inside ``workdir``;
- ``/etc/slurm/slurm.conf`` and ``/etc/slurm/gres.conf`` (the jobstep plugin strips
  ``SLURM_CONF``, so the config must sit at the default path). Existing files there are
  moved aside and put back by :meth:`SlurmCluster.stop`;
- ONE fake GPU (``Name=gpu File=/dev/null``): jobs asking ``--gpus=1`` get
  ``CUDA_VISIBLE_DEVICES=0`` and a second 1-GPU job waits for the first;
- no cgroups (proctrack/linuxproc, task/none), no accounting storage, so ``sacct``
  has nothing: use ``slurm-status-command: squeue`` (MinJobAge is 3600).

How the jobs SLURM ran, and the GPUs it allocated, are recorded without accounting
(checked on slurm-wlm 22.05.8):
- ``JobCompType=jobcomp/filetxt`` writes one line per finished job to
  ``<workdir>/jobcomp.txt``: JobId, Name, JobState, Partition, NodeList, ExitCode and
  ``Tres=cpu=..,mem=..,node=..,billing=..``. It does NOT show the GPU: ``gres/gpu`` only
  enters TRES via ``AccountingStorageTRES=gres/gpu``, and slurmctld refuses to start with
  that without slurmdbd ("slurmdbd is required to run with TRES gres/gpu").
- A slurmd ``Epilog`` (``<workdir>/epilog.sh``, run as root on the node after each job)
  appends ``JobId=.. JobGpus=$SLURM_JOB_GPUS`` to ``<workdir>/gpu_alloc.txt``. slurmd sets
  ``SLURM_JOB_GPUS`` from the job's GRES allocation (``0`` for the fake GPU, unset for a
  job without one), so this is SLURM's own, persistent record of the allocated GPU.
- ``scontrol -d show job -o`` keeps finished jobs for MinJobAge=3600 s and shows
  ``JOB_GRES=gpu:1`` (allocated GRES; ``(null)`` without) and ``TresPerJob=gres:gpu:1``
  (the request); while a job runs also ``GRES=gpu:1(IDX:0)``.
:meth:`SlurmCluster.jobs_history` merges the three.

Only processes this class started are ever signalled: the daemons by their pid files,
and job processes (slurmstepd and its descendants) found through a marker variable
set in the daemons' environment.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

SLURM_ETC = Path("/etc/slurm")
SLURM_CONF = SLURM_ETC / "slurm.conf"
GRES_CONF = SLURM_ETC / "gres.conf"
LOCK_FILE = Path(tempfile.gettempdir()) / "fmri_recon_slurm_cluster.lock"
_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
_MARKER = "FMRI_RECON_TEST_SLURM"


def available() -> bool:
    """True when the SLURM daemons, munged and the client commands are on PATH."""
    return all(_which(b) for b in _BINARIES)


def missing_binaries() -> List[str]:
    return [b for b in _BINARIES if not _which(b)]


def _which(name: str) -> Optional[str]:
    # the daemons live in /usr/sbin, which a non-login PATH may lack
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(name, path=path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def _read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _parse_kv(line: str) -> Dict[str, str]:
    """Parse 'Key=Value Key2=Value2' (values without spaces; scontrol -o / jobcomp)."""
    out: Dict[str, str] = {}
    for token in line.split():
        if "=" in token:
            k, v = token.split("=", 1)
            out[k] = v
    return out


def _parse_tres(text: str) -> Dict[str, str]:
    """'cpu=1,mem=500M,node=1,billing=1,gres/gpu=1' -> dict."""
    out: Dict[str, str] = {}
    for part in filter(None, (text or "").split(",")):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


class SlurmCluster:
    """Single-node SLURM with one fake GPU, living in ``workdir``; a context manager.

    Attributes: ``workdir``, ``host`` (node name), ``partition`` (default "test", the
    only and default partition), ``gpus`` (fake GPUs on the node), ``cpus``,
    ``real_memory`` (MiB), ``log_dir`` (slurmctld.log, slurmd.log, munged.log),
    ``jobcomp_path``, ``gpu_alloc_path``, ``conf_path`` (always /etc/slurm/slurm.conf).
    Methods: ``start()``/``stop()`` (or ``with``), ``env()``, ``run(*argv)``, ``squeue()``,
    ``scontrol_jobs()``, ``gpu_allocations()``, ``jobs_history()``, ``daemon_pids()``,
    ``alive()``.
    """

    def __init__(
        self,
        workdir: Path,
        partition: str = "test",
        gpus: int = 1,
        start_timeout: float = 60.0,
    ):
        self.workdir = Path(workdir).resolve()
        self.partition = partition
        self.gpus = gpus
        self.start_timeout = start_timeout
        self.host = socket.gethostname().split(".")[0]
        self.log_dir = self.workdir / "log"
        self.state_dir = self.workdir / "state"
        self.spool_dir = self.workdir / "spool"
        self.run_dir = self.workdir / "run"
        self.munge_dir = self.workdir / "munge"
        self.jobcomp_path = self.workdir / "jobcomp.txt"
        self.gpu_alloc_path = self.workdir / "gpu_alloc.txt"
        self.epilog_path = self.workdir / "epilog.sh"
        self.conf_path = SLURM_CONF
        self.cpus = os.cpu_count() or 1
        try:
            self.cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            pass
        self.real_memory = self._real_memory_mb()
        self._munge_socket_dir: Optional[Path] = None
        self._backups: Dict[Path, Optional[Path]] = {}
        self._lock_fd: Optional[int] = None
        self._started = False
        self._atexit_registered = False
        self._pids: Dict[str, Optional[int]] = {}

    # ------------------------------------------------------------------ paths
    @property
    def munge_socket(self) -> Path:
        assert self._munge_socket_dir is not None
        return self._munge_socket_dir / "munge.socket.2"

    def _pidfile(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def env(self, base: Optional[dict] = None) -> dict:
        """Environment for SLURM client commands (sbatch, squeue, snakemake ...)."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(SLURM_CONF)
        env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
        return env

    @staticmethod
    def _real_memory_mb() -> int:
        total_kb = 0
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    total_kb = int(line.split()[1])
                    break
        total_mb = total_kb // 1024
        # stay well below what slurmd detects, or the node is marked invalid
        return max(256, min(int(total_mb * 0.8), total_mb - 512))

    # --------------------------------------------------------------- lifecycle
    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "SlurmCluster":
        if not available():
            raise RuntimeError(f"SLURM not installed; missing: {', '.join(missing_binaries())}")
        if os.geteuid() != 0:
            raise RuntimeError("SlurmCluster needs root (it writes /etc/slurm and runs the daemons)")
        self._take_lock()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        self._started = True
        for port in (6817, 6818):
            if self._port_in_use(port):
                raise RuntimeError(
                    f"port {port} on 127.0.0.1 is already in use: another slurmctld/slurmd runs here"
                )
        for d in (self.log_dir, self.state_dir, self.spool_dir, self.run_dir, self.munge_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._setup_munge_socket_dir()
        self._write_configs()
        self._start_munged()
        self._start_daemon("slurmctld", ["slurmctld", "-i"])
        self._wait_for(lambda: self._ping_ctld(), "slurmctld to answer", 30)
        self._start_daemon("slurmd", ["slurmd", "-N", self.host])
        self._wait_idle()
        return self

    def stop(self) -> None:
        """Cancel jobs, kill job processes and daemons (by pid file), restore /etc/slurm.

        Safe to call more than once and after a failed start.
        """
        if not self._started:
            return
        self._started = False
        try:
            self._cancel_all_jobs()
            self._kill_job_processes()
            for daemon in ("slurmd", "slurmctld", "munged"):
                self._kill_pidfile(self._pidfile(daemon))
            self._kill_job_processes(everything=True)  # anything orphaned by the daemons
        finally:
            self._restore_configs()
            if self._munge_socket_dir is not None and self._munge_socket_dir != self.munge_dir:
                shutil.rmtree(self._munge_socket_dir, ignore_errors=True)
            self._release_lock()
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False

    def daemon_pids(self) -> Dict[str, Optional[int]]:
        """Pids of munged, slurmctld and slurmd as read from their pid files at start.

        Still returned after stop() (the daemons delete their pid files on exit), so a
        test can check that the processes are gone.
        """
        out = dict(self._pids)
        for d in ("munged", "slurmctld", "slurmd"):
            pid = _read_pid(self._pidfile(d))
            if pid is not None:
                out[d] = pid
        return out

    def alive(self) -> Dict[str, bool]:
        """Whether each daemon started by this cluster is still running."""
        return {d: (p is not None and _pid_alive(p)) for d, p in self.daemon_pids().items()}

    # ------------------------------------------------------------------ query
    def run(self, *args: str, check: bool = True, timeout: float = 20) -> str:
        res = subprocess.run(
            list(args), capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout

    def squeue(self) -> List[Dict[str, str]]:
        """All jobs slurmctld knows (pending, running and finished < MinJobAge = 1 h ago)."""
        out = self.run("squeue", "-h", "--states=all", "-o", "%i|%j|%T|%P|%R")
        jobs = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 5:
                jobs.append(dict(zip(("job_id", "name", "state", "partition", "reason"), parts)))
        return jobs

    def scontrol_jobs(self) -> List[Dict[str, str]]:
        """``scontrol -d show job -o`` as dicts (jobs finished < MinJobAge = 1 h ago included)."""
        out = self.run("scontrol", "-d", "show", "job", "-o", check=False)
        return [_parse_kv(line) for line in out.splitlines() if line.startswith("JobId=")]

    def gpu_allocations(self) -> Dict[str, List[str]]:
        """Job id -> GPU indices SLURM allocated to it, as the slurmd Epilog recorded them.

        ``[]`` for a job that got no GPU. Jobs whose Epilog has not run yet are absent.
        """
        out: Dict[str, List[str]] = {}
        try:
            lines = self.gpu_alloc_path.read_text().splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            rec = _parse_kv(line)
            if rec.get("JobId"):
                out[rec["JobId"]] = [g for g in rec.get("JobGpus", "").split(",") if g]
        return out

    def jobs_history(self, settle: float = 10.0) -> List[Dict[str, object]]:
        """Jobs SLURM finished on this cluster, one dict per job, oldest first.

        Sources, all from SLURM itself (no accounting database needed):
        - ``jobcomp/filetxt`` (``jobcomp_path``): ``job_id``, ``name``, ``state``,
          ``partition``, ``nodes``, ``exit_code``, ``tres`` (allocated cpu/mem/node as a
          dict; it carries no ``gres/gpu``: that TRES needs slurmdbd on 22.05);
        - the slurmd Epilog record (``gpu_alloc_path``): ``gpu_ids`` (allocated GPU
          indices, from ``SLURM_JOB_GPUS``) and ``gpus`` (their count); persistent;
        - ``scontrol -d show job -o`` while slurmctld still holds the job (MinJobAge = 1 h):
          ``job_gres`` (allocated GRES total, e.g. ``"gpu:1"``; None for no GRES or once
          purged), ``tres_per_job`` (the request, e.g. ``"gres:gpu:1"``), ``comment``
          (the snakemake slurm plugin puts ``rule_<name>_wildcards_...`` there).

        ``settle``: wait up to this long for jobs in COMPLETING (Epilog still running).
        """
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            try:
                if not any(j["state"] == "COMPLETING" for j in self.squeue()):
                    break
            except Exception:
                break
            time.sleep(0.3)
        try:
            detail = {j.get("JobId"): j for j in self.scontrol_jobs()}
        except Exception:
            detail = {}
        gpus = self.gpu_allocations()
        history = []
        try:
            lines = self.jobcomp_path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            raw = _parse_kv(line)
            job_id = raw.get("JobId")
            if not job_id:
                continue
            sc = detail.get(job_id, {})
            job_gres = sc.get("JOB_GRES")
            gpu_ids = gpus.get(job_id, [])
            history.append(
                {
                    "job_id": job_id,
                    "name": raw.get("Name"),
                    "state": raw.get("JobState"),
                    "partition": raw.get("Partition"),
                    "nodes": raw.get("NodeList"),
                    "exit_code": raw.get("ExitCode"),
                    "tres": _parse_tres(raw.get("Tres", "")),
                    "gpu_ids": gpu_ids,
                    "gpus": len(gpu_ids),
                    "job_gres": None if job_gres in (None, "", "(null)") else job_gres,
                    "tres_per_job": sc.get("TresPerJob"),
                    "num_tasks": int(sc["NumTasks"]) if sc.get("NumTasks", "").isdigit() else None,
                    "num_nodes": int(sc["NumNodes"]) if sc.get("NumNodes", "").isdigit() else None,
                    "comment": sc.get("Comment"),
                    "raw": raw,
                }
            )
        return history

    # -------------------------------------------------------------- internals
    def _take_lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"another SlurmCluster holds {LOCK_FILE}; only one test cluster can run per machine"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    @staticmethod
    def _port_in_use(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _setup_munge_socket_dir(self) -> None:
        # unix socket paths are limited to 108 bytes
        if len(str(self.munge_dir / "munge.socket.2")) < 100:
            self._munge_socket_dir = self.munge_dir
        else:
            self._munge_socket_dir = Path(tempfile.mkdtemp(prefix="munge-"))
        os.chmod(self._munge_socket_dir, 0o755)

    def slurm_conf_text(self) -> str:
        return f"""\
# written by tests/support/slurm_cluster.py for a throwaway single-node test cluster
ClusterName=fmritest
SlurmctldHost={self.host}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={self.state_dir}
SlurmdSpoolDir={self.spool_dir}
SlurmctldPidFile={self._pidfile('slurmctld')}
SlurmdPidFile={self._pidfile('slurmd')}
SlurmctldLogFile={self.log_dir / 'slurmctld.log'}
SlurmdLogFile={self.log_dir / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp_path}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
# finished jobs stay visible to squeue/scontrol for an hour (a whole test run): the snakemake
# slurm plugin polls with squeue and falls back to sacct (absent here) below 3x its first delay
MinJobAge=3600
KillWait=5
# slurmd runs this as root on the node after every job, with the allocation in its
# environment (SLURM_JOB_GPUS = allocated GPU indices): our record of allocated GPUs
Epilog={self.epilog_path}
InactiveLimit=0
Waittime=0
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""

    def epilog_text(self) -> str:
        # must never fail: a failing Epilog drains the node
        return f"""\
#!/bin/sh
# slurmd Epilog (tests/support/slurm_cluster.py): record the GPUs SLURM allocated to each job.
# SLURM_JOB_GPUS is set by slurmd from the job's GRES allocation (empty: no GPU).
echo "JobId=${{SLURM_JOB_ID}} JobGpus=${{SLURM_JOB_GPUS:-}} CudaVisibleDevices=${{CUDA_VISIBLE_DEVICES:-}} Node=${{SLURMD_NODENAME:-}}" >> {self.gpu_alloc_path} 2>/dev/null
exit 0
"""

    def gres_conf_text(self) -> str:
        # one distinct character device per fake GPU: slurmd refuses a device file named twice
        devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]
        if self.gpus > len(devices):
            raise ValueError(f"gpus={self.gpus}: the test cluster fakes at most {len(devices)} GPUs")
        files = ",".join(devices[:self.gpus])
        return (
            "# fake GPU for tests: File= is required (Count= alone marks the node invalid)\n"
            "AutoDetect=off\n"
            f"NodeName={self.host} Name=gpu File={files}\n"
        )

    def _write_configs(self) -> None:
        SLURM_ETC.mkdir(parents=True, exist_ok=True)
        for path, text in ((SLURM_CONF, self.slurm_conf_text()), (GRES_CONF, self.gres_conf_text())):
            if path not in self._backups:
                if path.exists() or path.is_symlink():
                    backup = path.with_name(f"{path.name}.fmri-test-backup.{os.getpid()}")
                    os.replace(path, backup)
                    self._backups[path] = backup
                else:
                    self._backups[path] = None
            path.write_text(text)
        self.epilog_path.write_text(self.epilog_text())
        os.chmod(self.epilog_path, 0o755)
        # keep a copy next to the logs for debugging
        (self.workdir / "slurm.conf").write_text(self.slurm_conf_text())
        (self.workdir / "gres.conf").write_text(self.gres_conf_text())

    def _restore_configs(self) -> None:
        for path, backup in list(self._backups.items()):
            try:
                if path.exists() or path.is_symlink():
                    path.unlink()
                if backup is not None:
                    os.replace(backup, path)
            except OSError:
                pass
        self._backups.clear()

    def _daemon_env(self) -> dict:
        env = self.env()
        env[_MARKER] = str(self.workdir)
        return env

    def _start_munged(self) -> None:
        key = self.munge_dir / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(1024))
        os.chmod(self.munge_dir, 0o700 if self._munge_socket_dir != self.munge_dir else 0o755)
        cmd = [
            _which("munged"),
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={self._pidfile('munged')}",
            f"--log-file={self.log_dir / 'munged.log'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        ]
        self._spawn("munged", cmd)
        self._wait_for(lambda: self.munge_socket.exists(), "munged socket", 15)
        self._wait_for(lambda: _read_pid(self._pidfile("munged")) is not None, "munged pid file", 15)
        self._pids["munged"] = _read_pid(self._pidfile("munged"))

    def _start_daemon(self, name: str, argv: List[str]) -> None:
        self._spawn(name, [_which(argv[0])] + argv[1:])
        self._wait_for(lambda: _read_pid(self._pidfile(name)) is not None, f"{name} pid file", 20)
        self._pids[name] = _read_pid(self._pidfile(name))

    def _spawn(self, name: str, cmd: List[str]) -> None:
        # the daemons fork into the background; their stdout/stderr go to a log file
        with open(self.log_dir / f"{name}.stdout", "ab") as out:
            res = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self._daemon_env(),
                cwd=self.workdir, timeout=30, start_new_session=True,
            )
        if res.returncode != 0:
            raise RuntimeError(f"{name} failed to start (rc {res.returncode}); {self._log_tail(name)}")

    def _log_tail(self, name: str, n: int = 15) -> str:
        chunks = []
        for f in (self.log_dir / f"{name}.log", self.log_dir / f"{name}.stdout"):
            if f.exists():
                lines = f.read_text(errors="replace").splitlines()[-n:]
                chunks.append(f"--- {f}:\n" + "\n".join(lines))
        return "\n".join(chunks) or f"no log for {name}"

    def _wait_for(self, cond, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except Exception:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def _ping_ctld(self) -> bool:
        return "UP" in self.run("scontrol", "ping", check=False, timeout=10)

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10).strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"node not idle after {self.start_timeout:.0f}s (sinfo says {state!r})\n"
            + self._log_tail("slurmctld") + "\n" + self._log_tail("slurmd")
        )

    def _cancel_all_jobs(self) -> None:
        if _read_pid(self._pidfile("slurmctld")) is None:
            return
        try:
            active = [
                j["job_id"] for j in self.squeue()
                if j["state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED")
            ]
            if not active:
                return
            self.run("scancel", "--full", *active, check=False, timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not any(
                    j["state"] in ("RUNNING", "CONFIGURING", "COMPLETING") for j in self.squeue()
                ):
                    break
                time.sleep(0.5)
        except Exception:
            pass  # the daemons die next anyway

    def _marked_pids(self) -> List[int]:
        """Processes carrying our marker in their environment (daemons, slurmstepd)."""
        marker = f"{_MARKER}={self.workdir}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                pids.append(int(entry.name))
        return pids

    @staticmethod
    def _cmdline(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def _descendants(roots: Iterable[int]) -> List[int]:
        children: Dict[int, List[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
        out, todo = [], list(roots)
        while todo:
            pid = todo.pop()
            for c in children.get(pid, []):
                if c not in out:
                    out.append(c)
                    todo.append(c)
        return out

    def _kill_job_processes(self, everything: bool = False) -> None:
        """Kill slurmstepd processes and all below them (the job's processes).

        ``everything``: any leftover process carrying our marker (e.g. slurmscriptd),
        for the pass after the daemons are gone.
        """
        daemon_pids = {p for p in self.daemon_pids().values() if p}
        stepds = [
            p for p in self._marked_pids()
            if p not in daemon_pids and (everything or self._cmdline(p).startswith("slurmstepd"))
        ]
        # job processes: everything below a slurmstepd (and stepds' own children of slurmd)
        victims = stepds + [p for p in self._descendants(stepds) if p not in daemon_pids]
        self._terminate(victims)

    def _kill_pidfile(self, pidfile: Path) -> None:
        pid = _read_pid(pidfile)
        if pid is None or not _pid_alive(pid):
            return
        # make sure the pid file still names one of ours, not a recycled pid
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return
        if f"{_MARKER}={self.workdir}".encode() not in environ:
            return
        self._terminate([pid])

    @staticmethod
    def _terminate(pids: List[int], grace: float = 5.0) -> None:
        pids = [p for p in pids if _pid_alive(p)]
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.1)
        for p in pids:
            if _pid_alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.05)
