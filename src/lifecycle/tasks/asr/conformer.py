"""asr's Conformer encoder (`model.arch: conformer`): two strided convolutions cut the spectrogram to the CRNN's
40 ms frames, then torchaudio's Conformer layers (Gulati et al. 2020) read them, padding masked."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lifecycle.sequence import STRIDE, ConvBlock

if TYPE_CHECKING:
    from torchaudio.models.conformer import ConformerLayer

    from lifecycle.tasks.asr.config import ConformerSize


class ConformerEncoder(nn.Module):
    """B x 1 x height x W spectrograms (W a multiple of STRIDE) and their widths -> (B x W/STRIDE x dim frames,
    B frame counts), the contract of the CRNN's encoder, so that CTC, streaming and serving take either."""

    def __init__(self, height: int, size: ConformerSize, dropout: float) -> None:
        super().__init__()
        from torchaudio.models import Conformer

        c = size.subsampling_channels  # two stride-2 blocks: STRIDE times fewer rows and columns
        self.subsampling = nn.ModuleList([ConvBlock(1, c, stride=2), ConvBlock(c, c, stride=2)])
        self.projection = nn.Linear(c * (height // STRIDE), size.dim)
        self.conformer = Conformer(
            input_dim=size.dim,
            num_heads=size.heads,
            ffn_dim=size.ffn_dim,
            num_layers=size.layers,
            depthwise_conv_kernel_size=size.kernel_size,
            dropout=dropout,
        )
        self.features = size.dim

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images
        for block in self.subsampling:
            x, widths = block(x, widths)
        b, c, h, t = x.shape
        x = self.projection(x.permute(0, 3, 1, 2).reshape(b, t, c * h)).transpose(0, 1)  # T x B x dim: torchaudio's
        padding = torch.arange(t, device=x.device)[None, :] >= widths.to(x.device)[:, None]
        for layer in self.conformer.conformer_layers:
            x = conformer_layer(layer, x, padding)
        return x.transpose(0, 1), widths


def conformer_layer(layer: ConformerLayer, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """torchaudio's `ConformerLayer.forward` on T x B x dim frames, with the padded frames (B x T `padding`) zeroed
    before the depthwise convolution: torchaudio leaves there what the layer computed from padding, and the
    convolution would mix it into an input's last frames, so that its answer would depend on its batch."""
    x = x + 0.5 * layer.ffn1(x)
    if layer.convolution_first:
        x = x + masked_convolution(layer, x, padding)
    attended = layer.self_attn_layer_norm(x)
    attended, _ = layer.self_attn(attended, attended, attended, key_padding_mask=padding, need_weights=False)
    x = x + layer.self_attn_dropout(attended)
    if not layer.convolution_first:
        x = x + masked_convolution(layer, x, padding)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


def masked_convolution(layer: ConformerLayer, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """The layer's convolution module (pointwise, GLU, depthwise, norm, SiLU, pointwise, dropout) on T x B x dim
    frames, the depthwise convolution seeing zeros beyond each input, as it would alone."""
    module = layer.conv_module
    pointwise, glu, depthwise, norm, activation, back, dropout = module.sequential
    y = glu(pointwise(module.layer_norm(x).permute(1, 2, 0))).masked_fill(padding[:, None, :], 0.0)
    return dropout(back(activation(norm(depthwise(y))))).permute(2, 0, 1)
