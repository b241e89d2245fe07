//! JPEG output that keeps the input's own compressed bits wherever the pixels did not change.
//!
//! An anonymised photo differs from its input only inside the face regions. Re-encoding the whole
//! image costs a full colour conversion, DCT, quantisation and entropy coding of every block, and a
//! second generation of JPEG loss on every pixel. [`splice`] instead walks the input's
//! entropy-coded data once (Huffman decoding only: no dequantisation, IDCT or colour conversion),
//! notes where each MCU's bits start, and writes an output with the input's tables whose MCUs are:
//!
//! * the input's bits, copied, for an MCU outside every region whose DC predictors are unchanged;
//! * the input's coefficients, entropy-coded again, for an MCU outside the regions that follows a
//!   changed one or starts a restart interval (its DC is coded against its neighbour's, and the
//!   output has no restart markers);
//! * the anonymised pixels, converted, transformed and quantised with the input's tables, for an
//!   MCU that meets a region. Nothing of the input's coefficients for those blocks is kept.
//!
//! When the regions cover more than a third of the MCUs, encoding in full is faster: `None`.
//!
//! Outside the regions the output decodes to exactly the input's pixels (but at the edge of a
//! region, where a decoder's chroma upsampling blends neighbouring MCUs). It applies to baseline
//! Huffman JPEG with one interleaved scan (what cameras, phones and libjpeg write by default);
//! anything else (progressive, arithmetic coding, 12-bit, CMYK or RGB-coded JPEG, several scans,
//! damaged data, tables without an end-of-block code) gives `None`, and the caller encodes the
//! pixels in full. Huffman tables optimised for the input may lack symbols the new blocks need:
//! they are added where the code space has room (`Huffman::complete`), else the new blocks'
//! coefficients are fitted to the table (`fit`).

use crate::imageio::{ZIGZAG, dqt_tables, jpeg_segment};

/// A pixel rectangle `(x, y, width, height)`.
pub type Region = (u32, u32, u32, u32);

/// The JPEG `input` with every MCU that meets one of `regions` re-encoded from `img` (the input's
/// decoded pixels, changed inside the regions only), every other MCU kept as it was, no metadata
/// but `icc` (an ICC profile for the output). `img` must be the input's pixels as stored (not
/// turned by an EXIF orientation). `None` when the input is not a JPEG this can splice.
pub fn splice(
    input: &[u8],
    img: &image::RgbImage,
    regions: &[Region],
    icc: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let jpeg = Jpeg::parse(input)?;
    if (u32::from(jpeg.width), u32::from(jpeg.height)) != img.dimensions() {
        return None;
    }
    let layout = Layout::of(&jpeg);
    let changed = layout.changed(regions);
    // An MCU made from pixels costs about twice what `jpeg-encoder` spends on one, and reading the
    // input a third of a full encoding: past a third of the MCUs, encoding in full is faster (and
    // little of the photo is away from the faces).
    if changed.iter().filter(|&&c| c).count() * 3 > layout.mcus {
        return None;
    }
    let index = index(&jpeg, &layout)?;
    let mut out = Vec::with_capacity(input.len() + icc.map_or(0, <[u8]>::len) + 1024);
    jpeg.write_headers(&mut out, icc);
    let mut w = BitWriter::new(out);
    let mut pred = [0i32; 4];
    let mut coefs = vec![[0i16; 64]; layout.blocks_per_mcu];
    let scales = quant_scales(&jpeg);
    // Tables that code every symbol take any new block as it is.
    let fitted = jpeg.comps.iter().all(|c| {
        let full = |t: &Option<Huffman>| t.as_ref().is_some_and(|t| t.full);
        full(&jpeg.huff[0][c.td]) && full(&jpeg.huff[1][c.ta])
    });
    // The YCbCr planes of one MCU (at most 32×32 pixels: sampling factors are 1–4).
    let mut planes = Box::new([[0f32; 32 * 32]; 3]);
    let mut m = 0;
    while m < layout.mcus {
        let (start, end, ref after) = index.mcus[m];
        if changed[m] {
            layout.mcu_from_pixels(img, &jpeg, &scales, &mut planes, m, &mut coefs);
            if !fitted {
                fit(&jpeg, &mut coefs, pred)?;
            }
            encode_mcu(&mut w, &jpeg, &coefs, &mut pred)?;
        } else if pred == index.before(m) {
            // A run of MCUs whose input bits are valid as they are: copied in one piece.
            let mut last = m;
            while last + 1 < layout.mcus
                && !changed[last + 1]
                && index.mcus[last + 1].0 == index.mcus[last].1
                && index.before(last + 1) == index.mcus[last].2
            {
                last += 1;
            }
            w.copy_bits(&index.data, start, index.mcus[last].1);
            pred = index.mcus[last].2;
            m = last + 1;
            continue;
        } else {
            let mut r = BitReader::new(&index.data, start);
            let mut p = index.before(m);
            decode_mcu(&mut r, &jpeg, &mut p, Some(&mut coefs))?;
            debug_assert_eq!((r.position(), p), (end, *after));
            let mark = w.mark();
            let before = pred;
            if encode_mcu(&mut w, &jpeg, &coefs, &mut pred).is_none() {
                // Its DC against the new predictor needs a size the table lacks: from the
                // (unchanged) pixels, fitted to the table, like a changed MCU.
                w.rewind(mark);
                pred = before;
                layout.mcu_from_pixels(img, &jpeg, &scales, &mut planes, m, &mut coefs);
                fit(&jpeg, &mut coefs, pred)?;
                encode_mcu(&mut w, &jpeg, &coefs, &mut pred)?;
            }
        }
        m += 1;
    }
    let mut out = w.finish();
    out.extend_from_slice(&[0xFF, 0xD9]);
    Some(out)
}

/// One component of the frame and of its (only) scan.
#[derive(Clone, Copy)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    /// Quantization table index.
    tq: usize,
    /// DC and AC Huffman table indexes.
    td: usize,
    ta: usize,
}

/// What [`splice`] reads of a baseline JPEG.
struct Jpeg<'a> {
    width: u16,
    height: u16,
    comps: Vec<Component>,
    /// Quantization tables in natural order.
    qt: [Option<[u16; 64]>; 4],
    /// DC (`[0]`) and AC (`[1]`) Huffman tables.
    huff: [[Option<Huffman>; 4]; 2],
    restart_interval: usize,
    /// The entropy-coded data of the scan, stuffed, restart markers included.
    scan: &'a [u8],
}

impl<'a> Jpeg<'a> {
    fn parse(b: &'a [u8]) -> Option<Self> {
        if b.get(..2)? != [0xFF, 0xD8] {
            return None;
        }
        let mut jpeg = Jpeg {
            width: 0,
            height: 0,
            comps: Vec::new(),
            qt: [None; 4],
            huff: Default::default(),
            restart_interval: 0,
            scan: &[],
        };
        let mut adobe_transform = None;
        let mut pos = 2;
        loop {
            let (marker, len);
            (pos, marker, len) = jpeg_segment(b, pos)?;
            if len < 2 {
                return None;
            }
            let body = b.get(pos + 4..pos + 2 + len)?;
            match marker {
                0xDB => jpeg.read_dqt(body)?,
                0xC4 => jpeg.read_dht(body)?,
                0xC0 | 0xC1 => jpeg.read_sof(body)?,
                0xDD => {
                    jpeg.restart_interval =
                        usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
                }
                0xEE if body.starts_with(b"Adobe") => adobe_transform = body.get(11).copied(),
                0xE0..=0xEF | 0xFE => {}
                0xDA => {
                    jpeg.read_sos(body)?;
                    // Adobe's transform 0 on three components: RGB stored as is, not YCbCr.
                    if jpeg.comps.len() == 3 && adobe_transform.is_some_and(|t| t != 1) {
                        return None;
                    }
                    let data = pos + 2 + len;
                    let end = scan_end(b, data)?;
                    jpeg.scan = b.get(data..end)?;
                    // One scan, then the end: a second scan would refine or add to this one.
                    return (b.get(end..end + 2)? == [0xFF, 0xD9]).then_some(jpeg);
                }
                // Other frame types (progressive, lossless, arithmetic), DNL, DAC, stray markers.
                _ => return None,
            }
            pos += 2 + len;
        }
    }

    fn read_dqt(&mut self, body: &[u8]) -> Option<()> {
        for (id, sixteen, q) in dqt_tables(body)? {
            // 16-bit tables are not baseline.
            if sixteen {
                return None;
            }
            self.qt[id] = Some(q);
        }
        Some(())
    }

    fn read_dht(&mut self, mut t: &[u8]) -> Option<()> {
        while let Some((&tc_th, rest)) = t.split_first() {
            let (class, id) = (usize::from(tc_th >> 4), usize::from(tc_th & 15));
            if class > 1 || id > 3 {
                return None;
            }
            let counts: [u8; 16] = rest.get(..16)?.try_into().ok()?;
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let symbols = rest.get(16..16 + n)?;
            self.huff[class][id] = Some(Huffman::new(&counts, symbols)?.complete(class));
            t = rest.get(16 + n..)?;
        }
        Some(())
    }

    fn read_sof(&mut self, s: &[u8]) -> Option<()> {
        if *s.first()? != 8 || !self.comps.is_empty() {
            return None;
        }
        self.height = u16::from_be_bytes([*s.get(1)?, *s.get(2)?]);
        self.width = u16::from_be_bytes([*s.get(3)?, *s.get(4)?]);
        let n = usize::from(*s.get(5)?);
        if self.width == 0 || self.height == 0 || !(n == 1 || n == 3) {
            return None;
        }
        for c in s.get(6..6 + 3 * n)?.chunks_exact(3) {
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                return None;
            }
            self.comps.push(Component {
                id: c[0],
                h,
                v,
                tq: usize::from(c[2]),
                td: 0,
                ta: 0,
            });
        }
        if n == 1 {
            // A lone component's scan is not interleaved: one block per MCU, whatever its factors.
            self.comps[0].h = 1;
            self.comps[0].v = 1;
        }
        // Components coded as R, G, B rather than Y, Cb, Cr; sampling factors that do not divide
        // the largest (each chroma sample would cover a fractional number of pixels).
        let hmax = self.comps.iter().map(|c| c.h).max()?;
        let vmax = self.comps.iter().map(|c| c.v).max()?;
        if (n == 3 && self.comps.iter().map(|c| c.id).eq(*b"RGB"))
            || self
                .comps
                .iter()
                .any(|c| hmax % c.h != 0 || vmax % c.v != 0)
        {
            return None;
        }
        Some(())
    }

    fn read_sos(&mut self, s: &[u8]) -> Option<()> {
        let n = usize::from(*s.first()?);
        if n != self.comps.len() {
            return None;
        }
        for (i, c) in s.get(1..1 + 2 * n)?.chunks_exact(2).enumerate() {
            // The scan must list the frame's components in the frame's order.
            let comp = self.comps.get_mut(i).filter(|f| f.id == c[0])?;
            comp.td = usize::from(c[1] >> 4);
            comp.ta = usize::from(c[1] & 15);
            if comp.td > 3 || comp.ta > 3 {
                return None;
            }
        }
        let spectral = s.get(1 + 2 * n..4 + 2 * n)?;
        if spectral != [0, 63, 0] {
            return None;
        }
        for c in &self.comps {
            self.qt[c.tq]?;
            self.huff[0][c.td].as_ref()?;
            self.huff[1][c.ta].as_ref()?;
        }
        Some(())
    }

    /// SOI, a JFIF header, the ICC profile, the tables, the frame and the scan header: the input's
    /// own, without its metadata or its restart interval.
    fn write_headers(&self, out: &mut Vec<u8>, icc: Option<&[u8]>) {
        out.extend_from_slice(&[0xFF, 0xD8]);
        out.extend_from_slice(&[
            0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
        ]);
        if let Some(p) = icc {
            write_icc(out, p);
        }
        let mut segment = |marker: u8, body: &[u8]| {
            out.extend_from_slice(&[0xFF, marker]);
            out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(body);
        };
        for (i, q) in self.qt.iter().enumerate() {
            if let Some(q) = q {
                let mut body = vec![i as u8];
                body.extend(ZIGZAG.iter().map(|&n| q[n] as u8));
                segment(0xDB, &body);
            }
        }
        let mut sof = vec![8];
        sof.extend_from_slice(&self.height.to_be_bytes());
        sof.extend_from_slice(&self.width.to_be_bytes());
        sof.push(self.comps.len() as u8);
        for c in &self.comps {
            sof.extend_from_slice(&[c.id, (c.h << 4 | c.v) as u8, c.tq as u8]);
        }
        segment(0xC0, &sof);
        for (class, tables) in self.huff.iter().enumerate() {
            for (id, t) in tables.iter().enumerate() {
                if let Some(t) = t {
                    let mut body = vec![(class << 4 | id) as u8];
                    body.extend_from_slice(&t.counts);
                    body.extend_from_slice(&t.symbols);
                    segment(0xC4, &body);
                }
            }
        }
        let mut sos = vec![self.comps.len() as u8];
        for c in &self.comps {
            sos.extend_from_slice(&[c.id, (c.td << 4 | c.ta) as u8]);
        }
        sos.extend_from_slice(&[0, 63, 0]);
        segment(0xDA, &sos);
    }
}

/// The profile in APP2 `ICC_PROFILE` chunks of at most 65,519 bytes (at most 255 of them).
fn write_icc(out: &mut Vec<u8>, profile: &[u8]) {
    const CHUNK: usize = 65_519;
    let n = profile.len().div_ceil(CHUNK);
    if n == 0 || n > 255 {
        return;
    }
    for (i, chunk) in profile.chunks(CHUNK).enumerate() {
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&((chunk.len() + 16) as u16).to_be_bytes());
        out.extend_from_slice(b"ICC_PROFILE\0");
        out.extend_from_slice(&[i as u8 + 1, n as u8]);
        out.extend_from_slice(chunk);
    }
}

/// Where the entropy-coded data starting at `from` ends: the first marker that is neither a
/// stuffed zero nor a restart marker.
fn scan_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        i += b.get(i..)?.iter().position(|&x| x == 0xFF)?;
        match *b.get(i + 1)? {
            0x00 | 0xD0..=0xD7 => i += 2,
            // Fill bytes before a marker.
            0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

/// A Huffman table: the DHT counts and symbols, and the codes derived from them.
struct Huffman {
    /// Whether it codes every symbol of its class (new blocks then need no [`fit`]).
    full: bool,
    counts: [u8; 16],
    symbols: Vec<u8>,
    /// Decoding: for the next 9 bits, the symbol and code length (0: a longer code).
    fast: Box<[(u8, u8); 512]>,
    /// Decoding of AC coefficients: for the next 9 bits, when they hold a whole nonzero
    /// coefficient (code and value bits), its value, zero run and bit count; 0 otherwise.
    fast_ac: Box<[u32; 512]>,
    /// Decoding of longer codes: the largest code of each length (-1: none) and the index in
    /// `symbols` of each length's first code minus that code.
    maxcode: [i32; 17],
    delta: [i32; 17],
    /// Encoding: the code and its length for each symbol (length 0: not in the table).
    code: [(u16, u8); 256],
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: &[u8]) -> Option<Self> {
        let mut t = Huffman {
            full: false,
            counts: *counts,
            symbols: symbols.to_vec(),
            fast: Box::new([(0, 0); 512]),
            fast_ac: Box::new([0; 512]),
            maxcode: [-1; 17],
            delta: [0; 17],
            code: [(0, 0); 256],
        };
        let (mut code, mut k) = (0u32, 0usize);
        for len in 1..=16 {
            let n = usize::from(counts[len - 1]);
            t.delta[len] = k as i32 - code as i32;
            for _ in 0..n {
                let sym = *symbols.get(k)?;
                // More codes of a length than the length can hold.
                if code >= 1 << len {
                    return None;
                }
                t.code[usize::from(sym)] = (code as u16, len as u8);
                if len <= 9 {
                    let shift = 9 - len;
                    for j in 0..(1 << shift) {
                        t.fast[((code << shift) | j) as usize] = (sym, len as u8);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                t.maxcode[len] = code as i32 - 1;
            }
            code <<= 1;
        }
        for (i, &(sym, len)) in t.fast.iter().enumerate() {
            let (run, size) = (u32::from(sym >> 4), u32::from(sym & 15));
            let total = u32::from(len) + size;
            if len == 0 || size == 0 || total > 9 {
                continue;
            }
            let bits = (i as u32 >> (9 - total)) & ((1 << size) - 1);
            let v = extend(bits, size as u8) as i16;
            t.fast_ac[i] = u32::from(v as u16) << 16 | run << 8 | total;
        }
        Some(t)
    }

    /// The table with every symbol of its class (`0` DC, `1` AC) that it lacks added as a 16-bit
    /// code after its last one. Tables optimised for one image (libjpeg's `optimize_coding`,
    /// mozjpeg, `jpegtran -optimize`) hold only the symbols that image uses, and the new pixels may
    /// need others. Canonical codes are given in order of length, so codes appended at the
    /// greatest length leave every existing code as it was: the input's bits still decode with
    /// the new table. A table whose code space has no room for them stays as it is (new blocks
    /// are then fitted to it, `fit`).
    fn complete(self, class: usize) -> Self {
        let all: Vec<u8> = if class == 0 {
            (0..=11).collect()
        } else {
            let mut v = vec![0x00, 0xF0];
            v.extend((0..16u8).flat_map(|r| (1..=10u8).map(move |s| r << 4 | s)));
            v
        };
        let missing: Vec<u8> = all.into_iter().filter(|&s| !self.has(s)).collect();
        if missing.is_empty() {
            return Huffman { full: true, ..self };
        }
        // The first free 16-bit code after the existing ones; all ones stays unused, as T.81 asks.
        let next = self
            .code
            .iter()
            .filter(|c| c.1 > 0)
            .map(|&(code, len)| (u32::from(code) + 1) << (16 - len))
            .max()
            .unwrap_or(0);
        let n16 = usize::from(self.counts[15]) + missing.len();
        if next + missing.len() as u32 > 0xFFFF || n16 > 255 {
            return self;
        }
        let mut counts = self.counts;
        counts[15] = n16 as u8;
        let mut symbols = self.symbols.clone();
        symbols.extend(missing);
        match Huffman::new(&counts, &symbols) {
            Some(t) => Huffman { full: true, ..t },
            None => self,
        }
    }

    /// Whether the table has a code for `sym`.
    fn has(&self, sym: u8) -> bool {
        self.code[usize::from(sym)].1 > 0
    }

    #[inline]
    fn decode(&self, r: &mut BitReader<'_>) -> Option<u8> {
        let peek = r.peek(16);
        let (sym, len) = self.fast[(peek >> 7) as usize];
        if len > 0 {
            r.consume(u32::from(len));
            return Some(sym);
        }
        for len in 10..=16 {
            let code = (peek >> (16 - len)) as i32;
            if self.maxcode[len] >= 0 && code <= self.maxcode[len] {
                r.consume(len as u32);
                return self.symbols.get((code + self.delta[len]) as usize).copied();
            }
        }
        None
    }
}

/// The MCU grid of a frame.
struct Layout {
    /// MCU size in pixels.
    mcu_w: usize,
    mcu_h: usize,
    cols: usize,
    mcus: usize,
    blocks_per_mcu: usize,
    hmax: usize,
    vmax: usize,
}

impl Layout {
    fn of(j: &Jpeg<'_>) -> Self {
        let hmax = j.comps.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = j.comps.iter().map(|c| c.v).max().unwrap_or(1);
        let (mcu_w, mcu_h) = (8 * hmax, 8 * vmax);
        let cols = usize::from(j.width).div_ceil(mcu_w);
        let rows = usize::from(j.height).div_ceil(mcu_h);
        Layout {
            mcu_w,
            mcu_h,
            cols,
            mcus: cols * rows,
            blocks_per_mcu: j.comps.iter().map(|c| c.h * c.v).sum(),
            hmax,
            vmax,
        }
    }

    /// Which MCUs meet a region.
    fn changed(&self, regions: &[Region]) -> Vec<bool> {
        let mut changed = vec![false; self.mcus];
        let rows = self.mcus / self.cols;
        for &(x, y, w, h) in regions.iter().filter(|r| r.2 > 0 && r.3 > 0) {
            let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
            let c1 = (x + w - 1) / self.mcu_w;
            let r1 = (y + h - 1) / self.mcu_h;
            for row in y / self.mcu_h..=r1.min(rows.saturating_sub(1)) {
                for col in x / self.mcu_w..=c1.min(self.cols - 1) {
                    changed[row * self.cols + col] = true;
                }
            }
        }
        changed
    }

    /// Quantised coefficients (natural order) of MCU `m`'s blocks, from RGB pixels: JFIF YCbCr,
    /// chroma averaged over the pixels each sample covers, edges repeated past the image.
    fn mcu_from_pixels(
        &self,
        img: &image::RgbImage,
        j: &Jpeg<'_>,
        scales: &[[f32; 64]; 4],
        planes: &mut [[f32; 32 * 32]; 3],
        m: usize,
        out: &mut [[i16; 64]],
    ) {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let px = img.as_raw();
        let (x0, y0) = ((m % self.cols) * self.mcu_w, (m / self.cols) * self.mcu_h);
        // The MCU's pixels in YCbCr, one plane per component, edges repeated.
        let ncomp = j.comps.len();
        let (w, h) = (self.mcu_w, self.mcu_h);
        let inside = x0 + w <= iw;
        for v in 0..h {
            let y = (y0 + v).min(ih - 1);
            let at = v * w;
            let (p0, rest) = planes.split_at_mut(1);
            let (p1, p2) = rest.split_at_mut(1);
            let (py, pcb, pcr) = (
                &mut p0[0][at..at + w],
                &mut p1[0][at..at + w],
                &mut p2[0][at..at + w],
            );
            let mut put = |u: usize, p: &[u8]| {
                let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
                py[u] = 0.299 * r + 0.587 * g + 0.114 * b - 128.0;
                if ncomp == 3 {
                    pcb[u] = -0.168_736 * r - 0.331_264 * g + 0.5 * b;
                    pcr[u] = 0.5 * r - 0.418_688 * g - 0.081_312 * b;
                }
            };
            if inside {
                let row = &px[(y * iw + x0) * 3..][..w * 3];
                for (u, p) in row.chunks_exact(3).enumerate() {
                    put(u, p);
                }
            } else {
                for u in 0..w {
                    let x = (x0 + u).min(iw - 1);
                    put(u, &px[(y * iw + x) * 3..][..3]);
                }
            }
        }
        let mut b = 0;
        for (ci, c) in j.comps.iter().enumerate() {
            let (sx, sy) = (self.hmax / c.h, self.vmax / c.v);
            let norm = 1.0 / (sx * sy) as f32;
            let plane = &planes[ci];
            for by in 0..c.v {
                for bx in 0..c.h {
                    let mut block = [0f32; 64];
                    for (r, line) in block.chunks_exact_mut(8).enumerate() {
                        let v0 = (by * 8 + r) * sy;
                        let u0 = bx * 8 * sx;
                        if sx == 1 && sy == 1 {
                            line.copy_from_slice(&plane[v0 * w + u0..][..8]);
                            continue;
                        }
                        for (k, s) in line.iter_mut().enumerate() {
                            let mut acc = 0f32;
                            for dv in 0..sy {
                                let row = &plane[(v0 + dv) * w + u0 + k * sx..][..sx];
                                acc += row.iter().sum::<f32>();
                            }
                            *s = acc * norm;
                        }
                    }
                    fdct(&mut block);
                    let scale = &scales[c.tq];
                    for (o, (&f, &q)) in out[b].iter_mut().zip(block.iter().zip(scale)) {
                        // Round half away from zero, within baseline's range.
                        let v = (f * q).clamp(-1023.0, 1023.0);
                        *o = (v + 0.5f32.copysign(v)) as i16;
                    }
                    b += 1;
                }
            }
        }
    }
}

/// Per quantization table, in natural order, the factor that turns [`fdct`]'s output into a
/// quantised coefficient: 1 / (step · AAN scale of the row · of the column · 8).
fn quant_scales(j: &Jpeg<'_>) -> [[f32; 64]; 4] {
    const AAN: [f64; 8] = [
        1.0,
        1.387_039_845,
        1.306_562_965,
        1.175_875_602,
        1.0,
        0.785_694_958,
        0.541_196_100,
        0.275_899_379,
    ];
    let mut out = [[0f32; 64]; 4];
    for (t, q) in j.qt.iter().enumerate() {
        if let Some(q) = q {
            for (n, &step) in q.iter().enumerate() {
                out[t][n] = (1.0 / (f64::from(step) * AAN[n / 8] * AAN[n % 8] * 8.0)) as f32;
            }
        }
    }
    out
}

/// The AAN forward DCT in floating point (libjpeg's `jfdctflt.c`), in place, natural order; its
/// outputs are scaled by [`quant_scales`]'s factors.
fn fdct(d: &mut [f32; 64]) {
    fn pass(d: &mut [f32; 64], at: impl Fn(usize, usize) -> usize) {
        for line in 0..8 {
            let p = |i: usize| d[at(line, i)];
            let (tmp0, tmp7) = (p(0) + p(7), p(0) - p(7));
            let (tmp1, tmp6) = (p(1) + p(6), p(1) - p(6));
            let (tmp2, tmp5) = (p(2) + p(5), p(2) - p(5));
            let (tmp3, tmp4) = (p(3) + p(4), p(3) - p(4));
            let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
            let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
            let z1 = (tmp12 + tmp13) * 0.707_106_77;
            let (t10, t11, t12) = (tmp4 + tmp5, tmp5 + tmp6, tmp6 + tmp7);
            let z5 = (t10 - t12) * 0.382_683_43;
            let z2 = 0.541_196_1 * t10 + z5;
            let z4 = 1.306_563 * t12 + z5;
            let z3 = t11 * 0.707_106_77;
            let (z11, z13) = (tmp7 + z3, tmp7 - z3);
            d[at(line, 0)] = tmp10 + tmp11;
            d[at(line, 4)] = tmp10 - tmp11;
            d[at(line, 2)] = tmp13 + z1;
            d[at(line, 6)] = tmp13 - z1;
            d[at(line, 5)] = z13 + z2;
            d[at(line, 3)] = z13 - z2;
            d[at(line, 1)] = z11 + z4;
            d[at(line, 7)] = z11 - z4;
        }
    }
    pass(d, |row, i| row * 8 + i);
    pass(d, |col, i| i * 8 + col);
}

/// The entropy-coded data without stuffing or restart markers, and each MCU's bits in it.
struct Index {
    data: Vec<u8>,
    /// Per MCU: first bit, bit after its last, and the DC predictors after it.
    mcus: Vec<(u64, u64, [i32; 4])>,
    restart_interval: usize,
}

impl Index {
    /// The DC predictors at the start of MCU `m` in the input.
    fn before(&self, m: usize) -> [i32; 4] {
        let restart = self.restart_interval > 0 && m.is_multiple_of(self.restart_interval);
        if m == 0 || restart {
            [0; 4]
        } else {
            self.mcus[m - 1].2
        }
    }
}

/// Huffman-decodes the whole scan once, noting where each MCU starts and ends.
fn index(j: &Jpeg<'_>, layout: &Layout) -> Option<Index> {
    // Unstuff, and cut at restart markers: each interval starts on a byte of its own.
    let mut data = Vec::with_capacity(j.scan.len() + 8);
    let mut starts = vec![0u64];
    let mut expected_rst = 0u8;
    let mut i = 0;
    let s = j.scan;
    while i < s.len() {
        let x = s[i];
        if x != 0xFF {
            data.push(x);
            i += 1;
            continue;
        }
        match s.get(i + 1) {
            Some(0x00) => {
                data.push(0xFF);
                i += 2;
            }
            Some(&m @ 0xD0..=0xD7) => {
                if m != 0xD0 + expected_rst {
                    return None;
                }
                expected_rst = (expected_rst + 1) & 7;
                starts.push(data.len() as u64 * 8);
                i += 2;
            }
            Some(0xFF) => i += 1,
            _ => return None,
        }
    }
    let interval = j.restart_interval;
    let intervals = if interval > 0 {
        layout.mcus.div_ceil(interval)
    } else {
        1
    };
    if starts.len() != intervals {
        return None;
    }
    let total_bits = data.len() as u64 * 8;
    let mut mcus = Vec::with_capacity(layout.mcus);
    let mut r = BitReader::new(&data, 0);
    let mut pred = [0i32; 4];
    for m in 0..layout.mcus {
        if m == 0 || (interval > 0 && m.is_multiple_of(interval)) {
            let k = m.checked_div(interval).unwrap_or(0);
            r = BitReader::new(&data, *starts.get(k)?);
            pred = [0; 4];
        }
        let start = r.position();
        decode_mcu(&mut r, j, &mut pred, None)?;
        if r.position() > total_bits {
            return None;
        }
        mcus.push((start, r.position(), pred));
    }
    Some(Index {
        data,
        mcus,
        restart_interval: interval,
    })
}

/// Decodes one MCU, updating the DC predictors; the coefficients (natural order) go to `out` when
/// given.
fn decode_mcu(
    r: &mut BitReader<'_>,
    j: &Jpeg<'_>,
    pred: &mut [i32; 4],
    mut out: Option<&mut [[i16; 64]]>,
) -> Option<()> {
    let mut b = 0;
    for (ci, c) in j.comps.iter().enumerate() {
        let (dc, ac) = (j.huff[0][c.td].as_ref()?, j.huff[1][c.ta].as_ref()?);
        for _ in 0..c.h * c.v {
            let s = dc.decode(r)?;
            if s > 11 {
                return None;
            }
            pred[ci] += extend(r.bits(u32::from(s)), s);
            let mut block = out.as_mut().map(|o| {
                let blk = &mut o[b];
                *blk = [0; 64];
                blk
            });
            if let Some(blk) = block.as_mut() {
                blk[0] = pred[ci] as i16;
            }
            let mut k = 1;
            while k < 64 {
                let f = ac.fast_ac[(r.peek(9)) as usize];
                if f != 0 {
                    r.consume(f & 0xFF);
                    k += (f >> 8 & 0xFF) as usize;
                    if k > 63 {
                        return None;
                    }
                    if let Some(blk) = block.as_mut() {
                        blk[ZIGZAG[k]] = (f >> 16) as u16 as i16;
                    }
                    k += 1;
                    continue;
                }
                let rs = ac.decode(r)?;
                let (run, size) = (usize::from(rs >> 4), rs & 15);
                if size == 0 {
                    if run != 15 {
                        break;
                    }
                    k += 16;
                    continue;
                }
                k += run;
                if k > 63 || size > 10 {
                    return None;
                }
                let v = extend(r.bits(u32::from(size)), size);
                if let Some(blk) = block.as_mut() {
                    blk[ZIGZAG[k]] = v as i16;
                }
                k += 1;
            }
            if k > 64 {
                return None;
            }
            b += 1;
        }
    }
    Some(())
}

/// Changes new coefficients as little as it can so that the tables code them: a DC difference of
/// a size the DC table lacks becomes the nearest one it has; an AC value whose (run, size) symbol is
/// missing is clamped to the largest size that has one, or dropped; with no ZRL, a block ends at a
/// run of 16 zeros. Only for MCUs made from new pixels (a table optimised for the input lacks what
/// the input never needed, typically the rarest sizes). `None` without an end-of-block symbol.
fn fit(j: &Jpeg<'_>, blocks: &mut [[i16; 64]], mut pred: [i32; 4]) -> Option<()> {
    let mut b = 0;
    for (ci, c) in j.comps.iter().enumerate() {
        let (dc, ac) = (j.huff[0][c.td].as_ref()?, j.huff[1][c.ta].as_ref()?);
        if !ac.has(0x00) {
            return None;
        }
        for _ in 0..c.h * c.v {
            let blk = &mut blocks[b];
            let diff = i32::from(blk[0]) - pred[ci];
            let coded = (0..=11u8)
                .filter(|&s| dc.has(s))
                .map(|s| nearest_of_size(diff, s))
                .min_by_key(|v| (v - diff).abs())?;
            blk[0] = (pred[ci] + coded) as i16;
            pred[ci] = i32::from(blk[0]);
            let mut run = 0u8;
            for k in 1..64 {
                let n = ZIGZAG[k];
                let v = i32::from(blk[n]);
                if v == 0 {
                    run += 1;
                    continue;
                }
                if run >= 16 && !ac.has(0xF0) {
                    for &rest in &ZIGZAG[k..] {
                        blk[rest] = 0;
                    }
                    break;
                }
                let r = (run % 16) << 4;
                match (1..=magnitude(v).1).rev().find(|&s| ac.has(r | s)) {
                    Some(s) => {
                        blk[n] = nearest_of_size(v, s) as i16;
                        run = 0;
                    }
                    None => {
                        blk[n] = 0;
                        run += 1;
                    }
                }
            }
            b += 1;
        }
    }
    Some(())
}

/// The value of size category `s` (0–11) nearest to `v`.
fn nearest_of_size(v: i32, s: u8) -> i32 {
    if s == 0 {
        return 0;
    }
    let (lo, hi) = (1i32 << (s - 1), (1i32 << s) - 1);
    v.signum().max(if v == 0 { 1 } else { -1 }) * v.abs().clamp(lo, hi)
}

/// Entropy-codes one MCU (coefficients in natural order) against the predictors.
fn encode_mcu(
    w: &mut BitWriter,
    j: &Jpeg<'_>,
    blocks: &[[i16; 64]],
    pred: &mut [i32; 4],
) -> Option<()> {
    let mut b = 0;
    for (ci, c) in j.comps.iter().enumerate() {
        let (dc, ac) = (j.huff[0][c.td].as_ref()?, j.huff[1][c.ta].as_ref()?);
        for _ in 0..c.h * c.v {
            let blk = &blocks[b];
            let diff = i32::from(blk[0]) - pred[ci];
            pred[ci] = i32::from(blk[0]);
            let (bits, size) = magnitude(diff);
            w.code(dc, size)?;
            w.put(bits, size);
            let mut run = 0u8;
            for &n in &ZIGZAG[1..] {
                let v = i32::from(blk[n]);
                if v == 0 {
                    run += 1;
                    continue;
                }
                while run >= 16 {
                    w.code(ac, 0xF0)?;
                    run -= 16;
                }
                let (bits, size) = magnitude(v);
                w.code(ac, run << 4 | size)?;
                w.put(bits, size);
                run = 0;
            }
            if run > 0 {
                w.code(ac, 0x00)?;
            }
            b += 1;
        }
    }
    Some(())
}

/// A value's size category and the bits that code it (T.81 F.1.2.1).
fn magnitude(v: i32) -> (u32, u8) {
    let size = (32 - v.unsigned_abs().leading_zeros()) as u8;
    let bits = if v < 0 { (v - 1) as u32 } else { v as u32 };
    (bits & ((1u32 << size) - 1), size)
}

/// T.81 F.2.2.1 EXTEND: the value of `size` received bits.
fn extend(bits: u32, size: u8) -> i32 {
    if size == 0 {
        return 0;
    }
    let v = bits as i32;
    if v < 1 << (size - 1) {
        v - (1 << size) + 1
    } else {
        v
    }
}

/// Reads bits, most significant first, from unstuffed data (zeros past its end).
struct BitReader<'a> {
    data: &'a [u8],
    /// The next bits, left-aligned; `bits` of them are valid.
    buf: u64,
    bits: u32,
    /// The next byte of `data` to load into `buf`.
    next: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: u64) -> Self {
        let mut r = BitReader {
            data,
            buf: 0,
            bits: 0,
            next: (pos / 8) as usize,
        };
        r.refill();
        r.consume((pos % 8) as u32);
        r
    }

    fn position(&self) -> u64 {
        self.next as u64 * 8 - u64::from(self.bits)
    }

    /// Tops `buf` up to at least 57 valid bits.
    #[inline]
    fn refill(&mut self) {
        if let Some(b) = self.data.get(self.next..self.next + 8) {
            // Eight bytes at once: as many whole bytes as fit behind the valid bits.
            let word = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
            let take = (64 - self.bits) / 8;
            self.buf |= word.checked_shr(self.bits).unwrap_or(0)
                & !(u64::MAX.checked_shr(self.bits + 8 * take).unwrap_or(0));
            self.bits += 8 * take;
            self.next += take as usize;
        } else {
            while self.bits <= 56 {
                let byte = self.data.get(self.next).copied().unwrap_or(0);
                self.buf |= u64::from(byte) << (56 - self.bits);
                self.bits += 8;
                self.next += 1;
            }
        }
    }

    /// The next `n` (1–32) bits, not consumed.
    #[inline]
    fn peek(&mut self, n: u32) -> u32 {
        if self.bits < 32 {
            self.refill();
        }
        (self.buf >> (64 - n)) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.buf = self.buf.checked_shl(n).unwrap_or(0);
        self.bits -= n;
    }

    #[inline]
    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }
}

/// Writes bits with JPEG's byte stuffing.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// The low `n` (≤ 32) bits of `v`.
    fn put(&mut self, v: u32, n: u8) {
        if n == 0 {
            return;
        }
        let n = u32::from(n);
        self.acc = (self.acc << n) | u64::from(v & ((1u64 << n) - 1) as u32);
        self.n += n;
        while self.n >= 8 {
            self.n -= 8;
            let byte = (self.acc >> self.n) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    /// Where the output stands, for [`rewind`](Self::rewind).
    fn mark(&self) -> (usize, u64, u32) {
        (self.out.len(), self.acc, self.n)
    }

    /// Back to a [`mark`](Self::mark): what was written since is dropped.
    fn rewind(&mut self, (len, acc, n): (usize, u64, u32)) {
        self.out.truncate(len);
        self.acc = acc;
        self.n = n;
    }

    fn code(&mut self, t: &Huffman, sym: u8) -> Option<()> {
        let (code, len) = t.code[usize::from(sym)];
        if len == 0 {
            return None;
        }
        self.put(u32::from(code), len);
        Some(())
    }

    /// Bits `from..to` of `data`: whole bytes of it at once, shifted to where the output stands.
    fn copy_bits(&mut self, data: &[u8], from: u64, to: u64) {
        let mut pos = from;
        let head = ((8 - pos % 8) % 8).min(to - pos);
        if head > 0 {
            let v = BitReader::new(data, pos).bits(head as u32);
            self.put(v, head as u8);
            pos += head;
        }
        let (first, last) = ((pos / 8) as usize, (to / 8) as usize);
        if let Some(bytes) = data.get(first..last).filter(|b| !b.is_empty()) {
            self.put_bytes(bytes);
            pos = last as u64 * 8;
        }
        if to > pos {
            let v = BitReader::new(data, pos).bits((to - pos) as u32);
            self.put(v, (to - pos) as u8);
        }
    }

    /// Whole bytes, stuffed.
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.out.reserve(bytes.len() + bytes.len() / 128 + 8);
        if self.n == 0 {
            let mut rest = bytes;
            while let Some(i) = rest.iter().position(|&b| b == 0xFF) {
                self.out.extend_from_slice(&rest[..=i]);
                self.out.push(0);
                rest = &rest[i + 1..];
            }
            self.out.extend_from_slice(rest);
            return;
        }
        let (n, mut acc) = (self.n, self.acc);
        for &b in bytes {
            acc = (acc << 8) | u64::from(b);
            let byte = (acc >> n) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
        self.acc = acc & ((1 << n) - 1);
    }

    /// Pads the last byte with ones.
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1 << pad) - 1, pad as u8);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit `i` of `data`, most significant first.
    fn bit(data: &[u8], i: u64) -> u32 {
        u32::from(data[(i / 8) as usize] >> (7 - i % 8) & 1)
    }

    #[test]
    fn copied_bits_are_the_bits_one_at_a_time_at_every_offset() {
        // Bytes with 0xFF among them, so that stuffing is exercised on both paths.
        let data: Vec<u8> = (0..200u32)
            .map(|i| {
                if i % 7 == 3 {
                    0xFF
                } else {
                    (i * 37 % 256) as u8
                }
            })
            .collect();
        for lead in 0..8u8 {
            for (from, to) in [(0, 1), (3, 5), (5, 64), (8, 800), (13, 1517), (0, 1600)] {
                let mut fast = BitWriter::new(Vec::new());
                let mut slow = BitWriter::new(Vec::new());
                fast.put(0b101_0110 >> (7 - lead.min(7)), lead);
                slow.put(0b101_0110 >> (7 - lead.min(7)), lead);
                fast.copy_bits(&data, from, to);
                for i in from..to {
                    slow.put(bit(&data, i), 1);
                }
                assert_eq!(
                    fast.finish(),
                    slow.finish(),
                    "lead {lead}, bits {from}..{to}"
                );
            }
        }
    }

    #[test]
    fn the_fast_ac_table_decodes_what_the_code_lengths_say() {
        // The standard luminance AC table (T.81 K.3.3.2): every coefficient that fits 9 bits with
        // its value must come out of `fast_ac` as the slow path decodes it.
        let counts = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
        let symbols: Vec<u8> = [
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
            0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1,
            0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82,
        ]
        .into_iter()
        .chain((0..0x7D).map(|i| 0x83u8.wrapping_add(i)))
        .collect();
        let t = Huffman::new(&counts, &symbols).expect("a valid table");
        let mut fast = 0;
        for i in 0..512u32 {
            let f = t.fast_ac[i as usize];
            if f == 0 {
                continue;
            }
            fast += 1;
            let data = [(i >> 1) as u8, (i << 7) as u8, 0, 0, 0, 0, 0, 0];
            let mut r = BitReader::new(&data, 0);
            let rs = t.decode(&mut r).expect("a code");
            let size = rs & 15;
            let v = extend(r.bits(u32::from(size)), size);
            assert_eq!(f & 0xFF, r.position() as u32, "bits of {i:09b}");
            assert_eq!(f >> 8 & 0xFF, u32::from(rs >> 4), "run of {i:09b}");
            assert_eq!((f >> 16) as u16 as i16, v as i16, "value of {i:09b}");
        }
        // EOB and ZRL never take the fast path; short codes with short values do.
        assert!(fast > 256, "{fast} entries");
    }
}
