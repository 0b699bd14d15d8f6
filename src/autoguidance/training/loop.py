"""Training an EDM2 image denoiser: one loop for one process or many (torchrun), resumable bit-exactly.

Units: `duration`, `snapshot_every` and `checkpoint_every` count training images (the run takes
ceil(duration / batch_size) iterations); the learning-rate schedule's `t_ref` and `warmup` count iterations
(EDM2 eq. 121); the power-function EMA's time t counts images (t = images seen after the step).

Reproducibility: the batch rows of step k are a pure function of (seed, k) (data.batch_indices), the noise
and sigma of each sample a pure function of (seed, k, position in the global batch) (noise.py), and the
initial weights come from `seed`. A run is therefore determined by its config alone: rerunning `train` on
its folder resumes from training-state.safetensors to the same final weights as an uninterrupted run, and
1 or N processes see the same global batches (weights then agree to float rounding; with dropout > 0 the
dropout masks differ between process counts, since each rank draws its own).

Files in run_dir: training-config.json, training-state.safetensors, log.jsonl, snapshots/ (EMA snapshots
for post-hoc reconstruction), and at the end network-final.safetensors (raw weights) and
network-ema-<sigma_rel>.safetensors (one per tracked EMA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..data import batch_indices, load_dataset
from ..errors import RunFailedError, UserInputError, check_int
from ..io import atomic
from ..io.networks import save_network
from ..nets.precond import EDM2Denoiser, build
from ..nets.presets import PRESET_NAMES, ArchitectureOverrides, padded_resolution, preset_config
from ..progress import Progress
from ..seeds import MAX_SEED
from . import phema
from .ema import PowerFunctionEMA, sigma_rel_to_gamma
from .export import sigma_rel_tag
from .loss import denoising_loss
from .noise import DOMAIN_DROPOUT, sample_seed, training_noise
from .state import read_training_state, restore_training_state, save_training_state

STATE_FILE = "training-state.safetensors"
CONFIG_FILE = "training-config.json"
LOG_FILE = "log.jsonl"
FINAL_FILE = "network-final.safetensors"

# Fields that may change when a run is continued: they do not alter the trajectory of the weights
# (the learning-rate schedule does not depend on the run length), so a finished run can be extended.
RESUMABLE_FIELDS = ("duration", "checkpoint_every")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored as JSON in the run folder and its checkpoints).

    dataset: a `data.load_dataset` spec ('mnist', 'digits', 'mnist:all', a folder or .zip).
    preset: model size (nets.presets: xxs, xs, s, m). cond: class-conditional (needs labels) or not.
    batch_size: global batch (images per iteration, over all processes).
    duration: training images; the run takes ceil(duration / batch_size) iterations.
    p_mean, p_std: ln sigma ~ N(p_mean, p_std^2) (ImageNet-64's -0.8 / 1.6 suits small images).
    lr_ref, t_ref, warmup: lr = lr_ref / sqrt(max(t / t_ref, 1)) * min(t / warmup, 1), t the iteration
        number (1-based) (EDM2 eq. 121 with a linear warm-up); t_ref and warmup count iterations.
    adam_betas, adam_eps: Adam's hyperparameters (EDM2: (0.9, 0.99), 1e-8; no weight decay).
    ema_sigma_rels: power-function EMA widths tracked during training (and snapshotted).
    snapshot_every, checkpoint_every: images between EMA snapshots / training-state checkpoints.
    seed: initial weights, data order and noise. dropout: the UNet's dropout probability.
    model_channels, channel_mult, num_blocks, attn_resolutions: replace the preset's choice when set
        (nets.presets.ArchitectureOverrides).
    """

    dataset: str = "mnist"
    preset: str = "s"
    cond: bool = True
    batch_size: int = 64
    duration: int = 1_048_576
    p_mean: float = -0.8
    p_std: float = 1.6
    lr_ref: float = 1e-2
    t_ref: int = 2000
    warmup: int = 200
    adam_betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-8
    ema_sigma_rels: tuple[float, ...] = (0.05, 0.10)
    snapshot_every: int = 32768
    checkpoint_every: int = 131072
    seed: int = 0
    dropout: float = 0.0
    model_channels: int | None = None
    channel_mult: tuple[int, ...] | None = None
    num_blocks: int | None = None
    attn_resolutions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Tuples, so that a config read back from JSON (lists) compares equal to the original.
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        object.__setattr__(self, "ema_sigma_rels", tuple(float(s) for s in self.ema_sigma_rels))
        for name in ("channel_mult", "attn_resolutions"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (list, tuple)):
                    raise UserInputError(f"{name} must be a list of integers, got {value!r}")
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.dataset, str) or not self.dataset:
            raise UserInputError("dataset must be a non-empty string")
        if self.preset not in PRESET_NAMES:
            valid = ", ".join(PRESET_NAMES)
            raise UserInputError(f"unknown model preset {self.preset!r}; valid presets: {valid}")
        for name in ("batch_size", "duration", "t_ref", "snapshot_every", "checkpoint_every"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("warmup", self.warmup, minimum=0)
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        for name in ("p_mean", "p_std", "lr_ref", "adam_eps", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserInputError(f"{name} must be a finite number, got {value!r}")
        if self.p_std <= 0 or self.lr_ref <= 0 or self.adam_eps <= 0:
            raise UserInputError("p_std, lr_ref and adam_eps must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise UserInputError(f"dropout must lie in [0, 1), got {self.dropout}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise UserInputError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if not self.ema_sigma_rels:
            raise UserInputError("track at least one EMA sigma_rel")
        for s in self.ema_sigma_rels:
            sigma_rel_to_gamma(s)  # raises UserInputError when out of range

    @property
    def total_steps(self) -> int:
        """Iterations of the full run: ceil(duration / batch_size)."""
        return -(-self.duration // self.batch_size)

    @property
    def architecture(self) -> ArchitectureOverrides:
        return ArchitectureOverrides(
            self.model_channels, self.channel_mult, self.num_blocks, self.attn_resolutions
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("adam_betas", "ema_sigma_rels", "channel_mult", "attn_resolutions"):
            d[name] = None if d[name] is None else list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: Any) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys or bad values raise UserInputError."""
        if not isinstance(d, dict):
            raise UserInputError(f"training config must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserInputError(f"unknown training config keys {unknown}")
        return cls(**d)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate of iteration `step` (0-based): lr_ref / sqrt(max(t / t_ref, 1)) (EDM2 eq. 121),
    t = step + 1, times a linear warm-up min(t / warmup, 1)."""
    t = step + 1
    lr = config.lr_ref / math.sqrt(max(t / config.t_ref, 1.0))
    return lr * min(t / config.warmup, 1.0) if config.warmup > 0 else lr


def ema_network_path(run_dir: str | Path, sigma_rel: float) -> Path:
    return Path(run_dir) / f"network-ema-{sigma_rel_tag(sigma_rel)}.safetensors"


def _crossed(interval: int, step: int, batch_size: int) -> bool:
    """Did iteration `step` (1-based count after it) take the image count past a multiple of `interval`?"""
    return (step * batch_size) // interval > ((step - 1) * batch_size) // interval


def _check_same_run(config: TrainConfig, stored: Any, source: Path) -> None:
    """UserInputError unless `stored` (a config dict) matches `config` up to RESUMABLE_FIELDS."""
    old = TrainConfig.from_dict(stored)
    diffs = [
        f"{f.name} {getattr(old, f.name)!r} -> {getattr(config, f.name)!r}"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE_FIELDS and getattr(old, f.name) != getattr(config, f.name)
    ]
    if diffs:
        raise UserInputError(
            f"{source} belongs to a run with a different config ({'; '.join(diffs)}): use another folder"
        )


def _trim_log(path: Path, step: int) -> None:
    """Drop log records past `step` (written after the checkpoint a run resumes from), so none repeat."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a crash
    atomic.write_text(path, "".join(f"{line}\n" for line in kept))


def _write_networks(run_dir: Path, net: EDM2Denoiser, ema: PowerFunctionEMA, meta: dict[str, Any]) -> None:
    """The run's products: raw final weights and one network per tracked EMA (io/networks.py format)."""
    save_network(run_dir / FINAL_FILE, net, {**meta, "weights": "raw"})
    for i, (sigma_rel, gamma) in enumerate(zip(ema.sigma_rels, ema.gammas, strict=True)):
        ema_meta = {**meta, "weights": "ema", "sigma_rel": sigma_rel, "ema_gamma": gamma}
        save_network(ema_network_path(run_dir, sigma_rel), net, ema_meta, tensors=ema.ema_tensors(i))


def _save_snapshots(run_dir: Path, ema: PowerFunctionEMA, step: int, batch: int, provenance: dict) -> None:
    """One post-hoc EMA snapshot per tracked sigma_rel after `step` iterations (t in images, like the EMA)."""
    for i, (sigma_rel, gamma) in enumerate(zip(ema.sigma_rels, ema.gammas, strict=True)):
        path = phema.snapshot_path(run_dir, step, sigma_rel)
        phema.save_snapshot(path, ema.ema_tensors(i), step * batch, gamma, step, provenance)


@dataclass(frozen=True)
class TrainResult:
    """Where `train` stopped: iterations done, images seen, whether the run is complete, and the signal
    number (SIGINT, SIGTERM) that stopped it early, if one did (the state was saved: rerun to continue)."""

    steps: int
    images: int
    finished: bool
    signal: int | None = None


class _StopRequest:
    """Set by SIGINT / SIGTERM while training: the loop finishes its step, saves and returns."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = signum


@contextlib.contextmanager
def _catch_stop_signals() -> Iterator[_StopRequest]:
    """Turn SIGINT and SIGTERM into a stop request for the duration of training (main thread only:
    elsewhere Python cannot install handlers, and the signals keep their usual effect)."""
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    progress: bool = True,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
    log_every: int = 10,
) -> TrainResult:
    """Train (or resume training) the run described by `config` in `run_dir`.

    device: 'cpu', 'cuda' or None (CUDA when available); under torchrun each rank uses cuda:LOCAL_RANK.
    stop_after: stop once this many iterations are done (saving the training state, as an interruption
    would); rerunning later continues. log_every: iterations per log.jsonl record (loss averaged over them).
    SIGINT or SIGTERM stop the run after the current iteration, save the training state and return
    (TrainResult.signal says which). The caller's global torch RNG state is left as it was.
    """
    if stop_after is not None and (isinstance(stop_after, bool) or stop_after < 0):
        raise UserInputError(f"stop_after must be a non-negative iteration count, got {stop_after}")
    if log_every < 1:
        raise UserInputError(f"log_every must be >= 1, got {log_every}")
    dist = distributed.setup(device)
    try:
        cuda = [dist.device.index or 0] if dist.device.type == "cuda" else []
        # We reseed torch's generators: restore them afterwards.
        with torch.random.fork_rng(devices=cuda), _catch_stop_signals() as stop:
            return _train(config, Path(run_dir), dist, progress, stop_after, log_every, stop)
    finally:
        dist.close()


def _train(
    config: TrainConfig,
    run_dir: Path,
    dist: distributed.Distributed,
    progress: bool,
    stop_after: int | None,
    log_every: int,
    stop: _StopRequest,
) -> TrainResult:
    run = _Run(config, run_dir, dist)
    run.resume()
    end = config.total_steps if stop_after is None else min(config.total_steps, stop_after)
    run.loop(end, log_every, stop, progress)
    return run.finish(stop)


class _Run:
    """One training run in one process: its data, network, optimiser, EMA and files, and where it is."""

    def __init__(self, config: TrainConfig, run_dir: Path, dist: distributed.Distributed):
        self.config, self.run_dir, self.dist = config, run_dir, dist
        self.state_path, self.config_path = run_dir / STATE_FILE, run_dir / CONFIG_FILE
        self.log_path = run_dir / LOG_FILE
        dataset = load_dataset(config.dataset)
        if config.cond and not dataset.labelled:
            raise UserInputError(
                f"dataset {dataset.name!r} has no labels (no dataset.json with labels): train it "
                "unconditionally with --uncond, or add a dataset.json (README, 'Your own images')"
            )
        if config.batch_size % dist.world_size:
            raise UserInputError(
                f"batch size {config.batch_size} is not divisible by the {dist.world_size} processes"
            )
        label_dim = dataset.num_classes if config.cond else 0
        image_size = dataset.resolution
        if len(config.architecture.given()) < 4:  # the preset rule needs a power-of-two side: pad up to one
            dataset = dataset.padded(padded_resolution(image_size))
        self.dataset = dataset
        arch = config.architecture
        self.net_config = preset_config(
            config.preset, dataset.resolution, dataset.channels, label_dim, config.dropout, arch
        )
        torch.manual_seed(config.seed)  # initial weights: identical on every rank and in every rerun
        self.net = build(self.net_config).to(dist.device).train()
        self.opt = torch.optim.Adam(
            self.net.parameters(), lr=config.lr_ref, betas=config.adam_betas, eps=config.adam_eps
        )
        self.ema = PowerFunctionEMA(self.net, config.ema_sigma_rels)
        self.step, self.elapsed_before = 0, 0.0
        self.provenance = {
            "dataset": dataset.name,
            "dataset_size": len(dataset),
            "image_size": image_size,  # before padding: generation crops its outputs back to this
            "preset": config.preset,
            "cond": config.cond,
            "train_config": config.to_dict(),
            "net": self.net_config.to_dict(),
            "world_size": dist.world_size,
        }

    def resume(self) -> None:
        """Continue from the run folder's training state, if any (the same config up to its length)."""
        config = self.config
        if self.config_path.exists():
            try:
                stored = json.loads(self.config_path.read_text())
            except json.JSONDecodeError:
                raise UserInputError(f"{self.config_path} is not valid JSON") from None
            _check_same_run(config, stored, self.config_path)
        if self.state_path.exists():
            tensors, meta = read_training_state(self.state_path)
            _check_same_run(config, meta.get("train_config"), self.state_path)  # before loading: clearer
            restore_training_state(tensors, self.net, self.opt, self.ema, self.state_path)
            del tensors
            self.step, self.elapsed_before = meta["step"], float(meta.get("elapsed", 0.0))
        if self.step > config.total_steps:
            raise UserInputError(
                f"{self.state_path} is at iteration {self.step}, past this config's {config.total_steps} "
                f"(duration {config.duration} images): give a longer duration"
            )
        if self.dist.is_main:
            atomic.write_json(self.config_path, config.to_dict())
            _trim_log(self.log_path, self.step)
        self.saved_at = self.step if self.state_path.exists() else -1

    def loop(self, end: int, log_every: int, stop: _StopRequest, progress: bool) -> None:
        """Iterate up to `end`, logging, snapshotting and checkpointing; stop early on a signal."""
        dist, config, batch = self.dist, self.config, self.config.batch_size
        model = self.net
        if dist.world_size > 1:  # averages gradients across ranks during backward
            device_ids = [dist.device] if dist.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=device_ids)
        images = self.dataset.images.to(dist.device)
        labels = self.dataset.labels.to(dist.device) if config.cond else None
        log = _Log(self, log_every, progress)
        try:
            while self.step < end:
                loss, lr = self._iteration(model, images, labels)
                self.step += 1
                self.ema.update(self.net, cur_t=self.step * batch, delta_t=batch)  # EMA time in images
                # Under torchrun every rank gets the signal, but maybe not before the same step: they agree
                # at the next log record (a collective), so that all save the same step.
                stopping = log.add(loss, lr, end, stop)
                if _crossed(config.snapshot_every, self.step, batch) and dist.is_main:
                    _save_snapshots(self.run_dir, self.ema, self.step, batch, self.provenance)
                if _crossed(config.checkpoint_every, self.step, batch):
                    self.save_state(log)
                if stopping:
                    break
        finally:
            log.close()
        if self.saved_at != self.step:
            self.save_state(log)

    def _iteration(self, model, images, labels) -> tuple[torch.Tensor, float]:
        """One optimiser step on this rank's share of the global batch of the current step."""
        config, dist, step, batch = self.config, self.dist, self.step, self.config.batch_size
        share = batch // dist.world_size
        positions = range(dist.rank * share, (dist.rank + 1) * share)  # this rank's slots in the batch
        rows = batch_indices(len(self.dataset), batch, step, config.seed, dist.rank, dist.world_size)
        rows = rows.to(dist.device)
        noise, normal = training_noise(config.seed, step, positions, self.dataset.shape, dist.device)
        lr = learning_rate(config, step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        if config.dropout > 0:  # dropout draws from torch's global generator: make it a function of step
            torch.manual_seed(sample_seed(config.seed, step, dist.rank, domain=DOMAIN_DROPOUT))
        loss = denoising_loss(
            model,
            images[rows],
            None if labels is None else labels[rows],
            noise,
            normal,
            config.p_mean,
            config.p_std,
            self.net_config.sigma_data,
        )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach(), lr

    def save_state(self, log: _Log) -> None:
        """The training state, for resuming. Never diverged weights: a resumed run would start from them
        (and checkpoint.load refuses non-finite tensors). One host sync per checkpoint, not per step."""
        if not bool(torch.isfinite(log.loss_sum).all()):
            raise RunFailedError(
                f"training diverged: non-finite loss before iteration {self.step}; the last checkpoint in "
                f"{self.run_dir} is from before (try a lower --lr)"
            )
        if self.dist.is_main:
            elapsed = self.elapsed_before + time.perf_counter() - log.start_time
            meta = {**self.provenance, "elapsed": elapsed}
            save_training_state(self.state_path, self.net, self.opt, self.ema, self.step, meta)
        self.saved_at = self.step

    def finish(self, stop: _StopRequest) -> TrainResult:
        """At the end of training, the last snapshot and the networks; then where the run stands."""
        step, batch = self.step, self.config.batch_size
        finished = step == self.config.total_steps
        if finished and self.dist.is_main:
            # Post-hoc EMA must cover the end of training: a last snapshot unless one fell on this step.
            if not phema.snapshot_path(self.run_dir, step, self.ema.sigma_rels[0]).exists():
                _save_snapshots(self.run_dir, self.ema, step, batch, self.provenance)
            meta = {**self.provenance, "step": step, "training_images": step * batch}
            _write_networks(self.run_dir, self.net, self.ema, meta)
        self.dist.barrier()  # no rank leaves (and tears down the group) before rank 0 has written the files
        signum = stop.signum if stop.signum is not None and not finished else None
        return TrainResult(steps=step, images=step * batch, finished=finished, signal=signum)


class _Log:
    """log.jsonl records (the loss averaged since the last record) and the progress bar."""

    def __init__(self, run: _Run, every: int, progress: bool):
        self.run, self.every = run, every
        dist, total = run.dist, run.config.total_steps
        self.file = open(run.log_path, "a", buffering=1) if dist.is_main else None  # line-buffered
        self.bar = Progress("train", total, initial=run.step, unit="it", enabled=progress and dist.is_main)
        self.start_time = self.last_time = time.perf_counter()
        self.last_step, self.loss_sum = run.step, torch.zeros((), device=dist.device)

    def add(self, loss: torch.Tensor, lr: float, end: int, stop: _StopRequest) -> bool:
        """Count one iteration's loss; write a record every `every` iterations, at the end, or when a
        signal asks to stop. Returns whether to stop (agreed by all ranks)."""
        run, dist = self.run, self.run.dist
        self.loss_sum += loss
        self.bar.update(1)
        stopping = stop.signum is not None and dist.world_size == 1
        if not (run.step % self.every == 0 or run.step == end or stopping):
            return stopping
        if dist.world_size > 1:
            stopping = bool(dist.max(float(stop.signum or 0)))
        mean_loss = float(dist.mean(self.loss_sum / (run.step - self.last_step)))  # collective
        if not math.isfinite(mean_loss):
            raise RunFailedError(
                f"training diverged: loss {mean_loss} at iteration {run.step}; the last checkpoint "
                f"in {run.run_dir} is from before (try a lower --lr)"
            )
        now, batch = time.perf_counter(), run.config.batch_size
        record = {
            "step": run.step,
            "images": run.step * batch,
            "loss": mean_loss,
            "lr": lr,
            "images_per_sec": (run.step - self.last_step) * batch / max(now - self.last_time, 1e-9),
            "elapsed": run.elapsed_before + now - self.start_time,
        }
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", images=run.step * batch)
        self.last_step, self.last_time = run.step, now
        self.loss_sum = torch.zeros((), device=dist.device)
        return stopping

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
