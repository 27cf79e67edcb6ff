"""Image corruptions at severities 1-5 for robustness testing, in the spirit of MedMNIST-C.

Each corruption separates sampling from applying (TorchIO style): ``sample(severity, rng)``
draws JSON-serialisable parameters (noise seeds included), ``apply(array, params)``
applies them deterministically, so every corrupted image can be reproduced from its
record. Severity sets the strength (the table ``levels``, increasing in effect); the
random generator only picks what does not change the strength (a noise realisation,
a direction, a k-space location).

Arrays are ``(I, J)`` or ``(I, J, K)`` grey images in any intensity unit. Strengths are
relative to the image's own intensity range ``max - min``, so CT in HU and MR in
arbitrary units corrupt alike. Blur, motion, JPEG, downsampling and ghosting act within
each ``(I, J)`` plane (slices are often thick); noise, contrast, gamma, bias field and
spikes act on the whole array. Results are float64 and not clipped, except JPEG, which
quantises to 8 bits over the image's range.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np

from medfm.errors import MedfmError

SEVERITIES = (1, 2, 3, 4, 5)


def _check(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim not in (2, 3):
        raise MedfmError(f"corruptions take (I, J) or (I, J, K) grey images, got shape {array.shape}")
    return array


def _range(array: np.ndarray) -> tuple[float, float]:
    low, high = float(array.min()), float(array.max())
    return low, (high - low) or 1.0  # a constant image: unit range, so strengths stay finite


def _planes(array: np.ndarray, function) -> np.ndarray:
    """``function`` applied to each ``(I, J)`` plane of a 2D or 3D array."""
    if array.ndim == 2:
        return function(array)
    return np.stack([function(array[:, :, k]) for k in range(array.shape[2])], axis=2)


class Corruption:
    """One kind of corruption; subclasses set ``name``, ``levels`` (one strength per severity) and the two hooks."""

    name: ClassVar[str]
    levels: ClassVar[tuple[float, ...]]

    def sample(self, severity: int, rng: np.random.Generator) -> dict[str, Any]:
        """Parameters for ``severity`` (1-5): ``{"corruption", "severity", "strength", ...}``."""
        if severity not in SEVERITIES:
            raise MedfmError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
        strength = self.levels[severity - 1]
        return {"corruption": self.name, "severity": severity, "strength": strength, **self._sample(strength, rng)}

    def apply(self, array: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        """``array`` (``(I, J)`` or ``(I, J, K)``) corrupted as ``params`` say; float64, same shape."""
        if params.get("corruption") != self.name:
            raise MedfmError(f"parameters of {params.get('corruption')!r} given to the {self.name!r} corruption")
        return self._apply(_check(array), params)

    def __call__(self, array: np.ndarray, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """Sample and apply: the corrupted array and the record of what was applied."""
        params = self.sample(severity, rng)
        return self.apply(array, params), params

    def _sample(self, strength: float, rng: np.random.Generator) -> dict[str, Any]:
        return {}

    def _apply(self, array: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError


def _seed(rng: np.random.Generator) -> dict[str, int]:
    return {"seed": int(rng.integers(2**31))}


class GaussianNoise(Corruption):
    """Additive Gaussian noise; strength: standard deviation as a fraction of the intensity range."""

    name, levels = "gaussian_noise", (0.02, 0.04, 0.07, 0.10, 0.15)
    _sample = staticmethod(lambda strength, rng: _seed(rng))

    def _apply(self, array, params):
        _, span = _range(array)
        return array + np.random.default_rng(params["seed"]).normal(0, params["strength"] * span, array.shape)


class PoissonNoise(Corruption):
    """Quantum (shot) noise; strength: photon count at the top of the intensity range (fewer is noisier)."""

    name, levels = "poisson_noise", (500.0, 150.0, 50.0, 20.0, 8.0)
    _sample = staticmethod(lambda strength, rng: _seed(rng))

    def _apply(self, array, params):
        low, span = _range(array)
        photons = params["strength"]
        counts = np.random.default_rng(params["seed"]).poisson((array - low) / span * photons)
        return counts / photons * span + low


class SpeckleNoise(Corruption):
    """Multiplicative noise, as in ultrasound; strength: standard deviation of the multiplier around 1."""

    name, levels = "speckle_noise", (0.05, 0.10, 0.18, 0.27, 0.40)
    _sample = staticmethod(lambda strength, rng: _seed(rng))

    def _apply(self, array, params):
        low, _ = _range(array)
        noise = np.random.default_rng(params["seed"]).normal(0, params["strength"], array.shape)
        return array + (array - low) * noise


class GaussianBlur(Corruption):
    """In-plane Gaussian blur; strength: sigma in pixels."""

    name, levels = "gaussian_blur", (0.6, 1.0, 1.6, 2.4, 3.5)

    def _apply(self, array, params):
        from scipy.ndimage import gaussian_filter

        sigma = params["strength"]
        return gaussian_filter(array, sigma=(sigma, sigma) + (0,) * (array.ndim - 2), mode="reflect")


class MotionBlur(Corruption):
    """In-plane linear motion blur; strength: path length in pixels; the direction is sampled."""

    name, levels = "motion_blur", (3.0, 5.0, 8.0, 12.0, 17.0)
    _sample = staticmethod(lambda strength, rng: {"angle_deg": float(rng.uniform(0, 180))})

    def _apply(self, array, params):
        from scipy.ndimage import convolve

        length, angle = params["strength"], np.deg2rad(params["angle_deg"])
        half = int(np.ceil(length / 2))
        kernel = np.zeros((2 * half + 1,) * 2)
        # a segment of the given length through the centre, drawn with sub-pixel steps
        for t in np.linspace(-length / 2, length / 2, int(4 * length) + 1):
            kernel[int(round(half + t * np.cos(angle))), int(round(half + t * np.sin(angle)))] += 1
        kernel /= kernel.sum()
        return _planes(array, lambda plane: convolve(plane, kernel, mode="reflect"))


class Contrast(Corruption):
    """Lower contrast around the mean; strength: the factor that scales deviations from it."""

    name, levels = "contrast", (0.75, 0.55, 0.40, 0.28, 0.18)

    def _apply(self, array, params):
        mean = array.mean()
        return (array - mean) * params["strength"] + mean


class Gamma(Corruption):
    """Gamma change over the intensity range; strength: exponent, applied as is or inverted (sampled)."""

    name, levels = "gamma", (1.3, 1.6, 2.0, 2.6, 3.4)
    _sample = staticmethod(lambda strength, rng: {"inverted": bool(rng.integers(2))})

    def _apply(self, array, params):
        low, span = _range(array)
        exponent = 1 / params["strength"] if params["inverted"] else params["strength"]
        return ((array - low) / span) ** exponent * span + low


class BiasField(Corruption):
    """Smooth multiplicative intensity non-uniformity, as MR coil bias (MONAI's RandBiasField's model).

    The log of the field is a polynomial of degree 3 in the normalised coordinates; its
    coefficients have a sampled direction and a norm set by the strength.
    """

    name, levels = "bias_field", (0.15, 0.30, 0.50, 0.75, 1.05)
    DEGREE = 3

    def _sample(self, strength, rng):
        n_terms = len(self._exponents(3))
        direction = rng.normal(size=n_terms)
        return {"coefficients": (direction / np.linalg.norm(direction) * strength).tolist()}

    def _exponents(self, ndim: int) -> list[tuple[int, ...]]:
        from itertools import product

        # all 3D terms up to DEGREE; 2D images use those without the third axis' powers
        return [e for e in product(range(self.DEGREE + 1), repeat=3) if 0 < sum(e) <= self.DEGREE and (ndim == 3 or e[2] == 0)]

    def _apply(self, array, params):
        from numpy.polynomial.legendre import legval

        low, _ = _range(array)
        axes = [np.linspace(-1, 1, n) for n in array.shape]
        log_field = np.zeros(array.shape)
        coefficients = params["coefficients"]
        for c, powers in zip(coefficients, self._exponents(3)):
            if array.ndim == 2 and powers[2]:
                continue
            term = c
            for axis, (grid, p) in enumerate(zip(axes, powers)):
                shape = [1] * array.ndim
                shape[axis] = -1
                term = term * legval(grid, [0] * p + [1]).reshape(shape)
            log_field = log_field + term
        return (array - low) * np.exp(log_field) + low


class JPEGCompression(Corruption):
    """JPEG compression of each plane, quantised to 8 bits over the image's range; strength: JPEG quality."""

    name, levels = "jpeg", (75.0, 45.0, 25.0, 12.0, 5.0)

    def _apply(self, array, params):
        from PIL import Image as PILImage

        low, span = _range(array)

        def compress(plane: np.ndarray) -> np.ndarray:
            buffer = io.BytesIO()
            grey = np.round((plane - low) / span * 255).astype(np.uint8)
            PILImage.fromarray(grey).save(buffer, format="JPEG", quality=int(params["strength"]))
            return np.asarray(PILImage.open(buffer), dtype=np.float64)

        return _planes(array, compress) / 255 * span + low


class Downsampling(Corruption):
    """In-plane downsampling by a factor and linear interpolation back to the grid; strength: the factor."""

    name, levels = "downsample", (1.5, 2.0, 3.0, 4.0, 6.0)

    def _apply(self, array, params):
        from scipy.ndimage import zoom

        def resample(plane: np.ndarray) -> np.ndarray:
            small = zoom(plane, 1 / params["strength"], order=1, mode="nearest", grid_mode=True)
            return zoom(small, np.divide(plane.shape, small.shape), order=1, mode="nearest", grid_mode=True)

        return _planes(array, resample)


class Ghosting(Corruption):
    """MRI ghosting, TorchIO's model: every ``n``-th k-space line along the phase-encoding axis is attenuated.

    Strength: attenuation (0-1); the axis (i or j) and the ghost count (2-5) are sampled.
    The central line is kept, so mean intensity is kept.
    """

    name, levels = "ghosting", (0.2, 0.35, 0.5, 0.7, 0.9)
    _sample = staticmethod(lambda strength, rng: {"axis": int(rng.integers(2)), "num_ghosts": int(rng.integers(2, 6))})

    def _apply(self, array, params):
        axis, n = params["axis"], params["num_ghosts"]

        def ghost(plane: np.ndarray) -> np.ndarray:
            spectrum = np.fft.fftshift(np.fft.fft2(plane))
            centre = plane.shape[axis] // 2
            lines = [i for i in range(plane.shape[axis]) if i % n == 0 and i != centre]
            index = [slice(None)] * 2
            index[axis] = lines
            spectrum[tuple(index)] *= 1 - params["strength"]
            return np.fft.ifft2(np.fft.ifftshift(spectrum)).real

        return _planes(array, ghost)


class Spikes(Corruption):
    """MRI spike (herringbone) artefact through MONAI's ``KSpaceSpikeNoise``.

    Strength: spike magnitude as a fraction of the k-space centre (DC) magnitude; the
    spike's position in k-space is sampled (as fractions of each axis, off the centre).
    """

    name, levels = "spikes", (0.02, 0.04, 0.08, 0.14, 0.24)
    _sample = staticmethod(lambda strength, rng: {"position": rng.uniform(0.1, 0.4, 3).tolist()})

    def _apply(self, array, params):
        from monai.transforms import KSpaceSpikeNoise

        dc = abs(array.sum()) or 1.0
        # MONAI's k-space is shifted: the centre is at n // 2 along each axis
        loc = tuple(min(n - 1, n // 2 + round(f * n)) for n, f in zip(array.shape, params["position"]))
        spiked = KSpaceSpikeNoise(loc=loc, k_intensity=float(np.log(params["strength"] * dc)))(array[None])
        return np.asarray(spiked)[0].astype(np.float64)


#: Every corruption by name.
CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        GaussianNoise(), PoissonNoise(), SpeckleNoise(), GaussianBlur(), MotionBlur(), Contrast(), Gamma(),
        BiasField(), JPEGCompression(), Downsampling(), Ghosting(), Spikes(),
    )
}


def get_corruption(name: str) -> Corruption:
    """The corruption called ``name``, or an error listing the valid names."""
    if name not in CORRUPTIONS:
        raise MedfmError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]
