"""Vanilla tanh RNN over batch-first sequences, with backpropagation through time."""

from __future__ import annotations

import numpy as np

from .recurrent import Recurrent


class RNN(Recurrent):
    """x: (N, T, D) -> (N, H), the last step, or (N, T, H) with return_sequences.

    h_t = tanh(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh), h_0 = 0, as torch.nn.RNN
    with batch_first=True; parameters named weight_ih_l0 (H, D), weight_hh_l0 (H, H),
    bias_ih_l0, bias_hh_l0 (H,).
    """

    GATES = 1

    def forward(self, x, train, rng):
        p = self.params
        # Every step's input projection in one 2-D matmul; hs holds the pre-activations until
        # each step's tanh overwrites them with h_t.
        xt, hs = self._input_projections(x, p["weight_ih_l0"], p["bias_ih_l0"] + p["bias_hh_l0"])
        w_hh_t = p["weight_hh_l0"].T
        recurrent = np.empty_like(hs[0])
        np.tanh(hs[0], out=hs[0])
        for step in range(1, hs.shape[0]):
            a = hs[step]
            a += np.matmul(hs[step - 1], w_hh_t, out=recurrent)
            np.tanh(a, out=a)
        return self._output(hs), (xt, hs)

    def _backward_through_time(self, dy, cache):
        xt, hs = cache
        w_hh = self.params["weight_hh_l0"]
        # da[t] starts as tanh's derivative at step t, for every step at once; the loop scales it by dh_t.
        da = hs * hs
        np.subtract(1, da, out=da)
        dh, dys = self._output_grads(dy)
        for step in range(hs.shape[0] - 1, -1, -1):
            if dys is not None:
                dh += dys[step]
            da[step] *= dh
            if step > 0:
                np.matmul(da[step], w_hh, out=dh)
        self._add_weight_grads(da, da, xt, hs)
        return da
