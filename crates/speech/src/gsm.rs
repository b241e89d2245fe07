//! GSM 06.10 full-rate speech in WAV (`WAVE_FORMAT_GSM610`, "WAV49"), as call recorders and PBXs
//! store calls at 13 kbit/s. symphonia has no GSM decoder; this is the decoder of ETSI EN 300 961
//! (GSM 06.10) in the fixed-point arithmetic the standard prescribes, following the structure of the
//! reference implementation (libgsm by Jutta Degener and Carsten Bormann, which libsndfile and SoX
//! use): RPE decoding, long-term and short-term synthesis, de-emphasis. The standard defines the
//! output bit for bit, so a test holds it to libsndfile's samples exactly.
//!
//! In WAV, two 260-bit frames are packed least significant bit first into 65-byte blocks of 320
//! samples at 8 kHz.

/// `WAVE_FORMAT_GSM610`.
const FORMAT_GSM610: u16 = 0x0031;
/// Bytes of one block (two frames).
pub const BLOCK_BYTES: usize = 65;
/// Samples of one block.
pub const BLOCK_SAMPLES: usize = 320;

/// A GSM 06.10 WAV file's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav49<'a> {
    /// Sample rate from the header (8000 for GSM; other values are taken as given).
    pub rate: u32,
    /// The data chunk.
    pub data: &'a [u8],
    /// Samples the `fact` chunk counts (the last block is padded), if there is one.
    pub samples: Option<usize>,
}

/// The layout of `bytes` when it is a mono GSM 06.10 WAV file; `None` for anything else, or
/// `Some(Err)` for a GSM WAV this decoder cannot read (stereo, another block size).
pub fn wav49(bytes: &[u8]) -> Option<Result<Wav49<'_>, String>> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let (mut pos, mut fmt, mut data, mut fact) = (12, None, None, None);
    while let Some(header) = bytes.get(pos..pos + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let body = pos + 8;
        // A truncated last chunk: what is there.
        let chunk = &bytes[body.min(bytes.len())..body.saturating_add(size).min(bytes.len())];
        match &header[..4] {
            b"fmt " => fmt = Some(chunk),
            b"fact" => {
                fact = chunk
                    .get(..4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            }
            b"data" => data = Some(chunk),
            _ => {}
        }
        // Chunks are padded to an even size.
        pos = body.saturating_add(size).saturating_add(size & 1);
    }
    let fmt = fmt?;
    if u16::from_le_bytes([*fmt.first()?, *fmt.get(1)?]) != FORMAT_GSM610 {
        return None;
    }
    let field = |at: usize| {
        fmt.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let (channels, align) = (field(2), field(12));
    let rate = fmt
        .get(4..8)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    Some(match (channels, rate, align, data) {
        (Some(1), Some(rate), Some(65), Some(data)) => Ok(Wav49 {
            rate,
            data,
            samples: fact.map(|n| n as usize),
        }),
        (Some(1), Some(_), Some(65), None) => Err("GSM 6.10 WAV without a data chunk".into()),
        (Some(c), ..) if c != 1 => Err(format!("GSM 6.10 WAV with {c} channels (mono only)")),
        _ => Err("GSM 6.10 WAV with a broken format chunk (65-byte blocks expected)".into()),
    })
}

/// Decodes the whole blocks of `data` (a GSM 06.10 WAV data chunk) to 16-bit samples, at most
/// `max_samples` of them.
pub fn decode(data: &[u8], max_samples: usize) -> Vec<i16> {
    let mut dec = Decoder::new();
    let mut out = Vec::with_capacity((data.len() / BLOCK_BYTES * BLOCK_SAMPLES).min(max_samples));
    for block in data.chunks_exact(BLOCK_BYTES) {
        if out.len() >= max_samples {
            break;
        }
        let mut bits = Bits { data: block, at: 0 };
        for _ in 0..2 {
            let frame = Frame::read(&mut bits);
            out.extend_from_slice(&dec.frame(&frame));
        }
    }
    out.truncate(max_samples);
    out
}

/// Reads fields least significant bit first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> i16 {
        let mut v = 0u16;
        for i in 0..n {
            let (byte, bit) = ((self.at + i) / 8, (self.at + i) % 8);
            // `chunks_exact` gives whole blocks: 520 bits fit in 65 bytes.
            let b = self.data.get(byte).copied().unwrap_or(0);
            v |= u16::from((b >> bit) & 1) << i;
        }
        self.at += n;
        v as i16
    }
}

/// The 76 parameters of one 20 ms frame.
struct Frame {
    larc: [i16; 8],
    nc: [i16; 4],
    bc: [i16; 4],
    mc: [i16; 4],
    xmaxc: [i16; 4],
    xmc: [[i16; 13]; 4],
}

impl Frame {
    fn read(bits: &mut Bits<'_>) -> Self {
        let mut f = Frame {
            larc: [0; 8],
            nc: [0; 4],
            bc: [0; 4],
            mc: [0; 4],
            xmaxc: [0; 4],
            xmc: [[0; 13]; 4],
        };
        for (l, width) in f.larc.iter_mut().zip([6, 6, 5, 5, 4, 4, 3, 3]) {
            *l = bits.take(width);
        }
        for j in 0..4 {
            f.nc[j] = bits.take(7);
            f.bc[j] = bits.take(2);
            f.mc[j] = bits.take(2);
            f.xmaxc[j] = bits.take(6);
            for x in &mut f.xmc[j] {
                *x = bits.take(3);
            }
        }
        f
    }
}

// --- the standard's arithmetic (16-bit words, saturating) ---

fn sat(x: i32) -> i16 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

fn add(a: i16, b: i16) -> i16 {
    sat(i32::from(a) + i32::from(b))
}

fn sub(a: i16, b: i16) -> i16 {
    sat(i32::from(a) - i32::from(b))
}

/// Multiplication with rounding (`GSM_MULT_R`); MIN × MIN does not occur where it is used.
fn mult_r(a: i16, b: i16) -> i16 {
    ((i32::from(a) * i32::from(b) + 16384) >> 15) as i16
}

/// Arithmetic shift right by `n` (left when negative), as `gsm_asr`.
fn asr(a: i16, n: i16) -> i16 {
    if n >= 16 {
        -i16::from(a < 0)
    } else if n <= -16 {
        0
    } else if n < 0 {
        ((i32::from(a) << -n) & 0xFFFF) as u16 as i16
    } else {
        a >> n
    }
}

/// Shift left by `n` (right when negative), as `gsm_asl`.
fn asl(a: i16, n: i16) -> i16 {
    if n >= 16 {
        0
    } else if n <= -16 {
        -i16::from(a < 0)
    } else if n < 0 {
        asr(a, -n)
    } else {
        ((i32::from(a) << n) & 0xFFFF) as u16 as i16
    }
}

/// Decoder state carried from frame to frame.
struct Decoder {
    /// Reconstructed long-term residual: 120 past samples, then the current 40.
    dp0: [i16; 280],
    /// The last lag used.
    nrp: i16,
    /// Decoded log-area ratios of the previous and the current frame.
    larpp: [[i16; 8]; 2],
    j: usize,
    /// Short-term synthesis filter state.
    v: [i16; 9],
    /// De-emphasis state.
    msr: i16,
}

const FAC: [i16; 8] = [18431, 20479, 22527, 24575, 26623, 28671, 30719, 32767];
const QLB: [i16; 4] = [3277, 11469, 21299, 32767];

impl Decoder {
    fn new() -> Self {
        Self {
            dp0: [0; 280],
            nrp: 40,
            larpp: [[0; 8]; 2],
            j: 0,
            v: [0; 9],
            msr: 0,
        }
    }

    /// One frame: 160 samples.
    fn frame(&mut self, f: &Frame) -> [i16; 160] {
        let mut wt = [0i16; 160];
        for j in 0..4 {
            let erp = rpe_decoding(f.xmaxc[j], f.mc[j], &f.xmc[j]);
            self.long_term_synthesis(f.nc[j], f.bc[j], &erp);
            wt[j * 40..j * 40 + 40].copy_from_slice(&self.dp0[120..160]);
            // Shift the residual history by one sub-frame.
            self.dp0.copy_within(40..160, 0);
        }
        let mut s = [0i16; 160];
        self.short_term_synthesis(&f.larc, &wt, &mut s);
        for x in &mut s {
            let tmp = mult_r(self.msr, 28180);
            self.msr = add(*x, tmp);
            *x = (add(self.msr, self.msr) as u16 & 0xFFF8) as i16;
        }
        s
    }

    /// Writes the 40 samples of a sub-frame at `dp0[120..160]` from the past 120 at `dp0[..120]`.
    fn long_term_synthesis(&mut self, ncr: i16, bcr: i16, erp: &[i16; 40]) {
        let nr = if (40..=120).contains(&ncr) {
            ncr
        } else {
            self.nrp
        };
        self.nrp = nr;
        let brp = QLB[(bcr & 3) as usize];
        for (k, &e) in erp.iter().enumerate() {
            let drpp = mult_r(brp, self.dp0[120 + k - nr as usize]);
            self.dp0[120 + k] = add(e, drpp);
        }
    }

    fn short_term_synthesis(&mut self, larc: &[i16; 8], wt: &[i16; 160], s: &mut [i16; 160]) {
        let previous = self.larpp[self.j];
        self.j ^= 1;
        let current = decode_lars(larc);
        self.larpp[self.j] = current;
        let mut larp = [0i16; 8];
        // Interpolation of the log-area ratios over the frame (sample 0–12, 13–26, 27–39, 40–159).
        for i in 0..8 {
            larp[i] = add(add(previous[i] >> 2, current[i] >> 2), previous[i] >> 1);
        }
        self.filter(&larp, &wt[..13], &mut s[..13]);
        for i in 0..8 {
            larp[i] = add(previous[i] >> 1, current[i] >> 1);
        }
        self.filter(&larp, &wt[13..27], &mut s[13..27]);
        for i in 0..8 {
            larp[i] = add(add(previous[i] >> 2, current[i] >> 2), current[i] >> 1);
        }
        self.filter(&larp, &wt[27..40], &mut s[27..40]);
        self.filter(&current, &wt[40..], &mut s[40..]);
    }

    /// The lattice synthesis filter with the reflection coefficients of `larp`.
    fn filter(&mut self, larp: &[i16; 8], wt: &[i16], out: &mut [i16]) {
        let rrp = lar_to_rp(larp);
        let v = &mut self.v;
        // 16-bit product with rounding, kept to 16 bits as the standard's word arithmetic does.
        let mul = |a: i16, b: i16| -> i16 {
            if a == i16::MIN && b == i16::MIN {
                i16::MAX
            } else {
                (((i32::from(a) * i32::from(b) + 16384) >> 15) & 0xFFFF) as u16 as i16
            }
        };
        for (w, o) in wt.iter().zip(out.iter_mut()) {
            let mut sri = *w;
            for i in (0..8).rev() {
                sri = sub(sri, mul(rrp[i], v[i]));
                v[i + 1] = add(v[i], mul(rrp[i], sri));
            }
            v[0] = sri;
            *o = sri;
        }
    }
}

/// Excitation of one sub-frame: 13 pulses on a grid of every third sample.
fn rpe_decoding(xmaxc: i16, mc: i16, xmc: &[i16; 13]) -> [i16; 40] {
    // The block maximum's exponent and mantissa.
    let mut exp = if xmaxc > 15 { (xmaxc >> 3) - 1 } else { 0 };
    let mut mant = xmaxc - (exp << 3);
    if mant == 0 {
        exp = -4;
        mant = 7;
    } else {
        while mant <= 7 {
            mant = (mant << 1) | 1;
            exp -= 1;
        }
        mant -= 8;
    }
    let temp1 = FAC[mant.clamp(0, 7) as usize];
    let temp2 = sub(6, exp);
    let temp3 = asl(1, sub(temp2, 1));
    let mut ep = [0i16; 40];
    for (i, &x) in xmc.iter().enumerate() {
        // Back to a signed 16-bit value, scaled.
        let temp = ((x << 1) - 7) << 12;
        let temp = add(mult_r(temp1, temp), temp3);
        ep[(mc & 3) as usize + 3 * i] = asr(temp, temp2);
    }
    ep
}

/// Decoded log-area ratios of a frame's coded ones.
fn decode_lars(larc: &[i16; 8]) -> [i16; 8] {
    // (B, MIC, INVA) per coefficient.
    const STEPS: [(i16, i16, i16); 8] = [
        (0, -32, 13107),
        (0, -32, 13107),
        (2048, -16, 13107),
        (-2560, -16, 13107),
        (94, -8, 19223),
        (-1792, -8, 17476),
        (-341, -4, 31454),
        (-1144, -4, 29708),
    ];
    let mut out = [0i16; 8];
    for ((o, &c), &(b, mic, inva)) in out.iter_mut().zip(larc).zip(&STEPS) {
        let t = ((i32::from(add(c, mic)) << 10) & 0xFFFF) as u16 as i16;
        let t = sub(t, b.wrapping_mul(2));
        let t = mult_r(inva, t);
        *o = add(t, t);
    }
    out
}

/// Reflection coefficients of interpolated log-area ratios.
fn lar_to_rp(larp: &[i16; 8]) -> [i16; 8] {
    larp.map(|l| {
        let magnitude = |t: i16| -> i16 {
            if t < 11059 {
                t << 1
            } else if t < 20070 {
                t + 11059
            } else {
                add(t >> 2, 26112)
            }
        };
        if l < 0 {
            let t = if l == i16::MIN { i16::MAX } else { -l };
            -magnitude(t)
        } else {
            magnitude(l)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_read_least_significant_first() {
        let data = [0b1010_1101u8, 0b0000_0011];
        let mut b = Bits { data: &data, at: 0 };
        assert_eq!(b.take(3), 0b101);
        assert_eq!(b.take(7), 0b11_10101);
        assert_eq!(b.take(6), 0);
    }

    #[test]
    fn not_gsm_is_none_and_broken_gsm_is_an_error() {
        assert_eq!(wav49(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(wav49(b"not a wav"), None);
        let mut fmt = b"RIFF\0\0\0\0WAVEfmt \x14\0\0\0".to_vec();
        fmt.extend_from_slice(&[
            0x31, 0, 2, 0, 0x40, 0x1f, 0, 0, 0, 0, 0, 0, 65, 0, 0, 0, 2, 0, 64, 1,
        ]);
        assert!(matches!(wav49(&fmt), Some(Err(e)) if e.contains("2 channels")));
        fmt[22] = 1;
        assert!(matches!(wav49(&fmt), Some(Err(e)) if e.contains("data")));
        fmt.extend_from_slice(b"data\x41\0\0\0");
        fmt.extend_from_slice(&[0u8; 65]);
        let w = wav49(&fmt).expect("gsm").expect("ok");
        assert_eq!((w.rate, w.data.len(), w.samples), (8000, 65, None));
        // A block of zero bits decodes to 320 samples, and nothing panics on any single byte value.
        assert_eq!(decode(w.data, usize::MAX).len(), 320);
        for v in 0..=255u8 {
            let block = [v; 65];
            assert_eq!(decode(&block, 1000).len(), 320);
        }
        // Any header byte changed, and any cut: no panic, whatever the answer.
        for i in 0..fmt.len() {
            for v in [0u8, 0x01, 0x31, 0x41, 0xFF] {
                let mut b = fmt.clone();
                b[i] = v;
                if let Some(Ok(w)) = wav49(&b) {
                    let _ = decode(w.data, 100_000);
                }
                let _ = wav49(&fmt[..i]);
            }
        }
    }
}
