//! The float64 array helpers diffusers' schedules are built from, reproduced bit for bit.

/// `numpy.linspace(start, stop, num)` (endpoint included): `i * step + start`, last set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = if step == 0.0 {
        (0..num).map(|i| i as f64 / div * delta + start).collect()
    } else {
        (0..num).map(|i| i as f64 * step + start).collect()
    };
    y[num - 1] = stop;
    y
}

/// The shift of flow sigmas toward high noise: `shift * s / (1 + (shift - 1) * s)`.
pub fn shift_sigma(shift: f64, s: f64) -> f64 {
    shift * s / (1.0 + (shift - 1.0) * s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_endpoints_and_spacing() {
        assert_eq!(linspace(0.0, 1.0, 5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(linspace(3.0, 7.0, 1), vec![3.0]);
        assert!(linspace(1.0, 2.0, 0).is_empty());
    }
}
