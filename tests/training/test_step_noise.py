"""Step noise: W ranks' draws interleave into exactly the draws of one process over the global batch, and
every (seed, step) has its own stream of numbers."""

import pytest
import torch

from mmdit.training.step_noise import StepNoise, step_generator


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_interleave_into_the_one_process_draws(world_size):
    rows, shape = 4, (4, 5, 6)
    single = StepNoise(step_generator(7, 11), world_size=1)
    reference = (single.normal((rows * world_size, *shape[1:])), single.uniform(rows * world_size))
    for rank in range(world_size):
        noise = StepNoise(step_generator(7, 11), rank=rank, world_size=world_size)
        normal, uniform = noise.normal(shape), noise.uniform(rows)
        assert normal.shape == shape and uniform.shape == (rows,)
        assert torch.equal(normal, reference[0][rank::world_size])
        assert torch.equal(uniform, reference[1][rank::world_size])


def test_each_seed_and_step_has_its_own_numbers():
    def draw(seed, step):
        return StepNoise(step_generator(seed, step)).normal((3, 4))

    assert torch.equal(draw(0, 5), draw(0, 5))
    assert not torch.equal(draw(0, 5), draw(0, 6)) and not torch.equal(draw(0, 5), draw(1, 5))


def test_a_rank_outside_the_world_is_an_error():
    with pytest.raises(ValueError, match="rank 2 is not one of 2 ranks"):
        StepNoise(step_generator(0, 0), rank=2, world_size=2)
