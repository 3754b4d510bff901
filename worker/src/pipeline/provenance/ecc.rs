//! Error correction for the watermark payload: the rate-1/2, constraint-length-7
//! convolutional code of CCSDS/802.11 (generators 171, 133 octal) with soft-decision Viterbi
//! decoding. Watermark bits arrive as noisy correlations, not hard bits; soft Viterbi uses
//! their magnitudes and corrects far more errors than a hard-decision CRC search.

/// Constraint length.
const K: usize = 7;
/// Generator polynomials (octal 171 and 133), the industry-standard pair for K = 7.
const G: [u32; 2] = [0o171, 0o133];
const STATES: usize = 1 << (K - 1);

/// Encoded length of `n` message bits (including the K-1 zero tail bits that terminate the
/// trellis in state 0).
pub const fn encoded_len(n: usize) -> usize {
    2 * (n + K - 1)
}

fn parity(x: u32) -> bool {
    x.count_ones() % 2 == 1
}

fn outputs(state: usize, bit: bool) -> [bool; 2] {
    let reg = ((u32::from(bit)) << (K - 1)) | state as u32;
    [parity(reg & G[0]), parity(reg & G[1])]
}

/// Encodes `bits`, appending the zero tail.
pub fn encode(bits: &[bool]) -> Vec<bool> {
    let mut state = 0usize;
    let mut out = Vec::with_capacity(encoded_len(bits.len()));
    for &bit in bits.iter().chain(std::iter::repeat_n(&false, K - 1)) {
        out.extend_from_slice(&outputs(state, bit));
        state = ((usize::from(bit)) << (K - 2)) | (state >> 1);
    }
    out
}

/// Soft-decision Viterbi: `soft[i] > 0` votes for coded bit 1, with weight |soft[i]|.
/// Returns the `n` most likely message bits.
pub fn decode(soft: &[f64], n: usize) -> Vec<bool> {
    let steps = n + K - 1;
    assert!(
        soft.len() >= 2 * steps,
        "need {} soft values, got {}",
        2 * steps,
        soft.len()
    );
    let mut metric = vec![f64::NEG_INFINITY; STATES];
    metric[0] = 0.0;
    // survivors[t][s]: (previous state, input bit) on the best path into s at step t.
    let mut survivors = vec![[(0u8, false); STATES]; steps];
    for (t, surv) in survivors.iter_mut().enumerate() {
        let mut next = vec![f64::NEG_INFINITY; STATES];
        for (state, &m) in metric.iter().enumerate() {
            if m == f64::NEG_INFINITY {
                continue;
            }
            for bit in [false, true] {
                if t >= n && bit {
                    continue; // tail bits are zero
                }
                let out = outputs(state, bit);
                let gain: f64 = out
                    .iter()
                    .zip(&soft[2 * t..2 * t + 2])
                    .map(|(&o, &s)| if o { s } else { -s })
                    .sum();
                let to = ((usize::from(bit)) << (K - 2)) | (state >> 1);
                if m + gain > next[to] {
                    next[to] = m + gain;
                    surv[to] = (state as u8, bit);
                }
            }
        }
        metric = next;
    }
    let mut state = 0usize;
    let mut bits = vec![false; steps];
    for t in (0..steps).rev() {
        let (prev, bit) = survivors[t][state];
        bits[t] = bit;
        state = usize::from(prev);
    }
    bits.truncate(n);
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_codeword_decodes_to_its_message() {
        let msg: Vec<bool> = (0..80).map(|i| (i * 7 + i / 3) % 5 < 2).collect();
        let code = encode(&msg);
        assert_eq!(code.len(), encoded_len(80));
        let soft: Vec<f64> = code.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
        assert_eq!(decode(&soft, 80), msg);
    }

    #[test]
    fn scattered_errors_are_corrected() {
        let msg: Vec<bool> = (0..80).map(|i| (i * 13) % 7 < 3).collect();
        let mut soft: Vec<f64> = encode(&msg)
            .iter()
            .map(|&b| if b { 1.0 } else { -1.0 })
            .collect();
        // Flip 12 of 172 coded bits (7 %), spread out, at reduced confidence.
        for i in (5..soft.len()).step_by(14) {
            soft[i] *= -0.6;
        }
        assert_eq!(decode(&soft, 80), msg, "7 % soft errors must be corrected");
    }
}
