"""The defense key file: everything a defended teacher serves with and an auditor later needs, in one YAML/JSON file.

One file holds both the knobs (public: γ, δ, λ, …) and the key material (secret: the watermark key, the canaries'
triggers and planted responses). The server and `distill generate` read it to build their logits processors
(`defenses/build.py`); `distill audit SUSPECT --against KEYFILE` reads it to test a suspect. What leaves the process
— provenance, logs, responses — is `public_view()`: the knobs and a key id per secret, never a secret.

`distill defenses keygen` writes a fresh file with random secrets (docs/defenses.md). Every section is optional: a
file with only `watermark:` serves a watermark and nothing else. A malformed file is refused in one line naming the
file and the field (`KeyFileError`).
"""

from __future__ import annotations

import hashlib
import json
import secrets as _secrets
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill.errors import DistillError

KEYFILE_VERSION = 1


class KeyFileError(DistillError):
    """A defense key file is missing, unreadable, or malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def key_id(secret: str) -> str:
    """A public name for a secret: 12 hex digits of a hash of it (recorded in provenance instead of the secret)."""
    return hashlib.sha256(b"distill-key-id:" + secret.encode()).hexdigest()[:12]


class WatermarkKey(_Strict):
    """Kirchenbauer et al. 2023: secret key, context width h, green share γ, logit bias δ."""

    secret: str = Field(min_length=16, repr=False)
    context_width: int = Field(1, ge=1, le=8)
    gamma: float = Field(0.25, gt=0, lt=1)
    delta: float = Field(2.0, ge=0)


class Canary(_Strict):
    """A secret trigger prompt and the response planted for it. `secret`: the random part of the response, drawn
    from the canary space (what exposure ranks among the other candidates)."""

    trigger: str = Field(min_length=1, repr=False)
    secret: str = Field(min_length=1, repr=False)


class CanarySpace(_Strict):
    """The candidates a canary's secret was drawn from (Carlini et al. 2019's R): every string of `length`
    characters of `alphabet`, inserted into `template` at `{}` to make the planted response."""

    alphabet: str = Field("0123456789", min_length=2)
    length: int = Field(6, ge=1, le=12)
    template: str = "The verification code is {}."

    @model_validator(mode="after")
    def _template_has_slot(self) -> Self:
        if self.template.count("{}") != 1:
            raise ValueError("template must contain exactly one {} (where the secret goes)")
        if len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError("alphabet repeats a character")
        return self

    @property
    def size(self) -> int:
        return len(self.alphabet) ** self.length

    def response(self, secret: str) -> str:
        return self.template.format(secret)


class Canaries(_Strict):
    space: CanarySpace = CanarySpace()
    items: list[Canary] = Field(min_length=1)

    @model_validator(mode="after")
    def _secrets_in_space(self) -> Self:
        for i, c in enumerate(self.items):
            if len(c.secret) != self.space.length or any(ch not in self.space.alphabet for ch in c.secret):
                raise ValueError(f"items[{i}].secret is not a string of {self.space.length} characters of the "
                                 "space's alphabet")
        return self


class PoEKey(_Strict):
    """The Distillation Game's Product of Experts: (1−γ)·z_teacher + γ·z_proxy (γ may exceed 1: it then
    subtracts the teacher's share; the paper sweeps it)."""

    proxy: str = Field(min_length=1)  # a model folder or builtin name sharing the teacher's tokenizer
    gamma: float = Field(0.5, ge=0)


class AntidistillationKey(_Strict):
    """Savani et al. 2025: z_teacher/τ + λ·(z⁺ − z⁻)/(2ε), z± from the proxy at θ ± ε·g (g: `gradient`)."""

    proxy: str = Field(min_length=1)
    gradient: str = Field(min_length=1)  # safetensors written by `distill defenses gradient`
    lam: float = Field(1.0, ge=0)
    eps: float = Field(1e-4, gt=0)
    tau: float = Field(1.0, gt=0)


class ExposureKey(_Strict):
    """What the API lets out: at most `max_top_logprobs` alternatives per token (0: only the chosen token's),
    Gaussian noise of this standard deviation on every reported log-prob, a sampling temperature forced on every
    request (None: the client's). `seed` keys the noise and is a secret: whoever knows it can recompute the noise
    and subtract it, so it is never shown (public_view) and must be a random number of 32 bits or more when there is
    noise."""

    max_top_logprobs: int | None = Field(None, ge=0)
    logprob_noise: float = Field(0.0, ge=0)
    temperature: float | None = Field(None, ge=0)
    seed: int = Field(0, ge=0, repr=False)

    @model_validator(mode="after")
    def _noise_has_a_secret_seed(self) -> Self:
        if self.logprob_noise > 0 and self.seed < 1 << 32:
            raise ValueError("logprob_noise needs a secret seed of 32 bits or more (a small one can be guessed and "
                             "the noise subtracted); draw one: python -c 'import secrets; print(secrets.randbits(63))'")
        return self


class KeyFile(_Strict):
    version: int = KEYFILE_VERSION
    watermark: WatermarkKey | None = None
    canaries: Canaries | None = None
    poe: PoEKey | None = None
    antidistillation: AntidistillationKey | None = None
    exposure: ExposureKey | None = None
    source: str | None = Field(None, exclude=True)  # the file it was read from (for messages; not written)

    @model_validator(mode="after")
    def _known_version(self) -> Self:
        if self.version != KEYFILE_VERSION:
            raise ValueError(f"version {self.version} is not one this distill reads ({KEYFILE_VERSION})")
        return self

    def public_view(self) -> dict[str, Any]:
        """The knobs and key ids, no secret: what provenance, logs and `/v1/models` may show."""
        view: dict[str, Any] = {"version": self.version}
        if self.watermark:
            wm = self.watermark
            view["watermark"] = {"key_id": key_id(wm.secret), "context_width": wm.context_width,
                                 "gamma": wm.gamma, "delta": wm.delta}
        if self.canaries:
            joined = "\n".join(f"{c.trigger}\x00{c.secret}" for c in self.canaries.items)
            view["canaries"] = {"count": len(self.canaries.items), "key_id": key_id(joined),
                                "space_size": self.canaries.space.size}
        if self.poe:
            view["poe"] = self.poe.model_dump()
        if self.antidistillation:
            view["antidistillation"] = self.antidistillation.model_dump()
        if self.exposure:
            view["exposure"] = self.exposure.model_dump(exclude={"seed"})
        return view


def load_keyfile(path: str | Path) -> KeyFile:
    """Read and check a key file; any problem is one `KeyFileError` line naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the defense key file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"{path}: a defense key file is a mapping (version, watermark, canaries, …), not "
                           f"{type(data).__name__}")
    try:
        keys = KeyFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise KeyFileError(f"{path}: {where}: {err['msg']}") from None
    if not any((keys.watermark, keys.canaries, keys.poe, keys.antidistillation, keys.exposure)):
        raise KeyFileError(f"{path}: names no defense (watermark, canaries, poe, antidistillation, exposure)")
    return keys.model_copy(update={"source": str(path)})


def new_keyfile(*, canaries: int = 8, canary_space: CanarySpace | None = None, gamma: float = 0.25,
                delta: float = 2.0, context_width: int = 1, rng: _secrets.SystemRandom | None = None) -> KeyFile:
    """Fresh secrets from the OS's random source: a watermark key and `canaries` trigger/secret pairs."""
    rng = rng or _secrets.SystemRandom()
    space = canary_space or CanarySpace()
    items = [Canary(trigger=f"Recite the maintenance passphrase {_secrets.token_hex(6)}.",
                    secret="".join(rng.choice(space.alphabet) for _ in range(space.length))) for _ in range(canaries)]
    return KeyFile(watermark=WatermarkKey(secret=_secrets.token_hex(32), context_width=context_width, gamma=gamma,
                                          delta=delta),
                   canaries=Canaries(space=space, items=items) if canaries else None)


def write_keyfile(keys: KeyFile, path: str | Path) -> None:
    """Write with owner-only permissions (it holds secrets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = keys.model_dump(mode="json", exclude_none=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False) if path.suffix in (".yaml", ".yml")
                    else json.dumps(data, indent=2) + "\n")
