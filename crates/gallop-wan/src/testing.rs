//! Comparing tensors against golden fixtures, and measuring for benchmarks.

use candle_core::{DType, Tensor};

/// Max |a-b| / max(|b|), the relative error the fixture tests bound.
pub fn relative_error(actual: &Tensor, expected: &Tensor) -> crate::Result<f32> {
    crate::error::ensure!(
        actual.dims() == expected.dims(),
        "shape {:?} != expected {:?}",
        actual.dims(),
        expected.dims()
    );
    let a = actual.to_dtype(DType::F32)?.flatten_all()?;
    let b = expected.to_dtype(DType::F32)?.flatten_all()?;
    let diff = (a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f32>()?.max(1e-12);
    Ok(diff / scale)
}

/// Fail with both numbers when `actual` is not within `tol` relative error of `expected`.
pub fn assert_close(name: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    let err = relative_error(actual, expected).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(err < tol, "{name}: relative error {err:e} >= {tol:e}");
}

/// Largest |a - b| over two tensors of the same shape (frames against diffusers' frames).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> crate::Result<f32> {
    crate::error::ensure!(
        a.dims() == b.dims(),
        "shapes differ: {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// The bit patterns of a tensor's values as f32: for "bit-identical" assertions, which a
/// difference of 0 would not make (it equates -0 with 0 and fails on NaN).
pub fn f32_bits(t: &Tensor) -> crate::Result<Vec<u32>> {
    let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(values.into_iter().map(f32::to_bits).collect())
}

/// User + system CPU seconds of this process (all threads), from /proc/self/stat; wall time alone
/// misleads when other jobs share the cores.
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
