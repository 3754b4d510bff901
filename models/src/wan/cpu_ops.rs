//! Vectorised, threaded CPU kernels for the two element-wise ops that dominated a Wan step
//! with candle's own versions (which call libm per element on one thread): the tanh GELU
//! and the last-dimension softmax. Used by the transformer and the UMT5 text encoder; any
//! other dtype or device falls back to candle's op.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};

/// The tanh-approximated GELU (torch's `gelu(approximate="tanh")`, transformers' `gelu_new`)
/// of a contiguous f32 CPU tensor, split over candle's threads; other dtypes and devices
/// use candle's `gelu`. candle's calls libm's `tanhf` element by element on one thread,
/// which was ~20 % of a 1.3B denoising step at 320 tokens (the FFN's [tokens, 8960]
/// activations, 60 times a step). This computes the same function as `x * sigmoid(2 z)`
/// (`= 0.5 x (1 + tanh z)`, `z = sqrt(2/pi) (x + 0.044715 x^3)`) with an `exp` the compiler
/// vectorises; it agrees with candle's to a few f32 ulps (see the test below).
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        x.apply_op1_no_bwd(&GeluTanh)
    } else {
        x.gelu()
    }
}

struct GeluTanh;

/// Elements per thread below which splitting costs more than it saves: a thread start is
/// ~30 us, the vectorised loops take ~1 ns an element.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 17;

/// Runs `work` on each pair of `chunk`-sized pieces of `dst` and `src`, the last piece on
/// this thread and the others on scoped threads of their own.
fn split_over_threads(
    dst: &mut [f32],
    src: &[f32],
    chunk: usize,
    work: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    std::thread::scope(|s| {
        let mut pieces = dst.chunks_mut(chunk).zip(src.chunks(chunk)).peekable();
        while let Some((out, x)) = pieces.next() {
            if pieces.peek().is_none() {
                work(x, out);
            } else {
                let work = &work;
                s.spawn(move || work(x, out));
            }
        }
    });
}

impl candle_core::CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(values), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("gelu-tanh-f32 takes a contiguous f32 tensor");
        };
        let src = &values[start..end];
        let mut dst = vec![0f32; src.len()];
        let threads = candle_core::utils::get_num_threads().max(1);
        let chunk = src.len().div_ceil(threads).max(PARALLEL_MIN_ELEMENTS);
        split_over_threads(&mut dst, src, chunk, gelu_slice);
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Softmax over the last dimension. For a contiguous f32 CPU tensor the rows are split over
/// candle's threads and the exponentials use [`exp_f32`], which vectorises: candle's own
/// softmax calls libm's `expf` per element, ~30 % of a tiny model's forward. Other dtypes
/// and devices use candle's.
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() && x.rank() > 0 {
        x.apply_op1_no_bwd(&SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

struct SoftmaxLastDim;

impl candle_core::CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(values), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("softmax-last-dim-f32 takes a contiguous f32 tensor");
        };
        let src = &values[start..end];
        let row = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        let threads = candle_core::utils::get_num_threads().max(1);
        let rows = src.len() / row;
        let chunk = rows
            .div_ceil(threads)
            .max(PARALLEL_MIN_ELEMENTS.div_ceil(row))
            * row;
        split_over_threads(&mut dst, src, chunk, |x, out| {
            for (o, r) in out.chunks_mut(row).zip(x.chunks(row)) {
                softmax_row(r, o);
            }
        });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// `exp(x - max) / sum`, with the max and the sum accumulated in eight lanes (so that they
/// vectorise); a row of all `-inf` gives NaN, as in torch.
fn softmax_row(x: &[f32], out: &mut [f32]) {
    const LANES: usize = 8;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sums = [0f32; LANES];
    for (oc, xc) in out.chunks_mut(LANES).zip(x.chunks(LANES)) {
        for ((o, &v), s) in oc.iter_mut().zip(xc).zip(sums.iter_mut()) {
            *o = exp_f32(v - max);
            *s += *o;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for o in out.iter_mut() {
        *o *= inv;
    }
}

fn gelu_slice(x: &[f32], out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (o, &v) in out.iter_mut().zip(x) {
        let minus_2z = -2.0 * SQRT_2_OVER_PI * v * (1.0 + 0.044_715 * v * v);
        *o = v / (1.0 + exp_f32(minus_2z));
    }
}

/// `e^x` for f32 as Cephes' `expf`: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by its
/// degree-5 minimax polynomial (within 2 ulp), `2^n` put into the exponent bits. Inputs are
/// clamped to [-87, 88], where `2^n` stays a normal f32; below -87 the result is 0 (the
/// true value is under 1.7e-38), above 88 it stays e^88 (f32 overflows at 88.7). No
/// branches or calls, so loops over it vectorise.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let underflow = x < -87.0;
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n * LN2_HI` is exact for the n in range.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e = p * r * r + r + 1.0;
    // t's bits are ROUND's plus n; n + 127 is the biased exponent of 2^n.
    let exponent = (t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23;
    let y = e * f32::from_bits(exponent as u32);
    if underflow {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fast_gelu_equals_candles_tanh_gelu() {
        // Every 1/64 over [-20, 20] (both tails, zero, the bend) and a few extremes.
        let mut xs: Vec<f32> = (-1280..=1280).map(|i| i as f32 / 64.0).collect();
        xs.extend([-1e4, -100.0, -89.0, 1e-30, -1e-30, 89.0, 100.0, 1e4]);
        let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let ours = gelu_tanh(&x).unwrap().to_vec1::<f32>().unwrap();
        let candle = x.gelu().unwrap().to_vec1::<f32>().unwrap();
        for ((&v, &a), &b) in xs.iter().zip(&ours).zip(&candle) {
            // candle's `0.5 x (1 + tanh z)` cancels for x below ~-3, where ours does not:
            // compare relative to max(|x|, 1) there.
            let tol = 4.0 * f32::EPSILON * v.abs().max(1.0);
            assert!((a - b).abs() <= tol, "gelu({v}): ours {a}, candle {b}");
        }
    }

    #[test]
    fn fast_softmax_equals_candles() {
        // Rows of several lengths (the remainder after the eight lanes too), a masked-like
        // row with f32::MIN entries, and large values that would overflow a naive exp.
        for len in [1usize, 7, 8, 13, 64, 100] {
            let xs: Vec<f32> = (0..3 * len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let x = Tensor::from_vec(xs, (3, len), &Device::Cpu).unwrap();
            let ours = softmax_last_dim(&x).unwrap();
            let candle = candle_nn::ops::softmax_last_dim(&x).unwrap();
            let diff = (ours - candle)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff <= 1e-6, "rows of {len}: max diff {diff}");
        }
        let x = Tensor::new(&[[1000f32, 999.0, f32::MIN, 0.0]], &Device::Cpu).unwrap();
        let ours = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        let e = (-1f32).exp();
        let expected = [1.0 / (1.0 + e), e / (1.0 + e), 0.0, 0.0];
        for (a, b) in ours[0].iter().zip(expected) {
            assert!((a - b).abs() <= 1e-6, "{:?} vs {expected:?}", ours[0]);
        }
    }

    #[test]
    fn fast_exp_underflows_to_zero() {
        assert_eq!(exp_f32(-87.5), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::MIN), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn fast_exp_is_within_two_ulp() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (ours, std) = (exp_f32(x), x.exp());
            assert!(
                (ours - std).abs() <= 2.0 * f32::EPSILON * std,
                "exp({x}): ours {ours}, std {std}"
            );
        }
    }
}
