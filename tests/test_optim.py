import pytest
import torch

from dediffusion.config import SleepConfig, TrainConfig
from dediffusion.train.optim import build_lr_scheduler, build_optimizer


def test_warmup_then_cosine_to_zero():
    params = [torch.nn.Parameter(torch.zeros(2))]
    config = TrainConfig(steps=10, warmup_steps=2, learning_rate=1.0)
    optimizer = build_optimizer(params, config)
    schedule = build_lr_scheduler(optimizer, config)
    rates = []
    for _ in range(10):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:])) and schedule.get_last_lr()[0] == pytest.approx(0.0)


def test_each_phase_warms_up_and_decays_at_its_own_rate():
    params = [torch.nn.Parameter(torch.zeros(2))]
    config = TrainConfig(steps=6, warmup_steps=1, learning_rate=1.0)
    optimizer = build_optimizer(params, config)
    schedule = build_lr_scheduler(optimizer, config, SleepConfig(steps=4, learning_rate=0.1))
    rates = []
    for _ in range(10):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    sleep, wake = rates[:4], rates[4:]
    assert sleep[1] == pytest.approx(0.1) and sleep[0] < sleep[1] >= sleep[2] >= sleep[3] > 0
    assert wake[0] < wake[1] == pytest.approx(1.0) and all(a >= b for a, b in zip(wake[1:], wake[2:]))


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_optimizers_update_only_trainable_parameters(name):
    trainable, frozen = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3), requires_grad=False)
    optimizer = build_optimizer([trainable, frozen], TrainConfig(optimizer=name, learning_rate=0.1))
    trainable.sum().backward()
    optimizer.step()
    assert not torch.equal(trainable.detach(), torch.ones(3)) and torch.equal(frozen, torch.ones(3))


def test_nothing_to_train_is_an_error():
    with pytest.raises(ValueError, match="frozen"):
        build_optimizer([torch.nn.Parameter(torch.ones(1), requires_grad=False)], TrainConfig())
