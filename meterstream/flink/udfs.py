"""The job's functions: all JVM classes (jvm/udf), registered here by their SQL names.

`check_event` validates each record: the JVM fast path first, then, for every record it
leaves open, the Python rules called in place (`meterstream.flink.embedded`). No Flink Python
operator runs in the job.
"""

from __future__ import annotations

import sys

import orjson
from pyflink.java_gateway import get_gateway
from pyflink.table import TableEnvironment
from pyflink.util.java_utils import get_java_class

from meterstream.meters.registry import MeterRegistry
from meterstream.rules.validate import Validator

#: `check_event(payload, topic, partition, offset, arrived_at)`: one checked row per record.
CHECK_EVENT_CLASS = "io.meterstream.flink.CheckEvent"
#: The JVM fast path alone (NULL where Python decides): what tests/flink/test_fast_path.py
#: holds to the Python rules.
FAST_CHECK_EVENT_CLASS = "io.meterstream.flink.FastCheckEvent"
#: The billing-period functions (jvm/udf), by their SQL names: rules/periods.py in the JVM.
PERIOD_FUNCTIONS = {
    "billing_period_start": "io.meterstream.flink.BillingPeriodStart",
    "arrived_too_late": "io.meterstream.flink.ArrivedTooLate",
}


def fast_path_spec(registry: MeterRegistry) -> str:
    """The compiled meter rules the JVM fast path applies, as JSON."""
    return orjson.dumps(Validator(registry).describe()).decode()


def python_executable(t_env: TableEnvironment) -> str:
    """The Python the TaskManagers embed for the rules (`python.executable`, default this one)."""
    return t_env.get_config().get("python.executable", None) or sys.executable


def register_check_event(
    t_env: TableEnvironment,
    registry: MeterRegistry,
    *,
    fast_path: bool,
) -> None:
    """Register `check_event`, carrying the meters; without `fast_path`, Python checks all.

    The Python rules run in the TaskManagers' Python (`python.executable`, default this one),
    which must be able to import meterstream.
    """
    gateway = get_gateway()
    arguments = [
        registry.to_json(),
        fast_path_spec(registry) if fast_path else None,
        python_executable(t_env),
    ]
    # The class is in the job's jars (the context class loader), not on py4j's class path.
    check_class = (
        gateway.jvm.Thread.currentThread().getContextClassLoader().loadClass(CHECK_EVENT_CLASS)
    )
    types = gateway.new_array(gateway.jvm.Class, len(arguments))
    values = gateway.new_array(gateway.jvm.Object, len(arguments))
    for i, value in enumerate(arguments):
        types[i] = get_java_class(gateway.jvm.String)
        values[i] = value
    function = check_class.getConstructor(types).newInstance(values)
    t_env._j_tenv.createTemporarySystemFunction("check_event", function)  # noqa: SLF001
    for name, java_class in PERIOD_FUNCTIONS.items():
        t_env.create_java_temporary_system_function(name, java_class)
