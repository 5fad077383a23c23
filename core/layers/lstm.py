"""Long short-term memory over batch-first sequences, with backpropagation through time."""

from __future__ import annotations

import numpy as np

from .recurrent import Recurrent, gate_saturation


class LSTM(Recurrent):
    """x: (N, T, D) -> (N, H), the last step, or (N, T, H) with return_sequences.

    As torch.nn.LSTM(D, H, batch_first=True) from a zero state. The gates i, f, g, o are the
    four H-row blocks of weight_ih_l0 (4H, D), weight_hh_l0 (4H, H), bias_ih_l0, bias_hh_l0:

        [i, f, g, o] = x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh, then sigmoid, sigmoid, tanh, sigmoid
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)
    """

    GATES = 4

    def forward(self, x, train, rng):
        p, hidden = self.params, self.hidden_size
        # sigmoid(a) = 0.5 * tanh(a / 2) + 0.5, which cannot overflow: with the i, f, o rows of the
        # weights halved, one tanh over all 4H pre-activations gives every gate (then * scale + offset).
        scale = np.full(4 * hidden, 0.5, x.dtype)
        scale[2 * hidden:3 * hidden] = 1
        offset = 1 - scale
        w_hh_t = (p["weight_hh_l0"] * scale[:, None]).T
        xt, gates = self._input_projections(x, p["weight_ih_l0"] * scale[:, None],
                                            (p["bias_ih_l0"] + p["bias_hh_l0"]) * scale)
        t, n, _ = gates.shape
        i, f, g, o = self._split(gates)
        cs = np.empty((t, n, hidden), x.dtype)
        tanh_cs, hs = np.empty_like(cs), np.empty_like(cs)
        # Every step writes into these and into slices of the arrays above: no temporaries in the loop.
        recurrent, carried = np.empty((n, 4 * hidden), x.dtype), np.empty((n, hidden), x.dtype)
        for step in range(t):
            a = gates[step]
            if step > 0:
                a += np.matmul(hs[step - 1], w_hh_t, out=recurrent)
            np.tanh(a, out=a)
            a *= scale
            a += offset
            c = np.multiply(i[step], g[step], out=cs[step])
            if step > 0:
                c += np.multiply(f[step], cs[step - 1], out=carried)
            np.multiply(o[step], np.tanh(c, out=tanh_cs[step]), out=hs[step])
        return self._output(hs), (xt, gates, cs, tanh_cs, hs)

    def _split(self, a: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return the i, f, g, o views of (..., 4H)."""
        hidden = self.hidden_size
        return tuple(a[..., k * hidden:(k + 1) * hidden] for k in range(4))

    def _backward_through_time(self, dy, cache):
        xt, gates, cs, tanh_cs, hs = cache
        hidden = self.hidden_size
        w_hh = self.params["weight_hh_l0"]
        t, n, _ = gates.shape
        i, f, g, o = self._split(gates)
        # da starts as each gate's derivative w.r.t. its pre-activation, for every step at once
        # (written in place: no (T, N, 4H) temporaries).
        da = np.subtract(1, gates)
        da *= gates
        da_g = np.multiply(g, g, out=da[..., 2 * hidden:3 * hidden])
        np.subtract(1, da_g, out=da_g)
        dc_from_h = tanh_cs * tanh_cs  # dh_t adds dh_t * o (1 - tanh(c_t)^2) to dc_t
        np.subtract(1, dc_from_h, out=dc_from_h)
        dc_from_h *= o
        dh, dys = self._output_grads(dy)
        local = np.empty((n, 4 * hidden), gates.dtype)
        di, df, dg, do = self._split(local)
        dc, from_h = np.zeros_like(dh), np.empty_like(dh)
        for step in range(t - 1, -1, -1):
            if dys is not None:
                dh += dys[step]
            dc += np.multiply(dh, dc_from_h[step], out=from_h)
            np.multiply(dc, g[step], out=di)
            if step > 0:
                np.multiply(dc, cs[step - 1], out=df)
            else:
                df.fill(0)
            np.multiply(dc, i[step], out=dg)
            np.multiply(dh, tanh_cs[step], out=do)
            da[step] *= local
            dc *= f[step]
            np.matmul(da[step], w_hh, out=dh)
        self._add_weight_grads(da, da, xt, hs)
        return da

    def activation_stats(self, cache):
        """Return the saturated fraction of all gates together and of each gate (i, f, g, o)."""
        return gate_saturation(cache[1], "ifgo", tanh_gates="g")
