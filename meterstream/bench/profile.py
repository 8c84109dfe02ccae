"""Where the cycles go: CPU time per JVM thread, per service process and for the whole machine.

Read from /proc (Linux), so it costs nothing while the job runs. Java thread names come from
`jcmd <pid> Thread.print` (each thread's `nid` is its Linux thread id).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

#: tid -> (thread name, CPU seconds so far)
ThreadCpu = dict[int, tuple[str, float]]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JCMD_THREAD = re.compile(r'^"(?P<name>[^"]*)".*\bnid=(?P<nid>0x[0-9a-f]+|\d+)', re.MULTILINE)
#: Subtask suffixes and counters that make one logical thread look like many.
THREAD_NUMBERS = re.compile(r"\s*\(\d+/\d+\)#\d+|-\d+$|#\d+$|\[\d+\]")
#: /proc/<pid>/stat fields after the `comm`: utime and stime are fields 14 and 15 (1-based).
UTIME_AFTER_COMM = 11


def _stat_cpu(stat_text: str) -> tuple[str, float]:
    comm = stat_text[stat_text.index("(") + 1 : stat_text.rindex(")")]
    rest = stat_text[stat_text.rindex(")") + 2 :].split()
    ticks = int(rest[UTIME_AFTER_COMM]) + int(rest[UTIME_AFTER_COMM + 1])
    return comm, ticks / CLOCK_TICKS


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, or None if it is gone."""
    try:
        return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())[1]
    except (OSError, ValueError, IndexError):
        return None


def thread_cpu(pid: int) -> ThreadCpu:
    """CPU seconds of every thread of a process (names are the kernel's 15-character ones)."""
    out: ThreadCpu = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out[int(task.name)] = _stat_cpu((task / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Every descendant of a process."""
    kids: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2 :].split()
        kids[int(rest[1])].append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            found.append(kid)
            todo.append(kid)
    return found


def jvm_pid(client_pid: int) -> int | None:
    """The JVM a PyFlink client process started (its gateway and mini cluster)."""
    for pid in children(client_pid):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.endswith("/java"):
            return pid
    return None


def java_thread_names(pid: int) -> dict[int, str]:
    """Linux thread id -> full Java thread name, from `jcmd Thread.print` ({} without jcmd)."""
    jcmd = shutil.which("jcmd")
    if jcmd is None:
        return {}
    result = subprocess.run(
        [jcmd, str(pid), "Thread.print"], capture_output=True, text=True, check=False, timeout=30
    )
    names: dict[int, str] = {}
    for match in JCMD_THREAD.finditer(result.stdout):
        nid = match["nid"]
        names[int(nid, 16) if nid.startswith("0x") else int(nid)] = match["name"]
    return names


def thread_group(name: str) -> str:
    """One label for threads that do the same work (subtask numbers and counters removed).

    >>> thread_group("Source: raw_events[1] -> Calc[2] (2/2)#0")
    'Source: raw_events -> Calc'
    >>> thread_group("kafka-producer-network-thread | producer-3")
    'kafka-producer-network-thread | producer'
    """
    return THREAD_NUMBERS.sub("", name).strip()


def cpu_by_thread(
    first: ThreadCpu, last: ThreadCpu, names: dict[int, str], seconds: float
) -> list[tuple[str, float]]:
    """Share of one core each thread group used between two snapshots, largest first."""
    groups: dict[str, float] = defaultdict(float)
    for tid, (comm, cpu) in last.items():
        before = first.get(tid, (comm, 0.0))[1]
        label = thread_group(names.get(tid, comm))
        if label.startswith("C2 CompilerThre") or label.startswith("C1 CompilerThre"):
            label = "JIT compiler"
        elif label.startswith("GC Thread") or label.startswith("G1 "):
            label = "garbage collector"
        groups[label] += cpu - before
    used = sorted(groups.items(), key=lambda kv: -kv[1])
    return [(label, cpu / seconds) for label, cpu in used if cpu / seconds >= 0.005]  # noqa: PLR2004


def service_pids(stack_dir: Path) -> dict[str, list[int]]:
    """The local stack's Kafka broker and PostgreSQL processes (by pid file and children)."""
    out: dict[str, list[int]] = {}
    kafka_pid = stack_dir / "run" / "kafka.pid"
    if kafka_pid.exists():
        pid = int(kafka_pid.read_text().strip())
        out["kafka broker"] = [pid, *children(pid)]
    pg_pid = stack_dir / "postgres" / "data" / "postmaster.pid"
    if pg_pid.exists():
        pid = int(pg_pid.read_text().splitlines()[0])
        out["postgresql"] = [pid, *children(pid)]
    return out


def pids_cpu(pids: list[int]) -> float:
    """Sum of CPU seconds of processes (those gone count 0)."""
    return sum(cpu for pid in pids if (cpu := process_cpu(pid)) is not None)


#: Linux thread names of Flink task threads end in "(subtask/parallelism)#attempt".
TASK_THREAD = re.compile(r"\(\d+/\d+\)#\d+$")
JCMD_BLOCK = re.compile(r'^"(?P<name>[^"]*)".*?(?=^"|\Z)', re.MULTILINE | re.DOTALL)
FRAME = re.compile(r"^\s+at ([\w$./]+)\.([\w$<>]+)\(", re.MULTILINE)


def classify_stack(frames: list[str]) -> str:
    """What a task thread was doing, from its top Java frames (class.method, innermost first).

    >>> classify_stack(["jdk.internal.misc.Unsafe.park", "o.a.f.TaskMailboxImpl.take"])
    'idle: waiting for input'
    >>> classify_stack(["org.rocksdb.RocksDB.get", "org.rocksdb.RocksDB.get"])
    'RocksDB get'
    """
    joined = " ".join(frames)
    if "TaskMailboxImpl.take" in joined:
        return "idle: waiting for input"
    if "LocalBufferPool" in joined or "requestMemorySegmentBlocking" in joined:
        return "back-pressured: waiting for output buffers"
    for frame in frames[:3]:
        if ".rocksdb." in frame:
            return "RocksDB " + frame.rsplit(".", 1)[-1]
    if "pemja" in joined.lower():
        return "Python UDF (PemJa call)"
    return frames[0].rsplit(".", 2)[-2] + "." + frames[0].rsplit(".", 1)[-1] if frames else "?"


def java_stacks(
    pid: int, samples: int = 12, interval_s: float = 0.5
) -> dict[str, list[tuple[str, float]]]:
    """Sample the task threads' Java stacks with jcmd: share of samples per activity.

    Subtasks of the same chain (parallelism > 1) are one label; shares are per thread.
    """
    jcmd = shutil.which("jcmd")
    if jcmd is None:
        return {}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    threads: dict[str, set[str]] = defaultdict(set)
    taken = 0
    for _ in range(samples):
        result = subprocess.run(
            [jcmd, str(pid), "Thread.print"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            break
        taken += 1
        for block in JCMD_BLOCK.finditer(result.stdout):
            name = block["name"]
            if not TASK_THREAD.search(name) or "Time Trigger" in name or "OutputFlusher" in name:
                continue
            frames = [f"{m[1]}.{m[2]}" for m in FRAME.finditer(block.group(0))][:12]
            counts[thread_group(name)][classify_stack(frames)] += 1
            threads[thread_group(name)].add(name)
        time.sleep(interval_s)
    # Subtasks of one operator chain share a label: shares are per thread, averaged.
    return {
        thread: sorted(
            ((what, n / (taken * len(threads[thread]))) for what, n in kinds.items()),
            key=lambda kv: -kv[1],
        )
        for thread, kinds in counts.items()
    }


def python_profile(pid: int, seconds: float) -> list[tuple[str, float]] | None:
    """Python functions in the job's JVM (thread-mode UDFs) by share of samples, with py-spy.

    Inclusive shares of the samples of the threads that have a Python interpreter state (the
    task thread calling the UDF); None without py-spy (`pip install 'meterstream[bench]'`).
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
            ],
            capture_output=True,
            check=False,
            timeout=seconds + 60,
        )
        if not out.exists():
            return None
        total = 0
        inclusive: dict[str, int] = defaultdict(int)
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            if not stack.strip():
                inclusive["(outside Python: Java code or waiting)"] += int(count)
                continue
            for frame in {f.split(" (")[0] for f in stack.split(";") if f}:
                inclusive[frame] += int(count)
    if not total:
        return None
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])
    return [(frame, n / total) for frame, n in ranked[:15]]
