//! Camera moves for the motion preview: which move a prompt asks for, and where the camera looks
//! at each moment of a shot.
//!
//! A view is a rectangle inside the (aspect-cropped) source image, in normalised coordinates:
//! `center` in 0..1 on both axes, `size` the fraction of the image's width and height it covers
//! (1 = the whole image), `roll` a small rotation in radians. Film conventions: "pan left" turns
//! the camera to the left, so the scene slides to the right across the frame; "tilt up" looks
//! up, so the scene slides down.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The camera moves the preview understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraMove {
    PushIn,
    PullOut,
    PanLeft,
    PanRight,
    TiltUp,
    TiltDown,
    Orbit,
    Static,
}

/// Words that name a move, checked in this order, so "static" wins over a stray "zoom in" in the
/// same sentence and a more specific phrase wins over a generic one.
const MOVE_WORDS: &[(CameraMove, &[&str])] = &[
    (
        CameraMove::Static,
        &[
            "static",
            "still camera",
            "camera is still",
            "stays still",
            "locked",
            "tripod",
            "no camera movement",
        ],
    ),
    (CameraMove::Orbit, &["orbit", "circles around", "arc shot"]),
    (
        CameraMove::PullOut,
        &[
            "pull out",
            "pulls out",
            "pulling out",
            "pull back",
            "pulls back",
            "zoom out",
            "zooms out",
            "zooming out",
            "dolly out",
            "dollies out",
        ],
    ),
    (
        CameraMove::PushIn,
        &[
            "push in",
            "push-in",
            "pushes in",
            "pushing in",
            "zoom in",
            "zooms in",
            "zooming in",
            "dolly in",
            "dollies in",
            "moves closer",
        ],
    ),
    (
        CameraMove::PanLeft,
        &["pan left", "pans left", "panning left", "pans to the left"],
    ),
    (
        CameraMove::PanRight,
        &[
            "pan right",
            "pans right",
            "panning right",
            "pans to the right",
        ],
    ),
    (
        CameraMove::TiltUp,
        &["tilt up", "tilts up", "tilting up", "tilts upward"],
    ),
    (
        CameraMove::TiltDown,
        &["tilt down", "tilts down", "tilting down", "tilts downward"],
    ),
];

impl CameraMove {
    /// The move a prompt names, or None when it names none.
    pub fn from_prompt(prompt: &str) -> Option<CameraMove> {
        let prompt = prompt.to_lowercase().replace(['-', '_'], " ");
        MOVE_WORDS
            .iter()
            .find(|(_, words)| {
                words
                    .iter()
                    .any(|w| prompt.contains(&w.replace(['-', '_'], " ")))
            })
            .map(|(m, _)| *m)
    }
}

/// Where the camera looks at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Centre of the view in the source, 0..1 on each axis.
    pub center: (f32, f32),
    /// Fraction of the source's width and height the view covers.
    pub size: f32,
    /// Rotation of the camera about its axis, radians.
    pub roll: f32,
}

/// A shot's camera path: a start view and an end view, eased in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraPath {
    pub from: View,
    pub to: View,
}

/// How far a full-strength move travels over a shot. Small on purpose: a preview should read as a
/// camera move, not as a slideshow effect. The source keeps 1.25x the output's pixels, so a view
/// of size >= 0.8 never samples below the source's own resolution.
const ZOOM_SPAN: f32 = 0.16;
const PAN_SPAN: f32 = 0.13;
const PAN_SIZE: f32 = 0.84;
const ORBIT_ROLL: f32 = 0.012;

impl CameraPath {
    /// The path for `camera_move`, varied by `seed` and `shot` so every seed and every shot of a
    /// multi-shot video moves a little differently.
    pub fn new(camera_move: CameraMove, seed: u32, shot: u32) -> CameraPath {
        let mut rng = ChaCha8Rng::seed_from_u64(((seed as u64) << 16) ^ shot as u64);
        // Strength 0.8..1.2 and a small sideways drift, both from the seed.
        let strength: f32 = rng.random_range(0.8..1.2);
        let drift_angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let drift: f32 = rng.random_range(0.008..0.02);
        let (drift_x, drift_y) = (drift * drift_angle.cos(), drift * drift_angle.sin());
        let still = |size: f32, x: f32, y: f32| View {
            center: (x, y),
            size,
            roll: 0.0,
        };
        let zoom = ZOOM_SPAN * strength;
        let pan = PAN_SPAN * strength;
        let (from, to) = match camera_move {
            CameraMove::PushIn => (
                still(1.0, 0.5, 0.5),
                still(1.0 - zoom, 0.5 + drift_x, 0.5 + drift_y),
            ),
            CameraMove::PullOut => (
                still(1.0 - zoom, 0.5 + drift_x, 0.5 + drift_y),
                still(1.0, 0.5, 0.5),
            ),
            CameraMove::PanLeft => (
                still(PAN_SIZE, 0.5 + pan / 2.0, 0.5 + drift_y / 2.0),
                still(PAN_SIZE, 0.5 - pan / 2.0, 0.5 - drift_y / 2.0),
            ),
            CameraMove::PanRight => (
                still(PAN_SIZE, 0.5 - pan / 2.0, 0.5 + drift_y / 2.0),
                still(PAN_SIZE, 0.5 + pan / 2.0, 0.5 - drift_y / 2.0),
            ),
            CameraMove::TiltUp => (
                still(PAN_SIZE, 0.5 + drift_x / 2.0, 0.5 + pan / 2.0),
                still(PAN_SIZE, 0.5 - drift_x / 2.0, 0.5 - pan / 2.0),
            ),
            CameraMove::TiltDown => (
                still(PAN_SIZE, 0.5 + drift_x / 2.0, 0.5 - pan / 2.0),
                still(PAN_SIZE, 0.5 - drift_x / 2.0, 0.5 + pan / 2.0),
            ),
            CameraMove::Orbit => {
                // An arc: travel sideways while easing in and rolling slightly against the travel,
                // which reads as circling the subject. The seed picks the direction.
                let dir = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                let from = View {
                    center: (0.5 - dir * pan / 2.0, 0.5),
                    size: PAN_SIZE,
                    roll: dir * ORBIT_ROLL * strength,
                };
                let to = View {
                    center: (0.5 + dir * pan / 2.0, 0.5 + drift_y),
                    size: PAN_SIZE - zoom / 4.0,
                    roll: -dir * ORBIT_ROLL * strength,
                };
                (from, to)
            }
            CameraMove::Static => (still(1.0, 0.5, 0.5), still(1.0, 0.5, 0.5)),
        };
        CameraPath { from, to }
    }

    /// The view at `t` in 0..=1 of the shot, eased so the camera starts and stops without a jolt.
    pub fn at(&self, t: f32) -> View {
        let e = smoothstep(t.clamp(0.0, 1.0));
        let lerp = |a: f32, b: f32| a + (b - a) * e;
        let size = lerp(self.from.size, self.to.size);
        // Keep the view inside the source: never show past its edges.
        let half = size / 2.0;
        View {
            center: (
                lerp(self.from.center.0, self.to.center.0).clamp(half, 1.0 - half),
                lerp(self.from.center.1, self.to.center.1).clamp(half, 1.0 - half),
            ),
            size,
            roll: lerp(self.from.roll, self.to.roll),
        }
    }
}

/// Zero velocity at both ends, so moves ease in and out.
pub(crate) fn smoothstep(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_name_moves() {
        let cases = [
            (
                "A gentle camera push-in on the scene",
                Some(CameraMove::PushIn),
            ),
            (
                "Camera orbits slowly around the subject",
                Some(CameraMove::Orbit),
            ),
            (
                "the camera pans left across the bay",
                Some(CameraMove::PanLeft),
            ),
            ("Pan right to reveal the city", Some(CameraMove::PanRight)),
            ("slow zoom out from the face", Some(CameraMove::PullOut)),
            ("Tilt up to the sky", Some(CameraMove::TiltUp)),
            ("tilts down to the street", Some(CameraMove::TiltDown)),
            ("static shot, locked-off camera", Some(CameraMove::Static)),
            ("Subject begins rapping confidently", None),
        ];
        for (prompt, want) in cases {
            assert_eq!(CameraMove::from_prompt(prompt), want, "{prompt}");
        }
    }

    #[test]
    fn views_stay_inside_the_source() {
        let moves = [
            CameraMove::PushIn,
            CameraMove::PullOut,
            CameraMove::PanLeft,
            CameraMove::PanRight,
            CameraMove::TiltUp,
            CameraMove::TiltDown,
            CameraMove::Orbit,
            CameraMove::Static,
        ];
        for m in moves {
            for seed in 0..50 {
                let path = CameraPath::new(m, seed, 0);
                for i in 0..=20 {
                    let v = path.at(i as f32 / 20.0);
                    let half = v.size / 2.0;
                    assert!(v.size <= 1.0 && v.size >= 0.79, "{m:?} size {}", v.size);
                    for c in [v.center.0, v.center.1] {
                        assert!(c - half >= -1e-6 && c + half <= 1.0 + 1e-6, "{m:?} {v:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn path_eases_from_start_to_end() {
        let path = CameraPath::new(CameraMove::PanLeft, 7, 0);
        assert_eq!(path.at(0.0), path.from);
        assert_eq!(path.at(1.0).center, path.to.center);
        // Eased: the first tenth covers far less than a tenth of the way.
        let way = path.to.center.0 - path.from.center.0;
        let early = path.at(0.1).center.0 - path.from.center.0;
        assert!(early.abs() < 0.05 * way.abs(), "{early} of {way}");
    }
}
