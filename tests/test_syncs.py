"""fine_tune.engine.syncs.SyncCounter on tiny direct cases: the calls that make the host wait for the device are
counted (reads, blocking host-to-device and device-to-host copies, host operands), the ones that do not are not,
on a CPU run (the counter keeps host and device apart itself) and on a run whose device is not the CPU (the
tensors' own devices; the meta device stands in for a GPU). The training steps' budgets are in
tests/test_gpu_paths.py::test_a_training_step_makes_no_host_device_sync."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fine_tune.engine.syncs import SyncCounter

DEV = torch.device("cpu")  # the training device of a CPU run


def _no_grad_norm():
    """clip_grad_norm_ over parameters without gradient: its zero norm is made on the host."""
    return torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0)


# (what the code does, with x a device tensor made before counting) -> the syncs counted, by operator
CASES = {
    "tensor_of_python_data_on_the_device": (lambda x: torch.tensor([1.0, 2.0], device=DEV), {"h2d_copy": 1}),
    "tensor_of_a_python_number_on_the_device": (
        lambda x: torch.tensor(0.5, dtype=torch.float64, device=x.device),
        {"h2d_copy": 1},
    ),
    "as_tensor_of_numpy_on_the_device": (lambda x: torch.as_tensor(np.zeros(3), device=DEV), {"h2d_copy": 1}),
    "asarray_on_the_device": (lambda x: torch.asarray([1, 2], device=DEV), {"h2d_copy": 1}),
    "new_tensor_of_a_device_tensor": (lambda x: x.new_tensor([1.0, 2.0]), {"h2d_copy": 1}),
    "host_tensor_moved_blocking": (lambda x: torch.tensor(0.0).to(DEV), {"h2d_copy": 1}),
    "host_from_numpy_moved_blocking": (lambda x: torch.from_numpy(np.ones(3)).float().to(x.device), {"h2d_copy": 1}),
    "clip_norm_without_gradient_moved": (lambda x: _no_grad_norm().float().to(DEV), {"h2d_copy": 1}),
    "host_copied_into_a_device_tensor": (lambda x: x.clone().copy_(torch.zeros(3)), {"h2d_copy": 1}),
    "device_tensor_to_the_host": (lambda x: x.cpu(), {"d2h_copy": 1}),
    "device_copied_into_a_host_tensor": (lambda x: torch.zeros(3).copy_(x), {"d2h_copy": 1}),
    "device_tensor_read": (lambda x: x.sum().item(), {"item": 1}),
    "device_tensor_tested": (lambda x: bool((x > 0).all()), {"__bool__": 1}),
    "indexed_with_a_host_index": (lambda x: x[torch.tensor([0, 2])], {"host_operand": 1}),
    # not syncs
    "host_tensor_moved_non_blocking": (lambda x: torch.tensor([1.0, 2.0]).to(DEV, non_blocking=True), {}),
    "filled_on_the_device": (
        lambda x: (
            torch.full((3,), 2.0, device=DEV),
            torch.zeros(3, device=DEV),
            torch.scalar_tensor(1.0, device=DEV),
            torch.arange(3, device=DEV),
        ),
        {},
    ),
    "device_operations": (lambda x: (x * 2 + x.sum()).softmax(-1).index_select(0, x.argmax().view(1)), {}),
    "device_tensor_with_a_host_scalar": (lambda x: x * torch.tensor(0.5), {}),
    "host_tensor_read": (lambda x: (torch.tensor([1.0, 2.0]).sum().item(), torch.zeros(2).tolist()), {}),
    "moved_then_used_on_the_device": (lambda x: torch.tensor([1.0, 2.0, 3.0]).to(DEV, non_blocking=True) + x, {}),
    "device_data_onto_the_device": (lambda x: torch.as_tensor(x, device=DEV), {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_counter_counts_the_calls_that_make_the_host_wait(case):
    code, expected = CASES[case]
    x = torch.tensor([1.0, -2.0, 3.0])  # made before counting: on the device
    with SyncCounter(DEV) as counter:
        code(x)
    assert dict(counter.by_op) == expected, dict(counter.by_site)
    assert sum(counter.by_site.values()) == sum(expected.values())
    if expected:
        assert all(site.startswith("test_syncs.py:") for site in counter.by_site), dict(counter.by_site)


def test_on_a_device_that_is_not_the_cpu_the_tensors_devices_say_where_they_are():
    """The meta device stands in for a GPU: a CPU tensor is on the host whoever made it."""
    host = torch.ones(3)
    with SyncCounter("meta") as counter:
        torch.tensor([1.0, 2.0], device="meta")
        host.to("meta")
        host.to("meta", non_blocking=True)
        torch.zeros(3, device="meta") * 2
    assert dict(counter.by_op) == {"h2d_copy": 2}


def test_paused_regions_and_the_collators_module_are_not_counted():
    x = torch.ones(3)
    with SyncCounter(DEV) as counter:
        with counter.paused():
            x.sum().item()
            torch.tensor(1.0, device=DEV)
    assert counter.total == 0
    assert torch.from_numpy is not None and torch.from_numpy(np.ones(1)).shape == (1,)  # restored after counting
