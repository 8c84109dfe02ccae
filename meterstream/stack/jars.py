"""The JVM jars of the stack, resolved by Maven from `jvm/pom.xml` into `.stack/jars/`."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET  # noqa: S405 - our own pom.xml, not untrusted input
from collections.abc import Callable
from pathlib import Path

from meterstream.config import PROJECT_ROOT, Settings
from meterstream.errors import StackError

POM = PROJECT_ROOT / "jvm" / "pom.xml"
#: Written after a successful `mvn package`: the SHA-256 of the pom the jars came from.
STAMP = ".pom.sha256"
_MAVEN = "{http://maven.apache.org/POM/4.0.0}"
_PROPERTY = re.compile(r"\$\{([^}]+)\}")


def flink_jars(settings: Settings) -> list[Path]:
    """The connector jars Flink needs (Kafka, JDBC + PostgreSQL driver, Avro, Parquet)."""
    return sorted((settings.stack_dir / "jars" / "flink").glob("*.jar"))


def kafka_classpath(settings: Settings) -> str:
    """The Java classpath of the Kafka broker."""
    return str(settings.stack_dir / "jars" / "kafka" / "*")


def pom_digest(pom: Path = POM) -> str:
    """The SHA-256 of the poms and Java sources under `jvm/`: what the jars were built from."""
    digest = hashlib.sha256()
    files = [pom, *sorted(p for p in pom.parent.rglob("*") if p.suffix in (".xml", ".java"))]
    for path in dict.fromkeys(files):
        if "target" not in path.relative_to(pom.parent).parts:
            digest.update(str(path.relative_to(pom.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _read_pom(pom: Path) -> tuple[ET.Element, Callable[[str], str]]:
    """A pom's root element and a function resolving `${property}` references in its text."""
    root = ET.parse(pom).getroot()  # noqa: S314 - our own pom.xml
    properties = {
        child.tag.removeprefix(_MAVEN): (child.text or "").strip()
        for child in root.findall(f"{_MAVEN}properties/*")
    }
    properties["project.version"] = (root.findtext(f"{_MAVEN}version") or "").strip()

    def resolve(text: str) -> str:
        return _PROPERTY.sub(lambda m: properties.get(m.group(1), m.group(0)), text.strip())

    return root, resolve


def pom_flink_jar_names(pom: Path = POM) -> set[str]:
    """The file names the build writes into `jars/flink/`.

    The connectors the pom copies (`<artifactId>-<version>.jar`) and each module's jar
    (`<finalName>.jar`).
    """
    root, resolve = _read_pom(pom)
    names = set()
    for execution in root.iter(f"{_MAVEN}execution"):
        if (execution.findtext(f"{_MAVEN}id") or "").strip() != "flink-connector-jars":
            continue
        for item in execution.iter(f"{_MAVEN}artifactItem"):
            artifact = resolve(item.findtext(f"{_MAVEN}artifactId") or "")
            version = resolve(item.findtext(f"{_MAVEN}version") or "")
            names.add(f"{artifact}-{version}.jar")
    for module in root.iter(f"{_MAVEN}module"):
        module_root, module_resolve = _read_pom(
            pom.parent / (module.text or "").strip() / "pom.xml"
        )
        names.add(
            module_resolve(module_root.findtext(f"{_MAVEN}build/{_MAVEN}finalName") or "") + ".jar"
        )
    return names


def jars_current(settings: Settings) -> bool:
    """True when both jar sets exist and were resolved from the pom as it is now."""
    jars_dir = settings.stack_dir / "jars"
    stamp = jars_dir / STAMP
    return (
        bool(flink_jars(settings))
        and any((jars_dir / "kafka").glob("kafka_2.13-*.jar"))
        and stamp.exists()
        and stamp.read_text().strip() == pom_digest()
    )


def ensure_jars(settings: Settings) -> None:
    """Resolve the jars with Maven unless they were already resolved from this pom (idempotent).

    A changed pom (a new connector, a new version) is resolved again on machines that already
    have `.stack/jars/`; Flink jars the pom no longer names are then removed, so that two
    versions of a connector never end up on `pipeline.jars` together.
    """
    if jars_current(settings):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = "Maven (mvn) is not installed; it resolves the pinned jars in jvm/pom.xml"
        raise StackError(msg)
    digest = pom_digest()
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), f"-Dstack.dir={settings.stack_dir}", "package"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        msg = f"mvn could not resolve the stack's jars from {POM}:\n{result.stdout}{result.stderr}"
        raise StackError(msg)
    wanted = pom_flink_jar_names()
    for jar in flink_jars(settings):
        if jar.name not in wanted:
            jar.unlink()
    (settings.stack_dir / "jars" / STAMP).write_text(digest + "\n")
