"""Decoding a traversal's frames within a time budget per picture (no paper equation: the frames are the images
G(z_t) of the paper's eq. 2 paths).

Slow generators (a diffusion model decodes one image in ~10 UNet passes, hub_models/ddim.py): at load, the time of
one image's decode is measured (`seconds_per_image`), and every picture then decodes at most DECODE_BUDGET_S worth
of frames (`frame_budget`). A strip of 2S + 1 frames over that budget shows fewer, evenly spaced, z0 and both ends
kept (never fewer than MIN_FRAMES per strip: `frame_indices`); the page and the load's info text say so. Frames are
decoded in chunks of about PROGRESS_EVERY_S, each reported to a progress callable (gradio's gr.Progress, unit
"frames"). The paths themselves (trajectories, landscapes, path shapes) are never thinned.

The budget constants are read at call time, so a test may change them on this module.
"""
from __future__ import annotations

import time

import torch

# Decoding per picture (strip, overview or comparison): about this many seconds at the per-image time measured at
# load. A fast VAE (ms per image) never reaches it; a diffusion model (~1 s per image on the Space's CPU) would take
# minutes for an overview's K·(2S + 1) frames.
DECODE_BUDGET_S = 20.0
MIN_FRAMES = 3  # a strip keeps at least its two ends and z0, whatever the budget
# One image's decode is timed at load (after a warm-up) up to this many times, stopping once this long was spent:
# the least is kept, since a shared machine only ever adds time (measured 1-10 ms for one 1-ms VAE decode).
DECODE_REPEATS, DECODE_TIMING_S = 3, 0.5
PROGRESS_EVERY_S = 1.0  # decode in chunks of about this long, each reported to the progress callable
# ... and of at most this many latents: the overview's 168 dSprites frames decoded 1.3-1.7x faster in chunks of 64
# than in one batch (whose activations outgrow the CPU caches), to the same pixels; MNIST-sized images neither gain
# nor lose.
DECODE_CHUNK = 64
# Strip frames at no less than 64 px (upscaled by whole factors below that, e.g. MNIST's 28 px to 84), shown at their
# pixel size: a frame shrunk by the page hides the small changes (a few degrees of rotation) a traversal makes.
STRIP_MIN_SIZE = 64


def channels_last(generator, decoded: torch.Tensor) -> None:
    """Convolution weights in channels-last layout, kept if the generator still decodes latent seed 0 to `decoded`
    (up to 1e-4): on the CPU the shipped convolutional generators then decoded 10-40% faster, the VAEs to the same
    bits, the GANs within 5e-6. A generator that views a convolution's output as flat raises instead, and stays as
    it was."""
    if not any(p.dim() == 4 for p in generator.parameters()):
        return  # no convolutions: nothing to lay out
    generator.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            same = torch.allclose(generator.decode(generator.sample_latent(1, seed=0)), decoded, atol=1e-4)
    except RuntimeError:
        same = False
    if not same:
        generator.to(memory_format=torch.contiguous_format)


def seconds_per_image(generator) -> float:
    """The least measured time of one image's decode, over DECODE_REPEATS tries or DECODE_TIMING_S of them
    (one for a generator slower than that), after the caller's warm-up decode of one image."""
    z = generator.sample_latent(1, seed=1)
    times = []
    with torch.no_grad():
        while len(times) < DECODE_REPEATS and sum(times) < DECODE_TIMING_S:
            start = time.perf_counter()
            generator.decode(z)
            times.append(time.perf_counter() - start)
    return min(times)


def frame_budget(decode_s: float) -> int:
    """Frames a picture may decode at `decode_s` seconds per image: DECODE_BUDGET_S worth."""
    return int(min(DECODE_BUDGET_S / max(decode_s, 1e-9), 2**31))


def duration_text(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.0f} ms"


def frame_indices(num_steps: int, max_frames: int) -> torch.Tensor:
    """Which of a traversal's 2S + 1 frames (z0 at index S) to decode: all of them when they fit in `max_frames`,
    else an odd number 2m + 1 <= max(max_frames, MIN_FRAMES) evenly spaced from one end to the other, z0 in the
    middle."""
    total = 2 * num_steps + 1
    if max_frames >= total:
        return torch.arange(total)
    half = (max(max_frames, MIN_FRAMES) - 1) // 2
    # Symmetric about z0; the spacing S / m >= 1 keeps the rounded indices distinct.
    return torch.linspace(-num_steps, num_steps, 2 * half + 1).round().long() + num_steps


def shown_frames(loaded, num_steps: int, strips: int) -> torch.Tensor:
    """frame_indices for one of `strips` strips that share a picture's decode budget (`loaded.frame_budget`)."""
    return frame_indices(num_steps, loaded.frame_budget // max(strips, 1))


def decode_frames(loaded, path: torch.Tensor, progress=None) -> torch.Tensor:
    """(N, B, d) latents -> (N, B, C, H, W) images in [0, 1] by `loaded.generator`, in chunks of about
    PROGRESS_EVERY_S of decoding (at most DECODE_CHUNK latents), each reported as
    progress((done, total), unit="frames") when `progress` is given."""
    flat = path.reshape(-1, path.shape[-1])
    chunk = max(1, min(DECODE_CHUNK, int(PROGRESS_EVERY_S / max(loaded.decode_s, 1e-9))))
    images = []
    if progress is not None:
        progress((0, len(flat)), desc="Decoding frames", unit="frames")
    with torch.no_grad():
        for i in range(0, len(flat), chunk):
            images.append(loaded.generator.decode(flat[i:i + chunk]))
            if progress is not None:
                progress((min(i + chunk, len(flat)), len(flat)), desc="Decoding frames", unit="frames")
    images = torch.cat(images).clamp(0, 1)
    return images.reshape(*path.shape[:2], *images.shape[1:])


def frames_note(loaded, num_steps: int) -> str:
    """What the page says under the strip when the budget thinned its frames or the overview's ("" when not)."""
    total = 2 * num_steps + 1
    strip = len(shown_frames(loaded, num_steps, 1))
    row = len(shown_frames(loaded, num_steps, loaded.flow.num_potentials))
    if strip == row == total:
        return ""
    return (f"**Frames capped:** one image takes {duration_text(loaded.decode_s)} to decode with this generator, so "
            f"a picture decodes at most {loaded.frame_budget} frames (about {DECODE_BUDGET_S:g} s). Of the "
            f"traversal's {total} frames the strip shows {strip} and each overview row {row}, evenly spaced, with "
            "z<sub>0</sub> and both ends.")
