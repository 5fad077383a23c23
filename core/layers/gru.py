"""Gated recurrent unit over batch-first sequences, with backpropagation through time."""

from __future__ import annotations

import numpy as np

from .recurrent import Recurrent, gate_saturation


class GRU(Recurrent):
    """x: (N, T, D) -> (N, H), the last step, or (N, T, H) with return_sequences.

    As torch.nn.GRU(D, H, batch_first=True) from a zero state. The gates r, z, n are the three
    H-row blocks of weight_ih_l0 (3H, D), weight_hh_l0 (3H, H), bias_ih_l0, bias_hh_l0:

        r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}
    """

    GATES = 3

    def forward(self, x, train, rng):
        p, hidden = self.params, self.hidden_size
        # sigmoid(a) = 0.5 * tanh(a / 2) + 0.5: the r and z rows of the weights are halved, as in LSTM.
        scale = np.ones(3 * hidden, x.dtype)
        scale[:2 * hidden] = 0.5
        w_hh_t, b_hn = (p["weight_hh_l0"] * scale[:, None]).T, p["bias_hh_l0"][2 * hidden:]
        # gates ends up holding r, z and n; r and z take both biases up front, n only b_in.
        bias = p["bias_ih_l0"] * scale
        bias[:2 * hidden] += p["bias_hh_l0"][:2 * hidden] * 0.5
        xt, gates = self._input_projections(x, p["weight_ih_l0"] * scale[:, None], bias)
        t, n, _ = gates.shape
        hn = np.empty((t, n, hidden), x.dtype)  # W_hn h_{t-1} + b_hn, which r scales
        hs = np.empty_like(hn)
        h = np.zeros((n, hidden), x.dtype)
        recurrent = np.empty((n, 3 * hidden), x.dtype)
        for step in range(t):
            a = gates[step]
            rz, new = a[:, :2 * hidden], a[:, 2 * hidden:]
            if step > 0:
                gh = np.matmul(h, w_hh_t, out=recurrent)
                rz += gh[:, :2 * hidden]
                np.add(gh[:, 2 * hidden:], b_hn, out=hn[step])
            else:
                hn[step] = b_hn
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            r, z = rz[:, :hidden], rz[:, hidden:]
            new += r * hn[step]
            np.tanh(new, out=new)
            # h_t = n + z * (h_{t-1} - n)
            h = np.subtract(h, new, out=hs[step])
            h *= z
            h += new
        return self._output(hs), (xt, gates, hn, hs)

    def _backward_through_time(self, dy, cache):
        xt, gates, hn, hs = cache
        hidden = self.hidden_size
        w_hh = self.params["weight_hh_l0"]
        t, n, _ = gates.shape
        r, z, new = (gates[..., k * hidden:(k + 1) * hidden] for k in range(3))
        # Each gate's derivative w.r.t. its pre-activation, for every step at once.
        rz = gates[..., :2 * hidden]
        d_rz = rz * (1 - rz)
        d_new = 1 - new * new
        dh, dys = self._output_grads(dy)
        # da_h: gradients of h_{t-1} @ W_hh.T + b_hh; its r, z blocks are those of the inputs' too.
        da_h, da_x = np.empty_like(gates), np.empty_like(gates)
        zeros, recurrent = np.zeros_like(dh), np.empty_like(dh)
        for step in range(t - 1, -1, -1):
            if dys is not None:
                dh += dys[step]
            h_prev = hs[step - 1] if step > 0 else zeros
            dr, dz, dhn = (da_h[step, :, k * hidden:(k + 1) * hidden] for k in range(3))
            dnew = dh * (1 - z[step])
            dnew *= d_new[step]  # now the gradient of n's pre-activation
            np.multiply(dnew, hn[step], out=dr)
            np.multiply(dh, h_prev - new[step], out=dz)
            da_h[step, :, :2 * hidden] *= d_rz[step]
            np.multiply(dnew, r[step], out=dhn)
            dh *= z[step]
            dh += np.matmul(da_h[step], w_hh, out=recurrent)
            da_x[step, :, 2 * hidden:] = dnew
        da_x[..., :2 * hidden] = da_h[..., :2 * hidden]
        self._add_weight_grads(da_x, da_h, xt, hs)
        return da_x

    def activation_stats(self, cache):
        """Return the saturated fraction of all gates together and of each gate (r, z, n)."""
        return gate_saturation(cache[1], "rzn", axis=2)  # n: the tanh gate
