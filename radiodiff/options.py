"""Every named choice of params.yaml, as Enums: the vocabulary config and code share.

A leaf: imports nothing but the standard library, so parsing params never pays for torch.
The modules that act on a choice (the networks, the schedule, the condition encoder) import
their Enum from here.
"""

from __future__ import annotations

import enum

SPLITS = ("train", "val", "test")  # RadioUNet's split of the RadioMapSeer maps


class TargetSource(enum.Enum):
    """Where the training targets come from."""

    SIMULATE = "simulate"  # the project's propagation simulator on the shipped layouts
    RADIOMAPSEER = "radiomapseer"  # gain PNGs of a full RadioMapSeer copy


class TxEncoding(enum.Enum):
    """A geometric field of the Tx position, each one extra condition channel in [0, 1]."""

    LOG_DISTANCE = "log_distance"  # 1 - log10(d) / log10(d_max): bright near the Tx
    BLOB = "blob"  # exp(-d^2 / 2 sigma^2)
    LOS = "los"  # 1 where the straight segment from the Tx crosses no building
    LOS_LOG_DISTANCE = "los_log_distance"  # LOS x LOG_DISTANCE
    CAR_SHADOW = "car_shadow"  # car crossed on the straight segment from the Tx (0 without cars)


class ReconKind(enum.Enum):
    """Pixel reconstruction penalty of the VAE."""

    L1 = "l1"
    L2 = "l2"


class AttentionKind(enum.Enum):
    """Which self-attention the latent UNet uses in its low-resolution levels."""

    NONE = "none"
    WINDOW = "window"


class FlowSampler(enum.Enum):
    """How flow matching integrates its predicted velocity from noise to data."""

    EULER = "euler"  # one network call per step
    HEUN = "heun"  # Euler, then the mean of the velocities at both ends: two calls, second order


class LossWeighting(enum.Enum):
    """How much each map of a batch counts in the denoiser's loss."""

    NONE = "none"  # equally
    ENERGY = "energy"  # by 1 / its energy mean(gain^2), as in the mean NMSE
    TRAFFIC = "traffic"  # a map with cars counts `losses.TRAFFIC_WEIGHT` times one without
    MIN_SNR = "min_snr"  # by its draw's time: the x0 error weighed min(SNR(t), 5) (eps, v and x0 objectives)


class TailLoss(enum.Enum):
    """What the Flux tail and its few-step control are fine-tuned on."""

    DIFFUSION = "diffusion"  # the objective's own loss at points of the path from the start latent to x0
    DECODED = "decoded"  # the served sampler's decoded map against the truth: the mean NMSE evaluate reports


class Augmentation(enum.Enum):
    """How a training stage multiplies its train maps."""

    NONE = "none"  # the maps as prepared
    DIHEDRAL = "dihedral"  # each map also rotated by 90, 180, 270 degrees and mirrored: 8 variants


class ScheduleKind(enum.Enum):
    """How beta_t grows over the diffusion steps."""

    LINEAR = "linear"
    COSINE = "cosine"


class Prediction(enum.Enum):
    """The diffusion objective: what the network predicts. EPS, V and X0 live on a discrete
    noise schedule; KC is RadioDiff's decoupled objective on continuous time (two heads, C
    and the noise); FLOW is rectified-flow matching on continuous time (the straight path's
    velocity). `radiodiff.diffusion.make_process` turns one into its process."""

    EPS = "eps"
    V = "v"
    X0 = "x0"
    KC = "kc"
    FLOW = "flow"

    @property
    def on_schedule(self) -> bool:
        """Whether the objective lives on a discrete noise schedule (eps, v, x0)."""
        return self in (Prediction.EPS, Prediction.V, Prediction.X0)


class Preconditioning(enum.Enum):
    """How the raw heads of the decoupled (KC) objective become (C, noise); see
    `radiodiff.diffusion.decoupled.head_coefficients`. MMSE: the linear MMSE skip with unit
    variance targets (EDM's rule); RADIODIFF: RadioDiff's published coefficients."""

    MMSE = "mmse"
    RADIODIFF = "radiodiff"


class SamplerKind(enum.Enum):
    """Reverse-process sampler of a discrete-schedule objective."""

    DDIM = "ddim"  # deterministic with eta = 0; any number of steps
    DDPM = "ddpm"  # ancestral; all T steps


class Precision(enum.Enum):
    """Arithmetic of the forward passes (autocast). AUTO: bf16 where the device computes it
    natively (CUDA, CPUs with AVX512-BF16 or AMX), fp32 elsewhere (`radiodiff.devices`)."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"  # with a loss scaler in training
    FP32 = "fp32"
