//! The structural index: one pass over a message that records the position
//! of every delimiter byte, simdjson-style.
//!
//! Why an index and not a tree: a tree of owned strings costs an allocation
//! per element and must be built whether or not the caller reads it. The
//! index is two flat `u32` arrays: positions of the field, component,
//! repetition and subcomponent separators in order (`pos`), and, for every
//! line break (CR or LF), its position and how many delimiters precede it
//! (`breaks`). Every accessor answers from these arrays by slicing the input,
//! so reading is lazy and allocation-free.
//!
//! The classifier looks at 64 bytes at a time and produces two bitmasks
//! (delimiters, line breaks). On x86_64 with AVX2 it uses the vector unit
//! (the only `unsafe` code in the crate, in [`simd`](self::simd)); everywhere
//! else a safe SWAR version on `u64` words computes the same masks. Both are
//! tested against a byte-by-byte reference and fuzzed.

use crate::Delimiters;

/// Delimiter positions and line breaks of one message.
#[derive(Debug, Default, Clone)]
pub(crate) struct Index {
    /// Positions of field, component, repetition and subcomponent separators.
    pub pos: Vec<u32>,
    /// `(position of a CR or LF, number of entries of pos before it)`.
    pub breaks: Vec<(u32, u32)>,
}

/// The bytes a block is classified against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Classes {
    pub delims: [u8; 4],
}

impl Classes {
    pub(crate) fn new(d: &Delimiters) -> Classes {
        Classes { delims: [d.field, d.component, d.repetition, d.subcomponent] }
    }
}

/// Appends the delimiters and line breaks of `text[from..]` to `index`.
pub(crate) fn build(text: &[u8], from: usize, classes: Classes, index: &mut Index) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd::avx2_available() {
            simd::build_avx2(text, from, classes, index);
            return;
        }
    }
    build_swar(text, from, classes, index);
}

/// Writes the set bits of one 64-byte block into the index.
#[inline(always)]
pub(crate) fn emit(base: usize, dm: u64, lm: u64, index: &mut Index, n: &mut usize) {
    let base = base as u32;
    let mut l = lm;
    while l != 0 {
        let b = l.trailing_zeros();
        let before = (dm & ((1u64 << b) - 1)).count_ones();
        index.breaks.push((base + b, *n as u32 + before));
        l &= l - 1;
    }
    if dm == 0 {
        return;
    }
    let pos = &mut index.pos;
    if pos.len() < *n + 64 {
        let want = (*n + 64).max(pos.len() * 2);
        pos.resize(want, 0);
    }
    let out = &mut pos[*n..*n + 64];
    let mut m = dm;
    let mut k = 0;
    while m != 0 {
        out[k] = base + m.trailing_zeros();
        k += 1;
        m &= m - 1;
    }
    *n += k;
}

/// Runs a block classifier over `text[from..]`. A macro rather than a generic
/// function so the classifier inlines into a `#[target_feature]` function.
macro_rules! drive {
    ($text:expr, $from:expr, $index:expr, |$chunk:ident| $classify:expr) => {{
        let text: &[u8] = $text;
        let index: &mut $crate::scan::Index = $index;
        let mut n = index.pos.len();
        let mut i = $from;
        while i + 64 <= text.len() {
            let $chunk: &[u8; 64] = match text[i..i + 64].try_into() {
                Ok(c) => c,
                Err(_) => break,
            };
            let (dm, lm) = $classify;
            $crate::scan::emit(i, dm, lm, index, &mut n);
            i += 64;
        }
        if i < text.len() {
            let mut buf = [0u8; 64];
            buf[..text.len() - i].copy_from_slice(&text[i..]);
            let $chunk: &[u8; 64] = &buf;
            let (dm, lm) = $classify;
            $crate::scan::emit(i, dm, lm, index, &mut n);
        }
        index.pos.truncate(n);
    }};
}
pub(crate) use drive;

const LO: u64 = 0x0101_0101_0101_0101;
const HI7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` equal to `b` (exact, no false positives).
#[inline(always)]
fn eq_bytes(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * b as u64);
    !(((x & HI7) + HI7) | x) & HI
}

/// Gathers the high bit of each byte into an 8-bit mask (byte 0 -> bit 0).
#[inline(always)]
fn gather(m: u64) -> u64 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

#[inline(always)]
fn classify_swar(chunk: &[u8; 64], c: Classes) -> (u64, u64) {
    let mut dm = 0u64;
    let mut lm = 0u64;
    for (k, word) in chunk.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let w = u64::from_le_bytes(b);
        let d =
            eq_bytes(w, c.delims[0]) | eq_bytes(w, c.delims[1]) | eq_bytes(w, c.delims[2]) | eq_bytes(w, c.delims[3]);
        let l = eq_bytes(w, b'\r') | eq_bytes(w, b'\n');
        dm |= gather(d) << (8 * k);
        lm |= gather(l) << (8 * k);
    }
    (dm, lm)
}

/// The portable classifier, in safe code.
pub(crate) fn build_swar(text: &[u8], from: usize, classes: Classes, index: &mut Index) {
    drive!(text, from, index, |chunk| classify_swar(chunk, classes));
}

/// Byte-by-byte reference used by the tests.
#[cfg(test)]
pub(crate) fn build_reference(text: &[u8], from: usize, classes: Classes, index: &mut Index) {
    for (i, &b) in text.iter().enumerate().skip(from) {
        if b == b'\r' || b == b'\n' {
            index.breaks.push((i as u32, index.pos.len() as u32));
        } else if classes.delims.contains(&b) {
            index.pos.push(i as u32);
        }
    }
}

#[allow(unsafe_code)]
pub(crate) mod simd {
    //! The AVX2 classifier: the crate's only `unsafe` code. It is used only
    //! after `is_x86_feature_detected!("avx2")` says the CPU has AVX2, reads
    //! exactly one 64-byte array per step through unaligned loads, and is
    //! checked against the safe SWAR classifier and a byte-by-byte reference
    //! by unit tests, property tests and the `scan` fuzz target.
    use super::{Classes, Index};

    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx2_available() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    #[cfg(target_arch = "x86_64")]
    pub(crate) fn build_avx2(text: &[u8], from: usize, classes: Classes, index: &mut Index) {
        debug_assert!(avx2_available());
        // SAFETY: callers check `avx2_available()` first.
        unsafe { build_avx2_inner(text, from, classes, index) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn build_avx2_inner(text: &[u8], from: usize, classes: Classes, index: &mut Index) {
        use std::arch::x86_64::*;
        let d0 = _mm256_set1_epi8(classes.delims[0] as i8);
        let d1 = _mm256_set1_epi8(classes.delims[1] as i8);
        let d2 = _mm256_set1_epi8(classes.delims[2] as i8);
        let d3 = _mm256_set1_epi8(classes.delims[3] as i8);
        let cr = _mm256_set1_epi8(b'\r' as i8);
        let lf = _mm256_set1_epi8(b'\n' as i8);
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn half(v: __m256i, d: [__m256i; 4], cr: __m256i, lf: __m256i) -> (u32, u32) {
            let dm = _mm256_or_si256(
                _mm256_or_si256(_mm256_cmpeq_epi8(v, d[0]), _mm256_cmpeq_epi8(v, d[1])),
                _mm256_or_si256(_mm256_cmpeq_epi8(v, d[2]), _mm256_cmpeq_epi8(v, d[3])),
            );
            let lm = _mm256_or_si256(_mm256_cmpeq_epi8(v, cr), _mm256_cmpeq_epi8(v, lf));
            (_mm256_movemask_epi8(dm) as u32, _mm256_movemask_epi8(lm) as u32)
        }
        let ds = [d0, d1, d2, d3];
        super::drive!(text, from, index, |chunk| {
            // SAFETY: `chunk` is a 64-byte array; both loads are in bounds and unaligned loads
            // have no alignment requirement.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(chunk.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(chunk.as_ptr().add(32) as *const __m256i),
                )
            };
            let (da, la) = half(a, ds, cr, lf);
            let (db, lb) = half(b, ds, cr, lf);
            ((da as u64) | ((db as u64) << 32), (la as u64) | ((lb as u64) << 32))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn classes() -> Classes {
        Classes::new(&Delimiters::default())
    }

    type Found = (Vec<u32>, Vec<(u32, u32)>);

    fn all_ways(text: &[u8], from: usize) -> Vec<Found> {
        let mut out = Vec::new();
        let mut r = Index::default();
        build_reference(text, from, classes(), &mut r);
        out.push((r.pos, r.breaks));
        let mut s = Index::default();
        build_swar(text, from, classes(), &mut s);
        out.push((s.pos, s.breaks));
        let mut b = Index::default();
        build(text, from, classes(), &mut b);
        out.push((b.pos, b.breaks));
        out
    }

    #[test]
    fn classifiers_agree_on_a_message() {
        let text = b"MSH|^~\\&|A|B\rPID|1||X^Y~Z&W\r\nOBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F\n".repeat(5);
        let ways = all_ways(&text, 9);
        assert_eq!(ways[0], ways[1]);
        assert_eq!(ways[0], ways[2]);
        assert!(!ways[0].0.is_empty());
    }

    #[test]
    fn gather_moves_each_high_bit_to_its_byte_index() {
        for i in 0..8 {
            assert_eq!(gather(0x80u64 << (8 * i)), 1 << i);
        }
        assert_eq!(gather(HI), 0xff);
    }

    proptest! {
        #[test]
        fn classifiers_agree_on_any_bytes(text in proptest::collection::vec(
            prop_oneof![Just(b'|'), Just(b'^'), Just(b'~'), Just(b'&'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..300),
            from in 0usize..70) {
            let from = from.min(text.len());
            let ways = all_ways(&text, from);
            prop_assert_eq!(&ways[0], &ways[1]);
            prop_assert_eq!(&ways[0], &ways[2]);
        }
    }
}
