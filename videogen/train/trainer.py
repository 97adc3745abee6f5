"""The training loop: one trainer for the VAE and the DiT, full or LoRA, one process or many.

``Trainer(cfg, output).run()`` builds the run (models, data, cache, optimizer), optionally restores the
latest checkpoint, and steps until ``train.max_steps`` (or ``train.stop_step``): each step draws
``grad_accum`` micro-batches, back-propagates, clips, steps AdamW and the schedule, updates the EMA, logs,
and now and then writes a checkpoint or validation videos. accelerate places the model (DDP, or FSDP by
config) and runs the bf16 autocast; the data order, noise and timesteps come from explicit, checkpointed
state, which is why an interrupted and resumed run ends bit-exact equal to an uninterrupted one on CPU.

Ctrl-C or SIGTERM finishes the current step, writes a checkpoint and raises `TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from videogen.config import save_config
from videogen.errors import InputError, VideogenError
from videogen.train import state as ckpt
from videogen.train.config import TrainConfig
from videogen.train.data import BatchStream, build_dataset, cache_folder, prepare_cache, process_seed, text_batch
from videogen.train.lora import LORA_FILES, add_lora, save_lora
from videogen.models.lora import EXPERTS
from videogen.models.text import encode_states, tokenize
from videogen.train.components import base_layout, load_components, trained_experts
from videogen.train.export import measure_latent_stats, save_model_folder
from videogen.train.modules import Autoencoder, FlowModel
from videogen.train.surgery import fix_posterior_std, inflate_temporal
from videogen.train.validation import write_validation
from videogen.train.objectives import dit_loss, drop_captions, expert_range, vae_loss
from videogen.train.state import EMA, make_optimizer, make_scheduler


class TrainingInterrupted(VideogenError):
    """The run was stopped (Ctrl-C, SIGTERM) after saving a checkpoint; ``--resume`` continues it."""


@dataclasses.dataclass
class RunResult:
    step: int  # optimizer steps done
    loss: float  # loss of the last step
    output: Path  # lora.safetensors (Wan2.2 A14B: the first expert's file written) or model/
    seconds: float  # wall time of this invocation
    samples_per_second: float
    out_of_time: bool = False  # ended by train.max_minutes before train.max_steps
    outputs: tuple[Path, ...] = ()  # everything exported: model/, or one LoRA file per trained expert


# ------------------------------------------------------------------------------------------ the record


FIRST_COLUMNS = ["step", "loss", "lr", "grad_norm", "samples_per_s"]


class RunLog:
    """``config.yaml`` and ``log.csv`` in the run folder (main process only; a no-op elsewhere).

    On resume the CSV keeps its rows up to the resumed step and drops the later ones, which the resumed
    run is about to write again.
    """

    def __init__(self, folder: Path, cfg: TrainConfig, *, enabled: bool = True, resume_step: int | None = None):
        self.folder, self.enabled = Path(folder), enabled
        self.csv_path = self.folder / "log.csv"
        self.columns: list[str] | None = None
        self.tensorboard = None
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.folder / ("config.yaml" if resume_step is None else "config.resumed.yaml"))
        if resume_step is not None and self.csv_path.is_file():
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        self.columns = list(rows[0].keys())
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(r for r in rows if int(r["step"]) <= step)

    def __enter__(self):
        if self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional: pip install tensorboard
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tensorboard = SummaryWriter(str(self.folder / "tensorboard"))
        return self

    def __exit__(self, *exc):
        if self.tensorboard is not None:
            self.tensorboard.close()

    def row(self, step: int, stats: dict) -> None:
        if not self.enabled:
            return
        values = {"step": step, **{k: v for k, v in stats.items() if isinstance(v, (int, float))}}
        new = self.columns is None
        if new:
            self.columns = FIRST_COLUMNS + sorted(k for k in values if k not in FIRST_COLUMNS)
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new and f.tell() == 0:
                writer.writeheader()
            writer.writerow({k: _fmt(values.get(k)) for k in self.columns})
        if self.tensorboard is not None:
            for k, v in values.items():
                if k != "step" and math.isfinite(v):
                    self.tensorboard.add_scalar(k, v, step)


def final_losses(log_csv: Path) -> tuple[float | None, float | None, dict[str, float]]:
    """A run's ``log.csv`` summed up: the last logged loss, its mean over the last 10% of logged rows, and that
    mean of each other logged loss term (``(None, None, {})`` for a run that logged nothing)."""
    if not Path(log_csv).is_file():
        return None, None, {}
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None, None, {}
    tail, terms = rows[-max(1, len(rows) // 10):], {}
    for key in [k for k in rows[0] if k not in ("step", "lr", "grad_norm", "samples_per_s", "samples")]:
        values = [float(r[key]) for r in tail if r.get(key) not in (None, "")]
        if values:
            terms[key] = sum(values) / len(values)
    return float(rows[-1]["loss"]), terms.pop("loss", None), terms


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------- the trainer


def make_accelerator(cfg: TrainConfig):
    """accelerate's Accelerator for this machine: bf16 autocast on GPU ("auto"), DDP or FSDP."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    precision = cfg.train.mixed_precision
    if precision == "auto":
        precision = "bf16" if cuda else "no"
    kwargs = {}
    if cfg.train.distributed == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True)
    elif len(trained_experts(cfg, base_layout(cfg))) > 1:  # a step calls one expert: the other has no gradient
        from accelerate import DistributedDataParallelKwargs

        kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    return Accelerator(mixed_precision=precision, cpu=not cuda, **kwargs)


class Trainer:
    """One training run into ``output`` (see the module docstring).

    Args:
        cfg: the run's configuration.
        output: the run folder; it must be new or empty unless ``resume``.
        resume: continue from the folder's latest checkpoint.
        show_progress: draw tqdm bars (main process only).
        callback: called as ``callback(trainer, step, stats)`` after every step; may call `request_stop`.
    """

    def __init__(self, cfg: TrainConfig, output: str | Path, *, resume: bool = False, show_progress: bool = True,
                 callback=None):
        self.cfg, self.output, self.resume = cfg, Path(output), resume
        self.callback = callback
        self._stop = threading.Event()
        self.accelerator = make_accelerator(cfg)
        self._check_output()
        self.accelerator.wait_for_everyone()  # every process checks the folder before any writes to it
        self.show = show_progress and self.accelerator.is_main_process
        self._build()

    # ------------------------------------------------------------------------------------------- setup

    def _check_output(self) -> None:
        out = self.output
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder")
        if self.resume:
            ckpt.find_resume(out)
        elif out.is_dir() and any(out.iterdir()):
            raise InputError(f"{out}: run folder is not empty (pass --resume to continue it, or pick a new folder)")

    def _build(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        self.dataset = build_dataset(cfg)  # first: a bad data folder fails before any model loads
        self.parts = load_components(cfg)
        module = self._trained_module()
        if cfg.train.gradient_checkpointing:
            for network in self._trained_networks():
                network.enable_gradient_checkpointing()
        if cfg.train.compile:
            module.compile()  # in place: parameter names, checkpoints, the EMA and the export are unchanged
        self.text_cache = None
        data = self.dataset
        if cfg.task == "dit" and cfg.data.cache:
            data, self.text_cache = prepare_cache(cfg, self.dataset, self.parts, cache_folder(cfg, self.output), acc)
        self.stream = BatchStream(data, self.dataset.buckets, cfg, rank=acc.process_index,
                                  num_replicas=acc.num_processes)
        self.generator = torch.Generator().manual_seed(process_seed(cfg.seed, acc.process_index))
        # frozen networks go to the device only when steps use them (not when their outputs are cached)
        if self.parts.vae is not None and (cfg.task == "vae" or not cfg.data.cache):
            self.parts.vae.to(acc.device)
        if self.parts.text_encoder is not None and self.text_cache is None:
            self.parts.text_encoder.to(acc.device)
        self.trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
        optimizer = make_optimizer(list(self.trainable.values()), cfg.optim)
        self.scheduler = make_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
        self.model, self.optimizer = acc.prepare(module, optimizer)
        self.module = acc.unwrap_model(self.model)
        self.trainable = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        self.ema = EMA(self.trainable, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        self.step = 0

    def _trained_networks(self) -> list[torch.nn.Module]:
        """The VAE, or the transformers that train (both experts of two, or one)."""
        if self.cfg.task == "vae":
            return [self.parts.vae]
        return [self.parts.experts[i] for i in self.parts.trained]

    def _trained_module(self) -> torch.nn.Module:
        """The module the objective calls: `FlowModel` (with LoRA adapters in a LoRA run) or `Autoencoder`."""
        cfg, parts = self.cfg, self.parts
        if cfg.task == "dit":
            experts = [e if i in parts.trained else None for i, e in enumerate(parts.experts)]
            for expert in experts:
                if cfg.mode == "lora" and expert is not None:
                    add_lora(expert, cfg.lora)
            return FlowModel(experts[0], parts.text_encoder if cfg.model.train_text_encoder else None,
                             dit_2=experts[1] if len(experts) > 1 else None)
        if cfg.model.inflate_vae:
            inflate_temporal(parts.vae)  # before any checkpoint is loaded: a resume overwrites it
        if not cfg.objective.sample_posterior:
            fix_posterior_std(parts.vae)
        if cfg.model.freeze_encoder:  # the latents stay exactly what they were
            for part in (parts.vae.encoder, parts.vae.quant_conv):
                part.requires_grad_(False)
        return Autoencoder(parts.vae, cfg.objective.sample_posterior)

    # -------------------------------------------------------------------------------------- one step

    def _latents(self, batch: dict) -> torch.Tensor:
        """Normalised latents of a batch: sampled from the cached posterior, or encoded now."""
        device, vae = self.accelerator.device, self.parts.vae
        if "mean" in batch:
            noise = torch.randn(batch["mean"].shape, generator=self.generator)
            z = batch["mean"] + batch["std"] * noise  # (B, C, T', H', W')
        else:
            with torch.no_grad():
                posterior = vae.encode(batch["video"].to(device=device, dtype=vae.dtype))
            noise = torch.randn(posterior.mean.shape, generator=self.generator).to(posterior.mean)
            z = posterior.mean + posterior.std * noise
        return vae.normalize(z.to(device=device, dtype=vae.dtype))

    def _text(self, captions: list[str]) -> dict:
        """The text inputs of `FlowModel`, captions dropped to "" with the configured probability."""
        cfg, device = self.cfg, self.accelerator.device
        dropped = drop_captions(len(captions), cfg.objective.caption_dropout, self.generator)
        captions = ["" if d else c for c, d in zip(captions, dropped.tolist())]
        if cfg.model.train_text_encoder:
            tokens = tokenize(self.parts.tokenizer, captions, cfg.model.max_text_length)
            return {k: v.to(device) for k, v in tokens.items()}
        if self.text_cache is not None:
            return {"text_states": text_batch(self.text_cache, captions, cfg.model.max_text_length).to(device)}
        tokens = tokenize(self.parts.tokenizer, captions, cfg.model.max_text_length)
        with torch.no_grad():
            states = encode_states(self.parts.text_encoder, tokens["input_ids"].to(device),
                                   tokens["attention_mask"].to(device))
        return {"text_states": states}

    def expert(self) -> int:
        """The expert the next step trains: the only one, or by turns the high-noise (0) and low-noise (1) one."""
        trained = self.parts.trained
        return trained[self.step % len(trained)]

    def _loss(self, batch: dict, expert: int | None = None) -> tuple[torch.Tensor, dict]:
        """The objective on one micro-batch; a two-expert model's ``expert`` (default: the next step's) is given
        only the noise levels it serves (`expert_range`)."""
        cfg = self.cfg
        with self.accelerator.autocast():
            if cfg.task == "vae":
                video = batch["video"].to(self.accelerator.device)
                return vae_loss(self.model, video, cfg.objective, self.generator)
            latents = self._latents(batch)
            patch = tuple(self.parts.dit.config.patch_size)
            model, levels = self.model, None
            if self.parts.layout.experts == 2:
                expert = self.expert() if expert is None else expert
                model = functools.partial(self.model, expert=expert)
                levels = expert_range(self.parts.layout.boundary_ratio, expert)
            loss, stats = dit_loss(model, latents, self._text(batch["caption"]), cfg.objective, self.generator,
                                   patch_size=patch, levels=levels)
            return loss, stats if levels is None else {**stats, "expert": expert}

    def _step(self, batches) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; returns the numbers to log."""
        acc, n = self.accelerator, self.cfg.train.grad_accum
        total, samples, stats = 0.0, 0, {}
        expert = self.expert() if self.cfg.task == "dit" else None  # every micro-batch of a step trains one
        for i in range(n):
            batch = next(batches)
            sync = contextlib.nullcontext() if i == n - 1 else acc.no_sync(self.model)
            with sync:
                loss, stats = self._loss(batch, expert)
                acc.backward(loss / n)
            total += loss.item() / n
            samples += len(batch["caption"])
        norm = None
        if self.cfg.optim.max_grad_norm > 0:
            norm = acc.clip_grad_norm_(list(self.trainable.values()), self.cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.trainable)
        self.step += 1
        return {"loss": total, "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": float(norm) if norm is not None else float("nan"), "samples": samples, **stats}

    # ------------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        staging = ckpt.staging_folder(self.output, self.step)
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"step": self.step, "data": self.stream.state(), "processes": acc.num_processes}
            ckpt.write_shared_state(staging, trainable=self.trainable, ema=self.ema, optimizer=self.optimizer,
                                    scheduler=self.scheduler, state=state)
        acc.wait_for_everyone()
        ckpt.write_rank_state(staging, acc.process_index, self.generator)
        acc.wait_for_everyone()
        final = ckpt.staging_folder(self.output, self.step).parent / f"step-{self.step:07d}"
        if acc.is_main_process:
            final = ckpt.publish(self.output, staging, self.step, self.cfg.train.keep_checkpoints)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, folder: Path) -> None:
        saved = ckpt.read_checkpoint(folder, self.accelerator.process_index)
        state = saved["state"]
        if state.get("processes", 1) != self.accelerator.num_processes:
            raise InputError(f"{folder}: saved by {state['processes']} process(es), resumed with "
                             f"{self.accelerator.num_processes}; the data order would differ")
        missing = set(self.trainable) - set(saved["trainable"])
        if missing:
            raise InputError(f"{folder}: checkpoint lacks {len(missing)} trained tensor(s), e.g. {sorted(missing)[0]}")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(saved["trainable"][name])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.ema is not None and saved["ema"] is not None:
            self.ema.load_state_dict({**state["ema"], "shadow": saved["ema"]})
        if saved["rng"] is not None:
            ckpt.set_rng_state(self.generator, saved["rng"])
        self.stream.load_state(state["data"])
        self.step = state["step"]

    # ---------------------------------------------------------------------------------------- the run

    def request_stop(self) -> None:
        """Stop after the current step, with a checkpoint (what Ctrl-C and SIGTERM do)."""
        self._stop.set()

    def _stopping(self, out_of_time: bool) -> tuple[bool, bool]:
        """(asked to stop, out of time) on any process: all of them must stop at the same step (barriers)."""
        flags = torch.tensor([float(self._stop.is_set()), float(out_of_time)], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags, reduction="sum")
        return tuple((flags > 0).tolist())

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop.is_set():  # a second Ctrl-C: stop now, without a checkpoint
                raise KeyboardInterrupt
            self.request_stop()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def run(self) -> RunResult:
        from tqdm.auto import tqdm

        cfg, acc, start = self.cfg, self.accelerator, time.perf_counter()
        if self.resume:
            self.load_checkpoint(ckpt.find_resume(self.output))
        log = RunLog(self.output, cfg, enabled=acc.is_main_process, resume_step=self.step if self.resume else None)
        self.model.train()
        with self._signals(), log, tqdm(total=cfg.train.end_step, initial=self.step, desc="training", unit="step",
                                        disable=not self.show, dynamic_ncols=True) as bar:
            samples, stats, late = self._loop(bar, log, start)
        self.save_checkpoint()
        outputs = self._export()
        self._validate()
        seconds = time.perf_counter() - start
        return RunResult(self.step, stats["loss"], outputs[0], seconds,
                         samples / max(seconds, 1e-9) if samples else 0.0, out_of_time=late, outputs=tuple(outputs))

    def _loop(self, bar, log: RunLog, start: float) -> tuple[int, dict, bool]:
        """Step to the end (or the time budget): (samples seen, the last step's stats, out of time)."""
        cfg, acc = self.cfg, self.accelerator
        samples, stats, late = 0, {"loss": float("nan")}, False
        budget, end = cfg.train.max_minutes * 60, cfg.train.end_step
        batches = iter(self.stream)
        while self.step < end:
            stats = self._step(batches)
            samples += stats["samples"] * acc.num_processes
            rate = samples / max(time.perf_counter() - start, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", samples_s=f"{rate:.2f}")
            if self.step % cfg.train.log_every == 0 or self.step == end:
                log.row(self.step, {**stats, "samples_per_s": rate})
            if self.callback is not None:
                self.callback(self, self.step, stats)
            stop, late = self._stopping(budget > 0 and time.perf_counter() - start > budget)
            if stop:
                saved = self.save_checkpoint()
                raise TrainingInterrupted(f"stopped at step {self.step}; checkpoint {saved} (continue with --resume)")
            if late:
                if self.show:
                    bar.write(f"train.max_minutes ({cfg.train.max_minutes:g}) reached at step {self.step} of "
                              f"{cfg.train.max_steps}: exporting (--resume goes on)", file=sys.stderr)
                break
            if self.step % cfg.train.checkpoint_every == 0 and self.step < end:
                self.save_checkpoint()
            if cfg.train.validate_every and self.step % cfg.train.validate_every == 0:
                self._validate()
        return samples, stats, late

    # ---------------------------------------------------------------------------------------- outputs

    def _validate(self) -> None:
        """Validation videos from the current weights (main process; the others wait)."""
        if self.accelerator.is_main_process:
            write_validation(self.cfg, self.parts, self.dataset, self.output, self.step, self.accelerator.device)
        self.accelerator.wait_for_everyone()

    def _export(self) -> list[Path]:
        """``model/``, or a LoRA file per trained expert (`LORA_FILES`), from the final (EMA, when kept) weights."""
        if self.ema is not None:
            self.ema.copy_to(self.trainable)
        cfg, parts = self.cfg, self.parts
        if cfg.mode == "lora":
            targets = [self.output / LORA_FILES[i] for i in parts.trained]
        else:
            targets = [self.output / "model"]
        if self.accelerator.is_main_process:
            if cfg.mode == "lora":
                for i, target in zip(parts.trained, targets):  # the expert recorded only where there are two
                    save_lora(parts.experts[i], cfg.lora, target, expert=EXPERTS[i] if parts.dit_2 else None)
            else:
                if cfg.task == "vae" and cfg.model.latent_stats == "measure":
                    mean, std = measure_latent_stats(parts.vae, self.dataset)
                    parts.vae.register_to_config(latents_mean=mean, latents_std=std)
                save_model_folder(cfg, parts, targets[0])
        self.accelerator.wait_for_everyone()
        return targets


def train(cfg: TrainConfig, output: str | Path, *, resume: bool = False, show_progress: bool = True) -> RunResult:
    """Run ``cfg`` into the folder ``output`` (see `Trainer`)."""
    return Trainer(cfg, output, resume=resume, show_progress=show_progress).run()
