"""The decoders of the prior's tokens, as the reconstruct and predict stages run them: the unCLIP
decoder for images, GIT for captions, and the converters into their spaces (fmri_recon.decode.converter)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fmri_recon import helpers


class Decoders:
    """The unCLIP decoder, GIT, and the converters into their spaces (inputs ``decoder``, ``git``,
    ``to_git`` and, for tokens of another space, ``to_decoder``): what reconstruct and predict run
    on the prior's tokens, chunk by chunk."""

    def __init__(self, inputs, decoder_settings: dict, caption_settings: dict, device, dtype):
        from fmri_recon.decode import converter
        from fmri_recon.decode.captions import GitCaptioner
        from fmri_recon.decode.unclip import UnclipDecoder

        self.dec, self.cap, self.device = decoder_settings, caption_settings, device
        self.to_decoder = converter.load(inputs.to_decoder) if "to_decoder" in inputs.keys() else None
        self.to_git = converter.load(inputs.to_git)
        self.decoder = UnclipDecoder.from_pretrained(inputs.decoder, device=device, dtype=dtype)
        self.git = GitCaptioner.from_pretrained(inputs.git, device=device, dtype=dtype)

    @torch.no_grad()
    def run(self, tokens: torch.Tensor, seed: int) -> dict:
        """Images (n,3,256,256) and GIT captions of the prior's ``tokens`` (n,S,E)."""
        from fmri_recon.resize import to_output_size

        cond = self.to_decoder(tokens) if self.to_decoder is not None else tokens
        decoded = self.decoder.decode(cond.to(self.device), generator=torch.Generator().manual_seed(seed),
                                      num_steps=self.dec["steps"], guidance=self.dec["guidance"],
                                      batch_size=self.dec["batch_size"])
        captions = self.git.caption(self.to_git(tokens).to(self.device), max_length=self.cap["max_length"])
        return {"recons": to_output_size(decoded), "predcaptions": captions}

    def run_all(self, tokens: torch.Tensor, progress: Path) -> dict:
        """``run`` over ``decoder.chunk`` images at a time, resumable from ``progress``; the chunk
        starting at image i is seeded ``decoder.seed + i``."""
        chunks = helpers.chunked(len(tokens), self.dec["chunk"], progress,
                                 lambda start, stop: self.run(tokens[start:stop], self.dec["seed"] + start))
        return {"recons": torch.cat([c["recons"] for c in chunks]),
                "predcaptions": np.concatenate([np.array(c["predcaptions"], dtype=str) for c in chunks])}
