//! The stored element kinds of weights — F32, BF16, F16 — read into 16 lanes of `f32` with
//! AVX-512 (exactly: a half value widens without rounding), for the products that read weights
//! as stored (`skinny`). x86-64 only; callers check for AVX-512 F/BW/VL first.

use std::arch::x86_64::*;

/// One kind of stored element, widened to 16 lanes of `f32`.
pub trait Lanes {
    type Elem;
    /// # Safety
    /// The lanes set in `mask` lie in one allocation; needs AVX-512 F/BW/VL.
    unsafe fn load(p: *const Self::Elem, mask: __mmask16) -> __m512;
    /// One value in all 16 lanes.
    ///
    /// # Safety
    /// `p` points at a value; needs AVX-512 F/BW/VL.
    unsafe fn splat(p: *const Self::Elem) -> __m512;
}

pub struct F32s;
pub struct Bf16s;
pub struct F16s;

impl Lanes for F32s {
    type Elem = f32;
    #[inline(always)]
    unsafe fn load(p: *const f32, mask: __mmask16) -> __m512 {
        // SAFETY: per the trait's contract; masked-off lanes are not read.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m512 {
        // SAFETY: per the trait's contract.
        unsafe { _mm512_set1_ps(*p) }
    }
}

impl Lanes for Bf16s {
    type Elem = u16;
    #[inline(always)]
    unsafe fn load(p: *const u16, mask: __mmask16) -> __m512 {
        // SAFETY: per the trait's contract. A BF16 value is the high half of its f32.
        unsafe {
            let bits = _mm256_maskz_loadu_epi16(mask, p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
        }
    }
    #[inline(always)]
    unsafe fn splat(p: *const u16) -> __m512 {
        // SAFETY: per the trait's contract.
        unsafe { _mm512_castsi512_ps(_mm512_set1_epi32(i32::from(*p) << 16)) }
    }
}

impl Lanes for F16s {
    type Elem = u16;
    #[inline(always)]
    unsafe fn load(p: *const u16, mask: __mmask16) -> __m512 {
        // SAFETY: per the trait's contract; the conversion is exact.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast())) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const u16) -> __m512 {
        // SAFETY: per the trait's contract; the conversion is exact.
        unsafe { _mm512_cvtph_ps(_mm256_set1_epi16(*p as i16)) }
    }
}
