"""The wind farm every simulator serves a part of: turbines (OPC UA), revenue meters (Modbus) and a
substation RTU (DNP3). Pure functions of time and an index, so that simulators, tests and the demo
agree on what the values should be without talking to each other.

The physics is simple but shaped like the real thing: wind gusts around a site mean, power follows
a cubic power curve between cut-in and rated wind speed and is cut out above 25 m/s, the rotor
turns with the wind up to its rated speed, and the gearbox warms with power.
"""

from __future__ import annotations

import math

RATED_KW = 2500.0
CUT_IN = 3.0  # m/s
RATED_WIND = 12.0
CUT_OUT = 25.0
RATED_RPM = 16.0

# The turbine's nominal power curve (wind m/s -> kW), as a manufacturer's table gives it, in
# 0.25 m/s bins. The `power_curve` transformation reads the same table to compute the expected power;
# between bins it interpolates linearly, which overestimates the cubic by at most 3.8% from 4 m/s up
# (1% from 5 m/s; with 1 m/s bins it was 13% at 5.5 m/s, so healthy turbines looked faulty at low
# wind). Just above cut-in the power is a few kW and percentages mean little.
POWER_CURVE: list[tuple[float, float]] = [
    (0.0, 0.0),
    (CUT_IN, 0.0),
    *[
        (w, round(RATED_KW * ((w - CUT_IN) / (RATED_WIND - CUT_IN)) ** 3, 2))
        for w in (CUT_IN + 0.25 * i for i in range(1, int((RATED_WIND - CUT_IN) / 0.25)))
    ],
    (RATED_WIND, RATED_KW),
    (CUT_OUT, RATED_KW),
    (CUT_OUT + 0.01, 0.0),
]


def wind_speed(t: float, turbine: int = 0) -> float:
    """m/s at time `t` (seconds) for turbine `turbine`: a slow daily swing plus gusts."""
    phase = turbine * 0.7
    mean = 9.0 + 3.0 * math.sin(2 * math.pi * t / 3600.0 + phase)
    gust = 1.5 * math.sin(2 * math.pi * t / 17.0 + phase * 3) + 0.7 * math.sin(2 * math.pi * t / 5.3 + phase)
    return max(0.0, round(mean + gust, 3))


def power_kw(wind: float) -> float:
    """The nominal power curve, interpolated."""
    if wind < CUT_IN or wind > CUT_OUT:
        return 0.0
    if wind >= RATED_WIND:
        return RATED_KW
    return RATED_KW * ((wind - CUT_IN) / (RATED_WIND - CUT_IN)) ** 3


def turbine_power_kw(t: float, turbine: int = 0) -> float:
    """What the turbine actually produces: the curve, less a small per-turbine underperformance
    (turbine 3 has a pitch fault and makes 15% less, which the power-curve check should find)."""
    derate = 0.85 if turbine % 10 == 3 else 0.98
    return round(power_kw(wind_speed(t, turbine)) * derate, 2)


def rotor_rpm(t: float, turbine: int = 0) -> float:
    wind = wind_speed(t, turbine)
    if wind < CUT_IN or wind > CUT_OUT:
        return 0.0
    return round(min(RATED_RPM, RATED_RPM * wind / RATED_WIND), 3)


def gearbox_temp_c(t: float, turbine: int = 0) -> float:
    """Ambient 15 °C plus up to 45 °C at rated power."""
    return round(15.0 + 45.0 * turbine_power_kw(t, turbine) / RATED_KW, 2)


def meter_power_kw(t: float, meter: int = 0, turbines_per_meter: int = 5) -> float:
    """A revenue meter measures a feeder of `turbines_per_meter` turbines."""
    first = meter * turbines_per_meter
    return round(sum(turbine_power_kw(t, first + i) for i in range(turbines_per_meter)), 2)


def meter_energy_kwh(t: float, meter: int = 0, turbines_per_meter: int = 5) -> float:
    """Energy register: integrated power since t = 0 (coarse 10 s steps, monotonic)."""
    step = 10.0
    n = int(t // step)
    total = sum(meter_power_kw(i * step, meter, turbines_per_meter) for i in range(max(0, n - 360), n))
    return round(total * step / 3600.0 + n * 0.5, 3)  # the base keeps it monotonic past the window


def feeder_voltage_kv(t: float, feeder: int = 0) -> float:
    return round(33.0 + 0.3 * math.sin(2 * math.pi * t / 60.0 + feeder), 3)


def breaker_closed(t: float, feeder: int = 0) -> bool:
    """Feeder breakers trip briefly once an hour, one feeder after another."""
    return int(t) % 3600 != feeder * 60 + 30
