"""Our Euler sampler against diffusers' own Euler schedulers, guidance off, same sigmas (item 6 of the
text-to-image issue): EulerDiscreteScheduler for the SD family (eps and v), FlowMatchEulerDiscreteScheduler
for the flow transformer (SD3). The scheduler loop is run by hand over the same tiny network."""

import pytest
import torch

pytest.importorskip("peft")
import tiny_pipelines as tiny  # noqa: E402

from autoguidance.sampling import sample  # noqa: E402
from autoguidance.wrappers.diffusers import schedule_from_scheduler  # noqa: E402
from autoguidance.wrappers.sigmas import FLOW_T_MAX, scheduler_sigmas  # noqa: E402
from autoguidance.wrappers.text import TextDenoiser, encode_prompt  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 6


def _denoiser(pipe, network):
    prediction, schedule, scale = schedule_from_scheduler(pipe.scheduler)
    return TextDenoiser(network, prediction, schedule, timestep_scale=scale)


@pytest.mark.parametrize(
    ("family", "prediction"), [("sd", "epsilon"), ("sd", "v_prediction"), ("sdxl", "epsilon")]
)
def test_euler_matches_euler_discrete_scheduler(family, prediction):
    pipe = tiny.sd(0, prediction) if family == "sd" else tiny.sdxl(0)
    cond, _ = encode_prompt(family, pipe, "a red cat", height=16, width=16)
    den = _denoiser(pipe, pipe.unet)
    sigmas = scheduler_sigmas(pipe.scheduler, STEPS, den.schedule)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    ours = sample(den, noise, sigmas, cond, solver="euler")

    sched = pipe.scheduler
    sched.set_timesteps(STEPS)
    # EDM starts at x = sigma_0 * noise; diffusers' init_noise_sigma (sqrt(sigma^2 + 1) for "leading"
    # spacing) would add the data's unit variance. Same start for both: the steps are what is compared.
    x = noise * sched.sigmas[0]
    kwargs = {"encoder_hidden_states": cond["encoder_hidden_states"].expand(2, -1, -1)}
    if family == "sdxl":
        kwargs["added_cond_kwargs"] = {k: v.expand(2, -1) for k, v in cond["added_cond_kwargs"].items()}
    with torch.no_grad():
        for t in sched.timesteps:
            out = pipe.unet(sched.scale_model_input(x, t), t, **kwargs).sample
            x = sched.step(out, t, x).prev_sample
    assert float(sigmas[-1]) == 0.0 and len(sigmas) == STEPS + 1
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    assert (ours - noise * sigmas[0]).abs().max() > 1.0  # it did move


def test_euler_matches_flow_match_euler_scheduler():
    pipe = tiny.sd3(0, shift=3.0)
    cond, _ = encode_prompt("sd3", pipe, "a red cat", max_sequence_length=8)
    den = _denoiser(pipe, pipe.transformer)
    sigmas = scheduler_sigmas(pipe.scheduler, STEPS, den.schedule)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = sample(den, noise, sigmas, cond, solver="euler")

    sched = pipe.scheduler
    sched.set_timesteps(STEPS)
    # The flow scheduler starts at t = 1, x_t = noise; EDM's sampler at t = FLOW_T_MAX, x = sigma_0 noise,
    # i.e. x_t = t_0 noise. Start the scheduler there too (its first sigma replaced by t_0).
    t0 = float(sigmas[0] / (1 + sigmas[0]))
    assert abs(t0 - FLOW_T_MAX) < 1e-9 and float(sched.sigmas[0]) == 1.0
    sched.sigmas[0] = t0
    x = noise * t0
    emb = cond["encoder_hidden_states"].expand(2, -1, -1)
    pooled = cond["pooled_projections"].expand(2, -1)
    with torch.no_grad():
        for i, _ in enumerate(sched.timesteps):
            t = (sched.sigmas[i] * 1000).expand(2)  # the timestep the model sees at this flow time
            v = pipe.transformer(x, encoder_hidden_states=emb, pooled_projections=pooled, timestep=t).sample
            x = sched.step(v, sched.timesteps[i], x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    # and the scheduler's shifted schedule is what we sampled: sigma = t / (1 - t) at every step
    t = sched.sigmas.double()[1:-1]
    torch.testing.assert_close(sigmas[1:-1], t / (1 - t))
