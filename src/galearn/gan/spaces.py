"""Which feature space may judge a GAN's realism: not the one its discriminator looked through.

Below ``gan/evaluate.py`` so that training (``gan/loop.py``) can refuse a bad
``gan.realism_space`` before it spends any CPU time.
"""

from __future__ import annotations

from ..errors import BadValueError
from ..morphometry import MORPHOMETRY

#: ``gan.realism_space`` of the encoder learnt from the real training stamps (:mod:`galearn.gan.realism_encoder`).
SELF_SUPERVISED = "self-supervised"

__all__ = ["SELF_SUPERVISED", "check_realism_space", "check_gan_config", "TARGETED_MORPHOMETRY_GROUPS",
           "targeted_morphometry_groups"]

#: The morphometry groups (:data:`galearn.morphometry.MORPHOMETRY_GROUPS`) whose statistics a G-loss term
#: matches to the real stamps': the azimuthally averaged power spectrum in the evaluation's own bins, and
#: the pixel-value distribution whose percentiles the morphometry vector holds, and the light profile in
#: its annuli (alone, and jointly with the spectrum); the colour maps' spectra (bands' differences) count
#: against both the spectra and the colours; the noiseless sky levels' distribution counts against the pixel
#: percentiles.
TARGETED_MORPHOMETRY_GROUPS = {"g_power_match": ("power spectrum",), "g_stamp_power_match": ("power spectrum",),
                               "g_colour_power_match": ("power spectrum", "colour"), "g_pixel_match": ("pixel percentiles",),
                               "g_profile_match": ("profile",), "g_joint_match": ("power spectrum", "profile"),
                               "g_sky_level_match": ("pixel percentiles",)}


def check_realism_space(space: str, trained: dict, backbone: str | None = None) -> str:
    """Resolve ``gan.realism_space`` and refuse the discriminator's own feature network.

    ``space``: ``"morphometry"`` (:mod:`galearn.morphometry`), ``"self-supervised"``
    (:mod:`galearn.gan.realism_encoder`, learnt from the real training stamps alone),
    ``"backbone"`` (the run's feature backbone ``backbone``) or a registered backbone name.
    ``trained``: ``{"discriminator", "d_backbone"}`` of the GAN run. A
    generator trained against a network's features can lower distances
    measured in that network's space without becoming more realistic
    (Kynkäänniemi et al. 2023), so that space is refused (:class:`BadValueError`, exit 2).
    """
    from ..features.backbones import list_backbones

    name = str(space or "").strip()
    if name == "backbone":
        name = backbone or ""
    if (name not in (MORPHOMETRY, SELF_SUPERVISED, "custom") and name not in list_backbones()
            and not name.startswith("timm:")):
        raise BadValueError(f"gan.realism_space={space!r} is not known; use {MORPHOMETRY!r}, {SELF_SUPERVISED!r}, "
                            "'backbone' or one of "
                            f"{', '.join(list_backbones())}")
    if trained.get("discriminator") == "projected" and name == trained.get("d_backbone"):
        raise BadValueError(
            f"gan.realism_space={space!r} is the feature network the projected discriminator was trained through "
            f"({trained.get('d_backbone')}): its FID / precision / recall can be gamed; use {MORPHOMETRY!r} or another backbone")
    return name


def check_gan_config(cfg) -> None:
    """Refuse (before training) a ``gan.realism_space`` that is the projected D's feature network."""
    if getattr(cfg, "discriminator", "sngan") == "projected":
        check_realism_space(getattr(cfg, "realism_space", MORPHOMETRY),
                            {"discriminator": "projected", "d_backbone": cfg.d_backbone})


def targeted_morphometry_groups(trained: dict) -> list[str]:
    """The morphometry groups G's loss was trained to match (``trained``: the run's ``gan`` settings), in a fixed order.

    A generator that matches a statistic in its loss lowers distances measured
    on that statistic whether or not it becomes more realistic -- the
    discriminator's case of Kynkäänniemi et al. 2023 on G's own terms -- so
    ``galearn gan evaluate`` also reports realism with these groups left out.
    """
    groups: list[str] = []
    for term, names in TARGETED_MORPHOMETRY_GROUPS.items():
        if float(trained.get(term) or 0.0) > 0:
            groups += [g for g in names if g not in groups]
    return groups
