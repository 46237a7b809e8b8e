//! Comparing tensors against golden fixtures.

use candle_core::{DType, Tensor};

/// Max |a-b| / max(|b|), the relative error the fixture tests bound.
pub fn relative_error(actual: &Tensor, expected: &Tensor) -> anyhow::Result<f32> {
    anyhow::ensure!(
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
