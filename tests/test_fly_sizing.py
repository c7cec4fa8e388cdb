"""Machine sizing: presets and Fly's CPU/memory rules."""

from __future__ import annotations

import httpx
import pytest

from scaler.fly import AsyncFlyClient, FlyMachineConfig, Guest
from scaler.fly.sizing import PRESETS, SizingError, guest_for, validate_guest


@pytest.mark.parametrize(
    ("size", "kind", "cpus", "memory"),
    [
        ("shared-cpu-1x", "shared", 1, 256),
        ("shared-cpu-2x", "shared", 2, 512),
        ("shared-cpu-4x", "shared", 4, 1024),
        ("shared-cpu-6x", "shared", 6, 1536),
        ("shared-cpu-8x", "shared", 8, 2048),
        ("performance-1x", "performance", 1, 2048),
        ("performance-2x", "performance", 2, 4096),
        ("performance-16x", "performance", 16, 32768),
    ],
)
def test_presets(size: str, kind: str, cpus: int, memory: int) -> None:
    assert guest_for(size) == Guest(cpu_kind=kind, cpus=cpus, memory_mb=memory)


def test_every_preset_name() -> None:
    assert set(PRESETS) == {f"shared-cpu-{n}x" for n in (1, 2, 4, 6, 8)} | {
        f"performance-{n}x" for n in (1, 2, 4, 6, 8, 10, 12, 14, 16)
    }
    for preset in PRESETS.values():
        validate_guest(Guest(cpu_kind=preset.cpu_kind, cpus=preset.cpus,
                             memory_mb=preset.memory_mb))


def test_default_is_shared_cpu_1x() -> None:
    assert guest_for() == Guest(cpu_kind="shared", cpus=1, memory_mb=256)


def test_overrides_apply_after_the_preset() -> None:
    assert guest_for("shared-cpu-2x", memory_mb=4096) == Guest(
        cpu_kind="shared", cpus=2, memory_mb=4096
    )
    assert guest_for("shared-cpu-1x", cpus=4) == Guest(cpu_kind="shared", cpus=4, memory_mb=1024)
    assert guest_for(cpu_kind="performance") == Guest(
        cpu_kind="performance", cpus=1, memory_mb=2048
    )


def test_the_error_names_field_value_and_what_is_allowed() -> None:
    with pytest.raises(SizingError) as info:
        guest_for(cpus=1, memory_mb=300)
    err = info.value
    assert str(err) == (
        "guest.memory_mb=300 is not allowed for 1 shared CPU: "
        "use a multiple of 256 from 256 to 2048"
    )
    assert err.field == "guest.memory_mb"
    assert err.value == 300
    assert list(err.allowed) == list(range(256, 2049, 256))  # type: ignore[call-overload]
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("guest", "field", "fragment"),
    [
        (Guest(cpu_kind="shared", cpus=3), "guest.cpus", "use one of 1, 2, 4, 6, 8"),
        (Guest(cpu_kind="performance", cpus=3, memory_mb=6144), "guest.cpus",
         "use one of 1, 2, 4, 6, 8, 10, 12, 14, 16"),
        (Guest(cpu_kind="shared", cpus=2, memory_mb=256), "guest.memory_mb", "from 512 to 4096"),
        (Guest(cpu_kind="shared", cpus=1, memory_mb=4096), "guest.memory_mb", "from 256 to 2048"),
        (Guest(cpu_kind="performance", cpus=1, memory_mb=1024), "guest.memory_mb",
         "from 2048 to 8192"),
        (Guest(cpu_kind="performance", cpus=2, memory_mb=4100), "guest.memory_mb",
         "multiple of 256"),
        (Guest(cpu_kind="dedicated", cpus=1), "guest.cpu_kind", "'performance', 'shared'"),
    ],
)
def test_refused_guests(guest: Guest, field: str, fragment: str) -> None:
    with pytest.raises(SizingError) as info:
        validate_guest(guest)
    assert info.value.field == field
    assert field in str(info.value) and fragment in str(info.value)


def test_performance_memory_in_256_steps_is_fine() -> None:
    guest = Guest(cpu_kind="performance", cpus=1, memory_mb=2304)
    assert validate_guest(guest) is guest


def test_unknown_preset() -> None:
    with pytest.raises(SizingError, match=r"pool\.size='huge-1x' is not a known preset"):
        guest_for("huge-1x", field="pool")


def test_field_prefix_is_configurable() -> None:
    with pytest.raises(SizingError) as info:
        guest_for(memory_mb=100, field="pools.ci.guest")
    assert info.value.field == "pools.ci.guest.memory_mb"


async def test_client_refuses_a_bad_guest_before_calling_fly() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    async with AsyncFlyClient("t", transport=httpx.MockTransport(handler)) as fly:
        bad = FlyMachineConfig(image="x", guest=Guest(cpu_kind="shared", cpus=1, memory_mb=300))
        with pytest.raises(SizingError, match=r"config\.guest\.memory_mb=300"):
            await fly.create_machine("app", bad)
        with pytest.raises(SizingError, match=r"config\.guest\.cpus=5"):
            await fly.update_machine("app", "m1", FlyMachineConfig(image="x", guest=Guest(cpus=5)))
    assert sent == []
